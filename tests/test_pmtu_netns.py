"""Path MTU through the box with real kernels: a router hop narrower than every
interface (1400 for IPv4, 1280 for IPv6) on the client side and on the server
side, so only ICMP frag-needed / Packet Too Big from the router's kernel tells
a leg that its 1500-byte segments do not fit (RFC 1191, RFC 8201).

    client ─ rc2 ═narrow═ rc1 ─ box ─ rs1 ═narrow═ rs2 ─ server

10 MB each way through one box, sha256 equal, and the PEP's counters say which
leg handled the report: the server leg for what it sends to the server (rs1's
report), the client leg for what it sends to the client (rc1's).  Then the
same across the two-box path of the testbed (client ─ pep-a ─ link ─ pep-b ─
server) with narrow hops in front of pep-a and behind pep-b."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from stackpep.testbed.splitbox import (CLIENT4, CLIENT6, SERVER4, SERVER6, SplitterTopology, env_with_path, pep_toml,
                                       wait_stats_file)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

NARROW = {"v4": 1400, "v6": 1280}


def unexpected_drops(st):
    """ICMP drop counters that must stay 0.  Not icmp_drop_stale_seq: a report
    about a segment that the leg has since resent smaller and had acknowledged
    (the router's reports trail the burst that drew them) is rightly stale."""
    return {k: v for k, v in st.items() if k.startswith("icmp_drop_") and k != "icmp_drop_stale_seq" and v}

SERVER = """
import hashlib, socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
l = socket.socket(fam); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], 8000)); l.listen(4); print("LISTENING", flush=True)
c, _ = l.accept()
f = c.makefile("rb")
n, m = int.from_bytes(f.read(8), "big"), int.from_bytes(f.read(8), "big")
h = hashlib.sha256(); left = n
while left:
    d = f.read(min(left, 1 << 20))
    assert d, "EOF early"
    h.update(d); left -= len(d)
blob = (hashlib.sha256(b"down").digest() * (m // 32 + 1))[:m]
c.sendall(h.digest() + hashlib.sha256(blob).digest() + blob)
c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
"""

CLIENT = """
import hashlib, socket, sys
n = m = int(sys.argv[2])
s = socket.create_connection((sys.argv[1], 8000), timeout=60)
data = (hashlib.sha256(b"up").digest() * (n // 32 + 1))[:n]
s.sendall(n.to_bytes(8, "big") + m.to_bytes(8, "big") + data)
f = s.makefile("rb")
got_up, want_down = f.read(32), f.read(32)
d = hashlib.sha256(); total = 0
while True:
    b = f.read(1 << 20)
    if not b: break
    d.update(b); total += len(b)
print(got_up == hashlib.sha256(data).digest(), d.digest() == want_down, total)
"""


def transfer(client, server, server_addr, nbytes, timeout=120):
    """nbytes up and nbytes down on one connection; True, True, nbytes if both sha256 match."""
    srv = server.popen([sys.executable, "-c", SERVER, server_addr],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline().strip()
        assert line == "LISTENING", (line, srv.stderr.read() if srv.poll() is not None else "")
        res = client.run([sys.executable, "-c", CLIENT, server_addr, str(nbytes)], timeout=timeout, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout.split()
    finally:
        srv.kill()
        srv.wait()


def narrow_hop(net, near, near_if, far, far_if, near_addrs, far_addrs, transit, mtu, tag):
    """near ─ r{tag}1 ═mtu═ r{tag}2 ─ far: two routers whose link between them is
    `mtu`, every other interface 1500.  transit = (v4 /24 prefix, v6 /64 prefix)
    of that narrow link, e.g. ("198.18.8", "fd00:8::").  Returns (r1, r2)."""
    r1 = net.add_host(f"r{tag}1", forwarding=True)
    r2 = net.add_host(f"r{tag}2", forwarding=True)
    v4, v6 = transit
    net.link(near, r1, near_addrs[0], near_addrs[1], a_ifname=near_if, b_ifname="up0")
    net.link(r1, r2, [f"{v4}.1/24", f"{v6}1/64"], [f"{v4}.2/24", f"{v6}2/64"], a_ifname="n0", b_ifname="n0", mtu=mtu)
    net.link(r2, far, far_addrs[0], far_addrs[1], a_ifname="dn0", b_ifname=far_if)
    return r1, r2


class NarrowSplitterTopology(SplitterTopology):
    """client ─ rc2 ═ rc1 ─ box ─ rs1 ═ rs2 ─ server; addresses as SplitterTopology's
    for client and server (the box's configuration is the same)."""

    def __init__(self, narrow: int) -> None:
        super().__init__()
        self.narrow = narrow

    def __enter__(self):
        try:
            net = self.net
            self.client = net.add_host("client")
            self.box = net.add_host("box", forwarding=True)
            self.server = net.add_host("server")
            # client side: box (box1) ─ rc1 ═ rc2 ─ client (r?1 is the router next to the box)
            rc1, rc2 = narrow_hop(net, self.box, "box1", self.client, "eth0",
                                  (["198.18.9.2/24", "fd00:9::2/64"], ["198.18.9.1/24", "fd00:9::1/64"]),
                                  (["198.18.0.1/24", "fd00:1::1/64"], [f"{CLIENT4}/24", f"{CLIENT6}/64"]),
                                  ("198.18.8", "fd00:8::"), self.narrow, "c")
            # server side: box (box2) ─ rs1 ═ rs2 ─ server
            rs1, rs2 = narrow_hop(net, self.box, "box2", self.server, "eth0",
                                  (["198.18.10.1/24", "fd00:10::1/64"], ["198.18.10.2/24", "fd00:10::2/64"]),
                                  (["198.18.1.1/24", "fd00:2::1/64"], [f"{SERVER4}/24", f"{SERVER6}/64"]),
                                  ("198.18.11", "fd00:11::"), self.narrow, "s")
            routes = [
                (self.client, "default", "198.18.0.1", "default", "fd00:1::1"),
                (rc2, "default", "198.18.8.1", "default", "fd00:8::1"),
                (rc1, "198.18.0.0/24", "198.18.8.2", "fd00:1::/64", "fd00:8::2"),
                (rc1, "default", "198.18.9.2", "default", "fd00:9::2"),
                (self.box, "198.18.0.0/24", "198.18.9.1", "fd00:1::/64", "fd00:9::1"),
                (self.box, "198.18.1.0/24", "198.18.10.2", "fd00:2::/64", "fd00:10::2"),
                (rs1, "198.18.1.0/24", "198.18.11.2", "fd00:2::/64", "fd00:11::2"),
                (rs1, "default", "198.18.10.1", "default", "fd00:10::1"),
                (rs2, "default", "198.18.11.1", "default", "fd00:11::1"),
                (self.server, "default", "198.18.1.1", "default", "fd00:2::1"),
            ]
            for host, p4, gw4, p6, gw6 in routes:
                host.run(["ip", "route", "add", p4, "via", gw4])
                host.run(["ip", "-6", "route", "add", p6, "via", gw6])
            for a in (SERVER4, SERVER6):
                self.client.run(["ping", "-c", "1", "-W", "2", a], check=False)
        except BaseException:
            self.close()
            raise
        return self


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_10MB_each_way_through_narrow_hops_on_both_sides_of_one_box(family):
    narrow = NARROW[family]
    server_addr = SERVER4 if family == "v4" else SERVER6
    with NarrowSplitterTopology(narrow) as topo:
        topo.start_pep(pep_toml(handshake_timeout=5.0))
        up_ok, down_ok, total = transfer(topo.client, topo.server, server_addr, 10_000_000)
        assert (up_ok, down_ok, total) == ("True", "True", "10000000")
        # (the file is written every 0.5 s: wait for one written after both reports)
        st = topo.wait_stats(lambda s: s["connections_opened"] == 1 and s["icmp_ptb_server_leg"] >= 1
                             and s["icmp_ptb_client_leg"] >= 1)
        # One connection, one report per leg: 1500 -> the narrow MTU, after which
        # every segment fits (later reports about segments already in flight say
        # the same MTU: no change).
        assert (st["icmp_ptb_server_leg"], st["icmp_ptb_client_leg"]) == (1, 1), st
        assert unexpected_drops(st) == {}, st
        ports = st["ports"]
        assert ports["box1"]["rx_icmp_errors"] >= 1 and ports["box2"]["rx_icmp_errors"] >= 1
        assert st["icmp_errors_in"] == ports["box1"]["rx_icmp_errors"] + ports["box2"]["rx_icmp_errors"]
        # The kernel also forwarded each report to the endpoint whose address the
        # leg borrowed; that endpoint's TCP found the sequence number out of its
        # window and ignored it (RFC 5927 §4.1).
        out = topo.client.run(["nstat", "-asz", "TcpExtOutOfWindowIcmps"]).stdout
        assert int(out.split("TcpExtOutOfWindowIcmps")[1].split()[0]) >= 1, out
        rc = topo.stop_pep(signal.SIGTERM)
        assert rc == 0, topo.pep_log.read_text()


def _start_pep(host, cfg_text, workdir, name):
    from stackpep.testbed.topology import python_env

    cfg = workdir / f"{name}.toml"
    cfg.write_text(cfg_text)
    stats = workdir / f"{name}-stats.json"
    log = open(workdir / f"{name}.log", "w")
    p = host.popen([sys.executable, "-m", "stackpep", "run", "-c", str(cfg), "--stats-file", str(stats),
                    "--stats-interval", "0.3"], stdout=subprocess.PIPE, stderr=log, text=True, env=python_env(),
                   cwd=str(workdir))
    line = p.stdout.readline().strip()
    assert line == "READY", (line, (workdir / f"{name}.log").read_text())
    return p, stats




@pytest.mark.parametrize("family", ["v4", "v6"])
def test_two_box_geo_path_with_narrow_hops_in_front_and_behind(family):
    from stackpep.testbed.emulator import DirectionParams
    from stackpep.testbed.scenarios import StackpepPep
    from stackpep.testbed.topology import CLIENT4 as GC4, CLIENT6 as GC6, SERVER4 as GS4, SERVER6 as GS6
    from stackpep.testbed.topology import LinkSpec, Topology

    narrow = NARROW[family]
    with Topology() as topo:
        net = topo.net
        # Replace the two LAN links by narrow router hops (the testbed's addresses
        # for client, server and the boxes' gateways stay):
        #   client ─ ra2 ═ ra1 ─ pep-a ─ link ─ pep-b ─ rb1 ═ rb2 ─ server
        topo.pep_a.run("ip link del lan0")
        topo.pep_b.run("ip link del lan0")
        ra1, ra2 = narrow_hop(net, topo.pep_a, "lan0", topo.client, "cl0",
                              (["198.18.4.1/24", "fd00:5e:4::1/64"], ["198.18.4.2/24", "fd00:5e:4::2/64"]),
                              (["198.18.1.1/24", "fd00:5e:1::1/64"], [f"{GC4}/24", f"{GC6}/64"]),
                              ("198.18.5", "fd00:5e:5::"), narrow, "a")
        rb1, rb2 = narrow_hop(net, topo.pep_b, "lan0", topo.server, "sv0",
                              (["198.18.6.1/24", "fd00:5e:6::1/64"], ["198.18.6.2/24", "fd00:5e:6::2/64"]),
                              (["198.18.3.1/24", "fd00:5e:3::1/64"], [f"{GS4}/24", f"{GS6}/64"]),
                              ("198.18.7", "fd00:5e:7::"), narrow, "b")
        for host, p4, gw4, p6, gw6 in [
            (topo.pep_a, "198.18.1.0/24", "198.18.4.2", "fd00:5e:1::/64", "fd00:5e:4::2"),
            (ra1, "198.18.1.0/24", "198.18.5.2", "fd00:5e:1::/64", "fd00:5e:5::2"),
            (ra1, "default", "198.18.4.1", "default", "fd00:5e:4::1"),
            (ra2, "default", "198.18.5.1", "default", "fd00:5e:5::1"),
            (topo.pep_b, "198.18.3.0/24", "198.18.6.2", "fd00:5e:3::/64", "fd00:5e:6::2"),
            (rb1, "198.18.3.0/24", "198.18.7.2", "fd00:5e:3::/64", "fd00:5e:7::2"),
            (rb1, "default", "198.18.6.1", "default", "fd00:5e:6::1"),
            (rb2, "default", "198.18.7.1", "default", "fd00:5e:7::1"),
        ]:
            host.run(["ip", "route", "add", p4, "via", gw4])
            host.run(["ip", "-6", "route", "add", p6, "via", gw6])
        topo.set_congestion(None)  # the end hosts' default routes (their old links are gone)
        delay = DirectionParams.parse("delay=5ms")
        topo.start_link(LinkSpec(delay, delay))
        topo.warm_up()
        pep = StackpepPep(boxes=2)
        procs = []
        try:
            pa, stats_a = _start_pep(topo.pep_a, pep._config_text("pep-a", topo.link_spec), topo.workdir, "pep-a")
            procs.append(pa)
            pb, stats_b = _start_pep(topo.pep_b, pep._config_text("pep-b", topo.link_spec), topo.workdir, "pep-b")
            procs.append(pb)
            up_ok, down_ok, total = transfer(topo.client, topo.server, GS4 if family == "v4" else GS6, 3_000_000)
            assert (up_ok, down_ok, total) == ("True", "True", "3000000")
            # pep-a's client leg sends the download towards the client through ra1;
            # pep-b's server leg sends the upload towards the server through rb1.
            sa = wait_stats_file(stats_a, lambda s: s["icmp_ptb_client_leg"] >= 1)
            sb = wait_stats_file(stats_b, lambda s: s["icmp_ptb_server_leg"] >= 1)
            assert (sa["icmp_ptb_client_leg"], sa["icmp_ptb_server_leg"]) == (1, 0), sa
            assert (sb["icmp_ptb_client_leg"], sb["icmp_ptb_server_leg"]) == (0, 1), sb
            for st in (sa, sb):
                assert unexpected_drops(st) == {}, st
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs] == [0, 0]
