"""Issue 3 test 3: the engine behind a TUN device talks to real Linux TCP.

Topology (two namespaces):

    [engine process] = TUN "sptun" =  eng (forwards)  = veth =  kern (kernel sockets)
     198.18.1.2                      198.18.1.1 | 198.18.0.1        198.18.0.2
     fd00:0:0:2::2                   fd00:0:0:2::1 | fd00:0:0:1::1  fd00:0:0:1::2

The engine runs in ``python -m stackpep.tcp.tun`` inside ``eng``; a small
Python program with ordinary sockets runs in ``kern``.  Each transfer moves
deterministic pseudo-random data both ways at once and compares SHA-256 sums
computed independently at each end.  Loss is injected on the forwarding path
with ``iptables -m statistic --mode random``.  What the kernel negotiated is
read from ``ss -tin`` on the kernel's own socket and from a tshark decode of a
capture of the engine's segments and both SYNs.  The kernel as sender under
loss forces our receiver to generate SACK blocks: tshark shows them, and the
kernel's TCPSackRecovery counter shows it used them.  Default size: 50 MB each
way (STACKPEP_INTEROP_MB overrides); the whole file takes about a minute here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackpep.testbed.topology import python_env

from stackpep.tcp.tun import bulk_data
from stackpep.testbed.netns import Network


pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("ip", "iptables", "ip6tables", "tcpdump", "tshark",
                                                          "ss", "nstat", "ethtool")),
                       reason="needs iproute2, iptables, tcpdump, tshark, ethtool"),
]

ENG4, KERN4 = "198.18.1.2", "198.18.0.2"
ENG6, KERN6 = "fd00:0:0:2::2", "fd00:0:0:1::2"
ENG_PORT, KERN_PORT = 5001, 5000
MB = 1_000_000

# The kernel side: one connection, sends N bytes of bulk_data(N, seed) while
# reading everything the engine sends, then shuts down its write side and waits
# for the engine's FIN.  `ss -tin` on its own socket right after the handshake
# and after the transfer; `nstat -az` (absolute counters of this fresh namespace).
KERNEL_PEER = r"""
import hashlib, json, random, socket, subprocess, sys, threading, time
mode, fam, addr, port, nbytes, seed, lport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
af = socket.AF_INET6 if fam == 6 else socket.AF_INET
if mode == "listen":
    ls = socket.socket(af, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port)); ls.listen(1)
    print(json.dumps({"listening": True}), flush=True)
    ls.settimeout(30)
    s, peer = ls.accept()
else:
    s = socket.socket(af, socket.SOCK_STREAM)
    s.bind(("::" if fam == 6 else "0.0.0.0", lport))
    s.settimeout(30)
    s.connect((addr, port))
s.settimeout(120)
local, remote = s.getsockname(), s.getpeername()
def ss():
    flt = f"sport = :{local[1]} and dport = :{remote[1]}"
    return subprocess.run(["ss", "-tinH", flt], capture_output=True, text=True).stdout
ss_start = ss()
data = random.Random(seed).randbytes(nbytes)
sent_hash = hashlib.sha256(data).hexdigest()
def sender():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=sender); t.start()
h = hashlib.sha256(); got = 0
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    h.update(b); got += len(b)
t.join()
ss_end = ss()
nst = subprocess.run(["nstat", "-az"], capture_output=True, text=True).stdout
counters = {}
for line in nst.splitlines():
    parts = line.split()
    if len(parts) >= 2 and parts[0].startswith(("Tcp", "TcpExt")) and parts[1].isdigit():
        counters[parts[0]] = int(parts[1])
s.close()
print(json.dumps({"sent": nbytes, "sent_sha256": sent_hash, "received": got, "received_sha256": h.hexdigest(),
                  "ss_start": ss_start, "ss_end": ss_end, "nstat": counters}), flush=True)
