"""The one-box transparent splitter end to end: real kernels on client and
server, `python -m stackpep run -c FILE` in the box namespace.

One topology and one splitter process serve the module's traffic tests; the
rule-lifecycle tests start their own splitter processes.  (The 200 MB each way
take a few seconds here, so they are in the default suite.)"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import dpkt
import pytest

from stackpep.testbed.splitbox import (CLIENT4, CLIENT6, ROOT, SERVER4, SERVER6, SplitterTopology, env_with_path,
                                  pep_toml)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

ADDRS = {"v4": (CLIENT4, SERVER4), "v6": (CLIENT6, SERVER6)}


@pytest.fixture(scope="module")
def topo():
    with SplitterTopology() as t:
        t.start_nginx(80)
        (t.tmp / "nginx" / "html" / "blob").write_bytes(os.urandom(1_000_000))
        t.start_pep(pep_toml(handshake_timeout=2.0))
        yield t
        rc = t.stop_pep(signal.SIGTERM)
        assert rc == 0, t.pep_log.read_text()


def py(host, code, timeout=120, **kw):
    res = subprocess.run(host.argv([sys.executable, "-c", textwrap.dedent(code)]), capture_output=True,
                         timeout=timeout, text=True, **kw)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def start_py(host, code):
    p = host.popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    assert line == "LISTENING", (line, p.stderr.read() if p.poll() is not None else "")
    return p


def wait_listening(host, port, timeout=30.0):
    """Until a socket of host's listens on TCP `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "LISTEN" in host.run(["ss", "-ltnH", f"sport = :{port}"], check=False).stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def capture(host, ifname, path):
    p = host.popen(["tcpdump", "-i", ifname, "-nn", "-U", "-w", str(path), "tcp"], stderr=subprocess.PIPE)
    # tcpdump says "listening on" once the capture runs
    line = p.stderr.readline()
    assert b"listening" in line, line
    return p


def pcap_pairs(path, syns=None):
    """Address pairs of the TCP packets in a pcap; SYN sequence numbers go into syns."""
    pairs = set()
    with open(path, "rb") as f:
        for ts, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP):
                fam = socket.AF_INET
            elif isinstance(ip, dpkt.ip6.IP6):
                fam = socket.AF_INET6
            else:
                continue
            pairs.add((socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst)))
            t = ip.data
            if syns is not None and isinstance(t, dpkt.tcp.TCP) and t.flags & dpkt.tcp.TH_SYN:
                syns.append((bool(t.flags & dpkt.tcp.TH_ACK), t.seq))
    return pairs


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_curl_through_splitter_keeps_real_addresses(topo, family):
    client, server = ADDRS[family]
    before = topo.stats()["connections_opened"]
    cpcap, spcap = topo.tmp / f"c-{family}.pcap", topo.tmp / f"s-{family}.pcap"
    cap_c = capture(topo.client, "eth0", cpcap)
    cap_s = capture(topo.server, "eth0", spcap)
    url = f"http://{server}/blob" if family == "v4" else f"http://[{server}]/blob"
    res = topo.client.run(["curl", "-sS", "--max-time", "20", "-o", str(topo.tmp / "got"), "-w",
                           "%{http_code} %{remote_ip} %{local_ip} %{size_download}", url])
    time.sleep(0.3)
    for p in (cap_c, cap_s):
        p.send_signal(signal.SIGINT)
        p.wait(timeout=10)
    code, remote_ip, local_ip, size = res.stdout.split()
    assert (code, remote_ip, local_ip, size) == ("200", server, client, "1000000")
    assert (topo.tmp / "got").read_bytes() == (topo.tmp / "nginx" / "html" / "blob").read_bytes()
    # The server saw the client's real address.
    log_lines = (topo.tmp / "nginx" / "logs" / "access.log").read_text().splitlines()
    assert log_lines[-1].split()[0] == client and log_lines[-1].split()[3] == "200"
    # On both wires: only the client's and the server's addresses.
    csyn, ssyn = [], []
    assert pcap_pairs(cpcap, csyn) == {(client, server), (server, client)}
    assert pcap_pairs(spcap, ssyn) == {(client, server), (server, client)}
    # Two connections, not one forwarded: each side's SYN and SYN-ACK carry other
    # initial sequence numbers than the far side's (RFC 9293 §3.4.1).  (A SYN or SYN-ACK
    # retransmitted on a loaded machine repeats its sequence number: one each way.)
    assert len(set(csyn)) == len(set(ssyn)) == 2 and {a for a, _ in csyn} == {a for a, _ in ssyn} == {False, True}
    assert not set(csyn) & set(ssyn)
    # ... and the connection really went through the splitter.
    st = topo.wait_stats(lambda s: s["connections_opened"] > before)
    assert st["connections_opened"] == before + 1


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_iperf3_through_splitter(topo, family):
    client, server = ADDRS[family]
    before = topo.stats()["connections_opened"]
    srv = topo.server.popen(["iperf3", "-s", "-1", "-J", "-B", server], stdout=subprocess.PIPE, text=True)
    wait_listening(topo.server, 5201)  # (a client before it would be refused)
    res = topo.client.run(["iperf3", "-c", server, "-t", "2", "-J"], timeout=60)
    cj = json.loads(res.stdout)
    sj = json.loads(srv.communicate(timeout=30)[0])
    assert cj["start"]["connected"][0]["remote_host"] == server
    assert cj["start"]["connected"][0]["local_host"] == client
    assert sj["start"]["connected"][0]["remote_host"] == client
    received = cj["end"]["sum_received"]["bytes"]
    assert received > 1_000_000
    st = topo.wait_stats(lambda s: s["connections_opened"] >= before + 2)
    assert st["connections_opened"] >= before + 2  # control and data connections were split


TRANSFER_SERVER = """
import socket, hashlib, sys, threading
l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("::", PORT)); l.listen(512); print("LISTENING", flush=True)
def handle(c):
    # protocol: 8-byte length N to receive, 8-byte length M to send; we read N
    # bytes, answer sha256 + M pseudo-random bytes (+ their sha256 first)
    f = c.makefile("rb")
    n = int.from_bytes(f.read(8), "big"); m = int.from_bytes(f.read(8), "big")
    h = hashlib.sha256(); left = n
    while left:
        d = f.read(min(left, 1 << 20))
        if not d: break
        h.update(d); left -= len(d)
    blob = (hashlib.sha256(b"seed").digest() * 32768)[:1 << 20]
    out = hashlib.sha256(); sent = 0; chunks = []
    while sent < m:
        k = min(m - sent, len(blob)); out.update(blob[:k]); sent += k
    c.sendall(h.digest() + out.digest())
    sent = 0
    while sent < m:
        k = min(m - sent, len(blob)); c.sendall(blob[:k]); sent += k
    c.shutdown(socket.SHUT_WR)
    c.recv(1)
    c.close()
while True:
    c, a = l.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

TRANSFER_CLIENT = """
import socket, hashlib, os, sys, threading
N, M = NBYTES, MBYTES
def one(i, errors):
    try:
        s = socket.create_connection((SERVER, PORT), timeout=60)
        data = (hashlib.sha256(b"%d" % i).digest() * 32768)[:1 << 20]
        s.sendall(N.to_bytes(8, "big") + M.to_bytes(8, "big"))
        h = hashlib.sha256(); sent = 0
        while sent < N:
            k = min(N - sent, len(data)); s.sendall(data[:k]); h.update(data[:k]); sent += k
        f = s.makefile("rb")
        got_up = f.read(32); want_down = f.read(32)
        d = hashlib.sha256(); total = 0
        while True:
            b = f.read(1 << 20)
            if not b: break
            d.update(b); total += len(b)
        s.close()
        if got_up != h.digest(): errors.append((i, "upload sha mismatch"))
        if d.digest() != want_down or total != M: errors.append((i, "download", total))
    except Exception as exc:
        errors.append((i, repr(exc)))