"""


class Testbed:
    __test__ = False  # not a test class

    def __init__(self, net: Network):
        self.net = net
        self.eng = net.add_host("eng", forwarding=True)
        self.kern = net.add_host("kern")
        self.eng_if, self.kern_if = net.link(self.eng, self.kern, ["198.18.0.1/24", "fd00:0:0:1::1/64"],
                                             [f"{KERN4}/24", f"{KERN6}/64"])
        for host, ifname in ((self.eng, self.eng_if), (self.kern, self.kern_if)):
            # Whole 1500-byte packets on the wire, so the capture shows what crossed.
            host.run(["ethtool", "-K", ifname, "tso", "off", "gso", "off", "gro", "off"], check=False)
        e = self.eng
        e.run("ip tuntap add dev sptun mode tun")
        e.run("ip link set sptun up mtu 1500")
        e.run("ip addr add 198.18.1.1/24 dev sptun")
        e.run("ip -6 addr add fd00:0:0:2::1/64 dev sptun nodad")
        self.kern.run("ip route add 198.18.1.0/24 via 198.18.0.1")
        self.kern.run("ip -6 route add fd00:0:0:2::/64 via fd00:0:0:1::1")

    def drop(self, direction: str, probability: float) -> None:
        """Random loss on the forwarding path: 'to_engine' or 'from_engine'."""
        ins, outs = (self.eng_if, "sptun") if direction == "to_engine" else ("sptun", self.eng_if)
        for tool in ("iptables", "ip6tables"):
            self.eng.run([tool, "-A", "FORWARD", "-i", ins, "-o", outs, "-p", "tcp", "-m", "statistic",
                          "--mode", "random", "--probability", str(probability), "-j", "DROP"])

    def dropped(self) -> int:
        total = 0
        for tool in ("iptables", "ip6tables"):
            out = self.eng.run([tool, "-nvxL", "FORWARD"]).stdout
            for line in out.splitlines():
                parts = line.split()
                if "DROP" in parts and parts[0].isdigit():
                    total += int(parts[0])
        return total


def _engine_cmd(fam: int, mode: str, nbytes: int, seed: int, via_trio: bool = False, config=()):
    local = ENG4 if fam == 4 else ENG6
    cmd = [sys.executable, "-m", "stackpep.tcp.tun", "--dev", "sptun", "--local", local,
           "--port", str(ENG_PORT), "--send", str(nbytes), "--seed", str(seed), "--timeout", "150"]
    for c in config:
        cmd += ["--config", c]
    if via_trio:
        cmd.append("--trio")
    if mode == "listen":
        cmd.append("--listen")
    else:
        cmd += ["--connect", f"[{KERN6}]:{KERN_PORT}" if fam == 6 else f"{KERN4}:{KERN_PORT}"]
    return cmd


def _env():
    # the engine process imports stackpep exactly as this test process does:
    # the installed package (CI) or whatever PYTHONPATH points at (development)
    return python_env()


def _read_json(proc: subprocess.Popen, what: str, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what} timed out\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{") and "listening" not in line]
    assert proc.returncode == 0 and lines, f"{what} failed ({proc.returncode})\nstdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    return json.loads(lines[-1])


def run_transfer(tb: Testbed, fam: int, engine_opens: bool, eng_bytes: int, kern_bytes: int,
                 capture: Path | None = None, via_trio: bool = False, config=(),
                 capture_filter: str | None = None) -> tuple[dict, dict]:
    """One connection, data both ways at once; returns (engine result, kernel result)."""
    eng_seed, kern_seed = 11, 22
    kern_addr = KERN6 if fam == 6 else KERN4
    eng_addr = ENG6 if fam == 6 else ENG4
    cap = None
    if capture is not None:
        # The engine's segments (mostly ACKs) and both SYNs, headers only.
        cap = tb.kern.popen(["tcpdump", "-Z", "root", "--immediate-mode", "-i", tb.kern_if, "-s", "128", "-U",
                             "-w", str(capture),
                             capture_filter or f"tcp and (src host {eng_addr} or (ip and tcp[13] & 2 != 0)"
                             " or (ip6 and ip6[53] & 2 != 0))"], stderr=subprocess.PIPE)
        # tcpdump says "listening on" once it captures (the SYNs must be in the file)
        line = b""
        while b"listening" not in line:
            line = cap.stderr.readline()
            assert line, "tcpdump ended before it captured"
    env = _env()
    if engine_opens:
        kp = tb.kern.popen([sys.executable, "-c", KERNEL_PEER, "listen", str(fam), kern_addr, str(KERN_PORT),
                            str(kern_bytes), str(kern_seed), "0"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        assert "listening" in kp.stdout.readline()
        ep = tb.eng.popen(_engine_cmd(fam, "connect", eng_bytes, eng_seed, via_trio, config), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
    else:
        ep = tb.eng.popen(_engine_cmd(fam, "listen", eng_bytes, eng_seed, via_trio, config), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)
        assert "listening" in ep.stdout.readline()
        kp = tb.kern.popen([sys.executable, "-c", KERNEL_PEER, "connect", str(fam), eng_addr, str(ENG_PORT),
                            str(kern_bytes), str(kern_seed), "40001"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 170
    while kp.poll() is None and time.monotonic() < deadline:
        if ep.poll() is not None and ep.returncode != 0:
            break  # the engine died: say why, rather than wait for the peer's timeout
        time.sleep(0.05)
    if ep.poll() is not None and ep.returncode != 0:
        _read_json(ep, "engine", 5)
    kres = _read_json(kp, "kernel peer", max(1.0, deadline - time.monotonic()))
    eres = _read_json(ep, "engine", 30)
    if cap is not None:
        time.sleep(1.0)  # let tcpdump drain its ring before it stops
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=10)
    # Byte-exact both ways, checked against sums computed here as well.
    assert eres["sent"] == eng_bytes and kres["received"] == eng_bytes
    assert kres["received_sha256"] == eres["sent_sha256"] == hashlib.sha256(bulk_data(eng_bytes, eng_seed)).hexdigest()
    assert kres["sent"] == kern_bytes and eres["received"] == kern_bytes
    assert eres["received_sha256"] == kres["sent_sha256"]
    return eres, kres


def _ss_info(ss_text: str) -> dict:
    """What `ss -ti` says of the kernel's socket.  (This kernel/iproute2 pair does
    not print the ts/sack flags, so TS shows as the 12 bytes it takes off the MSS.)"""
    toks = ss_text.split()
    fields = dict(t.split(":", 1) for t in toks if ":" in t and t.split(":", 1)[0].isalpha())
    ws = fields.get("wscale")
    return {"wscale": tuple(int(x) for x in ws.split(",")) if ws else None,
            "mss": int(fields["mss"]) if "mss" in fields else None}


def _check_negotiated(capture: Path, kres: dict, fam: int, eng_addr: str, kern_addr: str) -> None:
    """WS/TS/SACK-permitted in both SYNs (tshark) and in use on the kernel socket (ss)."""
    syns = _tshark(capture, ["ip.src", "ipv6.src", "tcp.options.wscale.shift", "tcp.options.sack_perm",
                             "tcp.options.timestamp.tsval", "tcp.options.mss_val"], "tcp.flags.syn == 1")
    by_src = {(r[0] or r[1]): r for r in syns}
    assert eng_addr in by_src and kern_addr in by_src, syns
    for src in (eng_addr, kern_addr):
        _, _, shift, sack_perm, tsval, mss = by_src[src]
        assert shift != "" and sack_perm != "" and tsval != "" and mss != "", (src, by_src[src])
    info = _ss_info(kres["ss_start"])
    assert info["wscale"] is not None, kres["ss_start"]
    # the kernel scales our windows by the shift we announced ...
    assert info["wscale"][0] == int(by_src[eng_addr][2])
    # ... and sends full segments of 1460 (1440 for IPv6) minus 12 bytes of timestamps
    assert info["mss"] == (1448 if fam == 4 else 1428), kres["ss_start"]


def _tshark(capture: Path, fields, display_filter: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(capture), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [line.split("\t") for line in res.stdout.splitlines() if line.strip()]


@pytest.fixture
def testbed():
    with Network() as net:
        yield Testbed(net)


SIZE = int(os.environ.get("STACKPEP_INTEROP_MB", "50")) * MB  # each way; ~6-12 s per test here


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("engine_opens", [True, False], ids=["active", "passive"])
def test_bulk_both_ways_with_loss(testbed, tmp_path, fam, engine_opens):
    """Active/passive open, v4/v6, data both ways at once with 1 % random loss
    each way; WS/TS/SACK negotiated as tshark and ss show."""
    testbed.drop("to_engine", 0.01)
    testbed.drop("from_engine", 0.01)
    cap = tmp_path / "eng.pcap"
    eres, kres = run_transfer(testbed, fam, engine_opens, SIZE, SIZE, capture=cap)
    assert testbed.dropped() > 0
    _check_negotiated(cap, kres, fam, ENG6 if fam == 6 else ENG4, KERN6 if fam == 6 else KERN4)
    # Loss both ways: the kernel retransmitted and our receiver SACKed holes.
    assert kres["nstat"].get("TcpRetransSegs", 0) > 0
    sacks = _tshark(cap, ["tcp.options.sack_le"], "tcp.options.sack_le")
    assert len(sacks) > 0
    stats = eres["statistics"]
    # the engine's view of the negotiation matches the kernel's
    assert stats["sack"] and stats["timestamps"]
    assert stats["snd_wscale"] == _ss_info(kres["ss_start"])["wscale"][1]
    assert stats["retransmits"] > 0 and stats["bytes_acked"] == SIZE


@pytest.mark.parametrize("fam", [4, 6])
def test_kernel_sender_drives_our_sack_generation(testbed, tmp_path, fam):
    """The kernel sends under 2 % loss toward us: we must generate SACK blocks
    (RFC 2018) that the kernel uses for SACK-based recovery."""
    testbed.drop("to_engine", 0.02)
    cap = tmp_path / "acks.pcap"
    eres, kres = run_transfer(testbed, fam, False, 0, SIZE, capture=cap)
    sack_pkts = _tshark(cap, ["tcp.options.sack_le", "tcp.options.sack_re", "tcp.options.timestamp.tsval"],
                        "tcp.options.sack_le")
    assert len(sack_pkts) >= 10, f"only {len(sack_pkts)} SACK-bearing ACKs"
    # With timestamps at most 3 blocks fit (RFC 2018 §3).
    assert max(len(p[0].split(",")) for p in sack_pkts) <= 3
    assert all(p[2] for p in sack_pkts)
    _check_negotiated(cap, kres, fam, ENG6 if fam == 6 else ENG4, KERN6 if fam == 6 else KERN4)
    n = kres["nstat"]
    assert n.get("TcpExtTCPSackRecovery", 0) > 0, {k: v for k, v in n.items() if "Sack" in k or "SACK" in k}




@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("engine_opens", [True, False], ids=["active", "passive"])
def test_trio_stream_over_tun(testbed, fam, engine_opens):
    """The same engine behind the TUN device driven through the Trio TcpStream
    (send_all/receive_some/send_eof), 10 MB each way under 1 % loss."""
    testbed.drop("to_engine", 0.01)
    testbed.drop("from_engine", 0.01)
    eres, kres = run_transfer(testbed, fam, engine_opens, 10 * MB, 10 * MB, via_trio=True)
    assert eres["via"] == "trio"
    assert eres["final_state"] in ("TIME-WAIT", "CLOSED")
    assert eres["statistics"]["retransmits"] > 0


@pytest.mark.parametrize("fam", [4, 6])
@pytest.mark.parametrize("kernel_ecn", [1, 0], ids=["kernel-ecn", "kernel-no-ecn"])
def test_ecn_with_kernel(testbed, tmp_path, fam, kernel_ecn):
    """RFC 3168 §6.1.1 against Linux: our SYN asks for ECN (ECE+CWR); a kernel
    with tcp_ecn=1 agrees (SYN-ACK with ECE) and our data is sent ECT(0); one
    with tcp_ecn=0 declines and our data stays not-ECT."""
    testbed.kern.sysctl("net.ipv4.tcp_ecn", kernel_ecn)  # covers IPv6 too
    cap = tmp_path / "ecn.pcap"
    eres, kres = run_transfer(testbed, fam, True, 2 * MB, 0, capture=cap, config=["ecn=true"],
                              capture_filter="tcp")
    ecn_field = "ip.dsfield.ecn" if fam == 4 else "ipv6.tclass.ecn"
    eng = ENG6 if fam == 6 else ENG4
    syn = _tshark(cap, ["tcp.flags.ece", "tcp.flags.cwr"], "tcp.flags.syn == 1 && tcp.flags.ack == 0")
    synack = _tshark(cap, ["tcp.flags.ece", "tcp.flags.cwr"], "tcp.flags.syn == 1 && tcp.flags.ack == 1")
    assert syn and synack
    assert syn[0] in (["1", "1"], ["True", "True"])  # we asked
    data = _tshark(cap, [ecn_field], f"tcp.len > 0 && {'ip' if fam == 4 else 'ipv6'}.src == {eng}")
    marks = {row[0] for row in data}
    assert data
    if kernel_ecn:
        assert synack[0][0] in ("1", "True") and synack[0][1] in ("0", "False")  # ECE only
        assert marks == {"2"}, marks  # ECT(0) on every data packet
        assert eres["statistics"]["ecn"] is True
    else:
        assert synack[0][0] in ("0", "False")
        assert marks == {"0"}, marks  # not-ECT
        assert eres["statistics"]["ecn"] is False