errors = []
ts = [threading.Thread(target=one, args=(i, errors)) for i in range(CONNS)]
for t in ts: t.start()
for t in ts: t.join()
print(repr(errors))
"""


@pytest.fixture(scope="module")
def transfer_server(topo):
    p = start_py(topo.server, TRANSFER_SERVER.replace("PORT", "8000"))
    yield 8000
    p.kill()


def run_transfer(topo, server, n, m, conns, timeout=240):
    code = TRANSFER_CLIENT.replace("SERVER", repr(server)).replace("PORT", "8000") \
        .replace("CONNS", str(conns)).replace("NBYTES", str(n)).replace("MBYTES", str(m))
    return py(topo.client, code, timeout=timeout).strip()


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_200MB_each_way_sha256(topo, transfer_server, family):
    # Upload and download on one connection, each checked by sha256 at the far end.
    before = topo.stats()["connections_opened"]
    assert run_transfer(topo, ADDRS[family][1], 200_000_000, 200_000_000, 1, timeout=280) == "[]"
    st = topo.stats()
    assert st["connections_opened"] == before + 1
    # both legs' runs of segments left as GSO super-frames (capture.gso, the default)
    assert st["ports"]["box1"]["tx_gso_frames"] > 0 and st["ports"]["box2"]["tx_gso_frames"] > 0


def test_100_concurrent_connections(topo, transfer_server):
    before = topo.stats()["connections_opened"]
    assert run_transfer(topo, SERVER4, 100_000, 100_000, 100) == "[]"
    st = topo.wait_stats(lambda s: s["connections_opened"] >= before + 100)
    assert st["connections_opened"] == before + 100
    assert st["drop_table_full"] == 0


def test_half_close_each_way(topo):
    # Client sends, half-closes; server reads to EOF, then answers and closes.
    srv = start_py(topo.server, """
        import socket
        l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("::", 8001)); l.listen(); print("LISTENING", flush=True)
        c, a = l.accept(); got = b""
        while True:
            d = c.recv(65536)
            if not d: break
            got += d
        # our side is still open after the client's FIN
        c.sendall(b"you sent %d bytes" % len(got) + b"." * 300000)
        c.close()
        print(a[0], len(got), flush=True)
    """)
    out = py(topo.client, f"""
        import socket
        s = socket.create_connection(({SERVER4!r}, 8001), timeout=20)
        s.sendall(b"x" * 123456); s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
        print(got[:22].decode(), len(got))
    """)
    assert out.split() == ["you", "sent", "123456", "bytes.", str(len("you sent 123456 bytes") + 300000)]
    assert srv.communicate(timeout=10)[0].split() == ["::ffff:" + CLIENT4, "123456"]


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_refused_port_gives_client_rst(topo, family):
    before = topo.stats()["ended_refused"]
    out = py(topo.client, f"""
        import socket
        try:
            socket.create_connection(({ADDRS[family][1]!r}, 8050), timeout=10)
            print("connected")
        except ConnectionRefusedError:  # the box's RST (a lost one would be a timeout)
            print("refused")
    """)
    assert out.split() == ["refused"]
    st = topo.wait_stats(lambda s: s["ended_refused"] > before)
    assert st["ended_refused"] == before + 1


def test_silent_server_client_times_out_box_stays_responsive(topo):
    topo.server.run(["nft", "add", "table", "inet", "silent"])
    topo.server.run(["nft", "add", "chain", "inet", "silent", "in", "{ type filter hook input priority 0; }"])
    topo.server.run(["nft", "add", "rule", "inet", "silent", "in", "tcp dport 8060 drop"])
    before = topo.stats()
    out = py(topo.client, f"""
        import socket
        try:
            socket.create_connection(({SERVER4!r}, 8060), timeout=1.5)
            print("connected")
        except socket.timeout:
            print("timeout")
    """)
    assert out.strip() == "timeout"
    # The box gives up after its handshake timeout (2 s here) and frees the entry ...
    st = topo.wait_stats(lambda s: s["ended_handshake_timeout"] > before["ended_handshake_timeout"]
                         and s["connections_active"] == 0, timeout=15)
    assert st["connections_active"] == 0
    # ... and keeps serving others meanwhile and after.
    res = topo.client.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://{SERVER4}/blob"])
    assert res.stdout == "200"
    topo.server.run(["nft", "delete", "table", "inet", "silent"])


def test_not_intercepted_traffic_passes_through_kernel(topo):
    before = topo.stats()
    topo.client.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER4])
    topo.client.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", SERVER6])
    srv = start_py(topo.server, """
        import socket
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::", 9999))
        t = socket.socket(socket.AF_INET6); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("::", 9000)); t.listen(); print("LISTENING", flush=True)
        d, a = u.recvfrom(100); u.sendto(d.upper(), a)
        c, a2 = t.accept(); c.sendall(c.recv(100).upper()); c.close()
        print(a[0], a2[0], flush=True)
    """)
    out = py(topo.client, f"""
        import socket
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.settimeout(5)
        u.sendto(b"udp", ({SERVER6!r}, 9999)); print(u.recv(10).decode())
        t = socket.create_connection(({SERVER4!r}, 9000), timeout=5); t.sendall(b"tcp"); print(t.recv(10).decode())
    """)
    assert out.split() == ["UDP", "TCP"]
    assert srv.communicate(timeout=10)[0].split() == [CLIENT6, "::ffff:" + CLIENT4]
    st = topo.wait_stats(lambda s: s["drop_not_intercepted"] > before["drop_not_intercepted"])
    assert st["connections_opened"] == before["connections_opened"]  # port 9000 is not split


# ------------------------------------------------------------------ rule lifecycle
@pytest.fixture
def bare():
    with SplitterTopology() as t:
        yield t


def _has_rules(t):
    return "table inet stackpep" in t.nft_ruleset()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_rules_removed_on_exit_and_sigterm(bare, sig):
    bare.start_pep(pep_toml())
    assert _has_rules(bare)
    rc = bare.stop_pep(sig)
    assert rc == 0, bare.pep_log.read_text()
    assert not _has_rules(bare)
    log = bare.pep_log.read_text()
    # the log says which backend and why, and that the rules went
    assert "netfilter rules installed with nft (auto: nft works" in log
    assert f"received {sig.name}, shutting down" in log
    assert "netfilter rules removed" in log


def test_rules_removed_after_duration_exit(bare):
    cfg = bare.tmp / "d.toml"
    cfg.write_text(pep_toml())
    res = bare.box.run([sys.executable, "-m", "stackpep", "run", "-c", str(cfg), "--duration", "0.5"],
                       env=env_with_path(), cwd=str(ROOT))
    assert res.stdout.strip() == "READY"
    assert not _has_rules(bare)


def test_kill_9_nft_table_goes_with_the_process(bare):
    # the table is owned by the process (`flags owner`): the kernel removes it
    # when the process dies (tests/test_workers_netns.py: traffic flows at once)
    bare.start_pep(pep_toml())
    assert "flags owner" in bare.nft_ruleset()
    assert "the table is owned by this process" in bare.pep_log.read_text()
    # no other process may remove it while the box runs: cleanup leaves it alone
    res = bare.box.run([sys.executable, "-m", "stackpep", "cleanup"], env=env_with_path(), cwd=str(ROOT))
    assert "nft: removed 0 stackpep object(s)" in res.stdout and _has_rules(bare)
    bare.pep.kill()
    bare.pep.wait()
    assert not _has_rules(bare)
    assert bare.client.run(["ping", "-c", "1", "-W", "2", SERVER4], check=False).returncode == 0


def test_kill_9_iptables_legacy_then_cleanup(bare):
    bare.start_pep(pep_toml(extra='[rules]\nbackend = "iptables-legacy"\n'))
    bare.pep.kill()
    bare.pep.wait()
    chains = lambda: bare.box.run(["iptables-legacy", "-w", "-t", "raw", "-S"]).stdout  # noqa: E731
    assert "STACKPEP-PRE" in chains()  # a crash leaves them (nothing ties chains to a process) ...
    res = bare.box.run([sys.executable, "-m", "stackpep", "cleanup"], env=env_with_path(), cwd=str(ROOT))
    assert "iptables-legacy: removed" in res.stdout
    assert "STACKPEP" not in chains()  # ... cleanup takes them out
    # and traffic flows through the kernel again
    assert bare.client.run(["ping", "-c", "1", "-W", "2", SERVER4], check=False).returncode == 0


def test_missing_interface_starts_nothing(bare):
    cfg = bare.tmp / "bad.toml"
    cfg.write_text(pep_toml().replace('client = ["box1"]', 'client = ["nosuch0"]'))
    res = bare.box.run([sys.executable, "-m", "stackpep", "run", "-c", str(cfg)], env=env_with_path(),
                       cwd=str(ROOT), check=False)
    assert res.returncode == 2
    assert f"{cfg}:4: interfaces.client[0]: no interface 'nosuch0' on this host" in res.stderr
    assert not _has_rules(bare)


def test_iptables_legacy_backend_end_to_end(bare):
    bare.start_nginx(80)
    (bare.tmp / "nginx" / "html" / "x").write_bytes(b"y" * 100_000)
    bare.start_pep(pep_toml(extra='[rules]\nbackend = "iptables-legacy"\n'))
    assert "table inet stackpep" not in bare.nft_ruleset()
    for url in (f"http://{SERVER4}/x", f"http://[{SERVER6}]/x"):
        res = bare.client.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", url])
        assert res.stdout == "100000"
    st = bare.wait_stats(lambda s: s["connections_opened"] == 2)
    assert st["connections_opened"] == 2
    assert bare.stop_pep(signal.SIGTERM) == 0
    assert "iptables-legacy (asked for in the configuration)" in bare.pep_log.read_text()
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        assert "STACKPEP" not in bare.box.run([tool, "-w", "-t", "raw", "-S"]).stdout


def test_stopping_the_box_resets_open_connections(bare):
    # A connection cut by the box stopping must fail at once, not hang: the
    # kernel cannot carry it on (the two legs' sequence numbers differ).
    bare.start_pep(pep_toml())
    srv = start_py(bare.server, """
        import socket, time
        l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("::", 8002)); l.listen(); print("LISTENING", flush=True)
        c, a = l.accept()
        try:
            while True:
                c.sendall(b"z" * 1000); time.sleep(0.05)
        except OSError as exc:
            print(type(exc).__name__, flush=True)
    """)
    cli = start_py(bare.client, f"""
        import socket, time
        s = socket.create_connection(({SERVER4!r}, 8002), timeout=10)
        s.recv(100); print("LISTENING", flush=True)
        try:
            while s.recv(65536):
                pass
            print("eof", flush=True)
        except OSError as exc:  # a hang would end as a timeout after 10 s
            print(type(exc).__name__, flush=True)
    """)
    time.sleep(0.3)
    assert bare.stop_pep(signal.SIGTERM) == 0
    verdict = cli.communicate(timeout=10)[0].split()
    assert verdict == ["ConnectionResetError"]
    assert srv.communicate(timeout=10)[0].strip() in ("ConnectionResetError", "BrokenPipeError")
    st = json.loads(bare.stats_file.read_text())
    assert st["ended_shutdown"] == 1


def test_the_box_own_address_is_not_intercepted(topo):
    # 198.18.1.1 (the box) is inside the intercepted prefix and port 8003 is
    # intercepted, yet a connection to it is the box kernel's business alone.
    before = topo.stats()
    srv = start_py(topo.box, """
        import socket
        l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("198.18.1.1", 8003)); l.listen(); print("LISTENING", flush=True)
        c, a = l.accept(); c.sendall(b"box here " + a[0].encode()); c.close()
    """)
    out = py(topo.client, """
        import socket
        s = socket.create_connection(("198.18.1.1", 8003), timeout=5); print(s.recv(100).decode())
    """)
    assert out.strip() == f"box here {CLIENT4}"
    srv.wait(timeout=10)
    # (the box counts what it reads from its ring, maybe after this file was written)
    st = topo.wait_stats(lambda s: s["drop_not_intercepted"] > before["drop_not_intercepted"])
    assert st["connections_opened"] == before["connections_opened"]
