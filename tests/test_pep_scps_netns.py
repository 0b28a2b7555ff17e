"""SCPS-TP on the long leg with real kernels at both ends, over the testbed's link
(10 ms each way): two boxes find each other by option 20, one box alone talks plain
TCP, a server that drops SYNs with option 20 is reached without it, the far box
restarted mid-transfer resets the client.

    client ─ pep-a ─ link (emulator) ─ pep-b ─ server        (stackpep.testbed.topology)

What is on the link is read from a tcpdump capture on the link host.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import dpkt
import pytest

from stackpep.testbed import twobox
from stackpep.testbed.emulator import DirectionParams
from stackpep.testbed.splitbox import wait_stats_file
from stackpep.testbed.topology import CLIENT4, CLIENT6, SERVER4, SERVER6, LinkSpec, Topology, python_env

pytestmark = pytest.mark.netns

BOX = twobox.BOX_TOML.replace("{keepalive}", "2")  # keepalive 2 s: a restarted far box is found quickly

SERVER = """
import hashlib, os, socket, sys, time
addr, port, k, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
l = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((addr, port)); l.listen(8); print("LISTENING", flush=True)
for _ in range(k):
    c, _ = l.accept()
    if mode == "drip":  # 100 KB, then silence with the connection open
        c.sendall(b"d" * 100000); time.sleep(120); continue
    f = c.makefile("rb")
    n, m = int.from_bytes(f.read(8), "big"), int.from_bytes(f.read(8), "big")
    h = hashlib.sha256(); left = n
    while left:
        d = f.read(min(left, 1 << 20)); assert d, "EOF early"; h.update(d); left -= len(d)
    blob = os.urandom(m)
    c.sendall(h.digest() + hashlib.sha256(blob).digest() + blob)
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
"""

CLIENT = """
import hashlib, os, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((addr, port), timeout=30)
data = os.urandom(n)
s.sendall(n.to_bytes(8, "big") + n.to_bytes(8, "big") + data)
f = s.makefile("rb")
up, down_hash = f.read(32), f.read(32)
blob = f.read(n)
print(up == hashlib.sha256(data).digest(), down_hash == hashlib.sha256(blob).digest(), len(blob))
"""

DRIP_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
got = 0
while got < 100000:
    got += len(s.recv(65536))
print("GOT", got, flush=True)
try:
    while s.recv(65536):
        pass
    print("EOF", flush=True)
except ConnectionResetError:
    print("RESET", flush=True)
except socket.timeout:
    print("TIMEOUT", flush=True)
"""


class Boxes:
    def __init__(self, topo: Topology):
        self.topo = topo
        self.procs = {}

    def start(self, name, extra=""):
        host = self.topo.pep_a if name == "pep-a" else self.topo.pep_b
        cif, sif = ("lan0", "wan0") if name == "pep-a" else ("wan0", "lan0")
        cfg = self.topo.workdir / f"{name}.toml"
        cfg.write_text(BOX.format(client_if=cif, server_if=sif) + extra)
        log = open(self.topo.workdir / f"{name}.log", "a")
        p = host.popen([sys.executable, "-m", "stackpep", "run", "-c", str(cfg), "--stats-file",
                        str(self.stats_path(name)), "--stats-interval", "0.2"], stdout=subprocess.PIPE, stderr=log,
                       text=True, env=python_env(), cwd=str(self.topo.workdir))
        line = p.stdout.readline().strip()
        assert line == "READY", (line, (self.topo.workdir / f"{name}.log").read_text()[-3000:])
        self.procs[name] = p
        return p

    def stats_path(self, name):
        return self.topo.workdir / f"{name}-stats.json"

    def wait_stats(self, name, pred, timeout=10.0):
        return wait_stats_file(self.stats_path(name), pred, timeout, what=f"{name}: statistics")

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def capture(host, ifname, path):
    p = host.popen(["tcpdump", "-i", ifname, "-nn", "-U", "--immediate-mode", "-w", str(path), "tcp"],
                   stderr=subprocess.PIPE)
    assert b"listening" in p.stderr.readline()
    return p


def stop_capture(p):
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=10)


def syns(path):
    """[(source address, is SYN-ACK, option 20 bytes or None)] of the SYNs in a pcap, in order."""
    out = []
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            t = getattr(ip, "data", None)
            if not isinstance(t, dpkt.tcp.TCP) or not t.flags & dpkt.tcp.TH_SYN:
                continue
            opt20 = next((val for kind, val in dpkt.tcp.parse_opts(t.opts) if kind == 20), None)
            out.append((ip.src, bool(t.flags & dpkt.tcp.TH_ACK), opt20))
    return out


def serve(host, addr, port, k=1, mode="echo"):
    srv = host.popen([sys.executable, "-c", SERVER, addr, str(port), str(k), mode], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    line = srv.stdout.readline().strip()
    assert line == "LISTENING", (line, srv.stderr.read() if srv.poll() is not None else "")
    return srv


def fetch(host, addr, port, n):
    res = host.run([sys.executable, "-c", CLIENT, addr, str(port), str(n)], timeout=60, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.split()


def _addr(a):
    import ipaddress

    return ipaddress.ip_address(a).packed


def test_two_boxes_negotiate_scps_both_families_and_both_directions():
    with Topology() as topo:
        delay = DirectionParams.parse("delay=10ms")
        topo.start_link(LinkSpec(delay, delay))
        topo.warm_up()
        boxes = Boxes(topo)
        try:
            boxes.start("pep-a")
            boxes.start("pep-b")
            cap = capture(topo.link, "la", topo.workdir / "link.pcap")
            results = []
            for server_addr in (SERVER4, SERVER6):
                srv = serve(topo.server, server_addr, 8000)
                try:
                    results.append(fetch(topo.client, server_addr, 8000, 1_000_000))
                finally:
                    srv.kill()
                    srv.wait()
            # opened from the server side: the client host listens, the server host connects
            srv = serve(topo.client, CLIENT4, 9000)
            try:
                results.append(fetch(topo.server, CLIENT4, 9000, 500_000))
            finally:
                srv.kill()
                srv.wait()
            stop_capture(cap)
            assert results == [["True", "True", "1000000"]] * 2 + [["True", "True", "500000"]]
            sa = boxes.wait_stats("pep-a", lambda s: s["scps_peers"] == 3)
            sb = boxes.wait_stats("pep-b", lambda s: s["scps_peers"] == 3)
            for st in (sa, sb):
                assert (st["scps_offered"], st["scps_one_sided"], st["scps_fallbacks"]) == (3, 0, 0), st
                assert st["drop_server_side_syn"] == 0 and st["connections_opened"] == 3
        finally:
            boxes.stop_all()
        # On the link: every SYN and SYN-ACK carries option 20 (SNACK offered, one conn id
        # per box); the first two from pep-a's side, the last from pep-b's.
        seen = syns(topo.workdir / "link.pcap")
        ends = {_addr(CLIENT4): "a", _addr(CLIENT6): "a", _addr(SERVER4): "b", _addr(SERVER6): "b"}
        got = [(ends[src], ack, opt) for src, ack, opt in seen]
        assert [(e, ack) for e, ack, _ in got] == [("a", False), ("b", True), ("a", False), ("b", True),
                                                   ("b", False), ("a", True)], got
        assert all(opt is not None and len(opt) == 2 and opt[0] == 0x40 for _, _, opt in got), got
        # connection ids: each box hands out 0, 1, 2 ... to its live long legs
        assert [opt[1] for _, _, opt in got] == [0, 0, 1, 1, 2, 2]


def test_one_box_plain_server_then_a_server_that_drops_option_20():
    with Topology() as topo:
        delay = DirectionParams.parse("delay=10ms")
        topo.start_link(LinkSpec(delay, delay))
        topo.warm_up()
        boxes = Boxes(topo)
        try:
            boxes.start("pep-a")  # pep-b only forwards: the long leg ends at the server's kernel
            cap = capture(topo.link, "la", topo.workdir / "link.pcap")
            srv = serve(topo.server, SERVER4, 8000, k=3)
            try:
                assert fetch(topo.client, SERVER4, 8000, 200_000) == ["True", "True", "200000"]
                st = boxes.wait_stats("pep-a", lambda s: s["scps_one_sided"] == 1)
                assert (st["scps_offered"], st["scps_peers"], st["scps_fallbacks"]) == (1, 0, 0)
                # now the server's stack drops every SYN carrying option 20
                for cmd in ("nft add table inet t", "nft add chain inet t in { type filter hook input priority 0; }",
                            "nft add rule inet t in tcp option 20 exists counter drop"):
                    topo.server.run(cmd)
                # first SYN + 2 retransmissions with the option, then without (1 + 2 + 4 s)
                assert fetch(topo.client, SERVER4, 8000, 200_000) == ["True", "True", "200000"]
                st = boxes.wait_stats("pep-a", lambda s: s["scps_fallbacks"] == 1)
                assert st["scps_refusals_cached"] == 1 and st["scps_one_sided"] == 2
                # remembered: the next connection goes without option 20 at once
                assert fetch(topo.client, SERVER4, 8000, 200_000) == ["True", "True", "200000"]
                st = boxes.wait_stats("pep-a", lambda s: s["scps_not_offered_refused"] == 1)
                assert (st["scps_offered"], st["scps_fallbacks"], st["scps_one_sided"]) == (2, 1, 3)
                dropped = topo.server.run("nft list chain inet t in").stdout
                assert "packets 3 " in dropped, dropped
            finally:
                srv.kill()
                srv.wait()
            stop_capture(cap)
        finally:
            boxes.stop_all()
        seen = [(ack, opt is not None) for src, ack, opt in syns(topo.workdir / "link.pcap")]
        assert seen == [(False, True), (True, False),  # one-sided: the server's SYN-ACK has no option 20
                        (False, True), (False, True), (False, True), (False, False), (True, False),  # fallback
                        (False, False), (True, False)], seen  # remembered


def test_far_box_restarted_mid_transfer_resets_the_client():
    with Topology() as topo:
        delay = DirectionParams.parse("delay=10ms")
        topo.start_link(LinkSpec(delay, delay))
        topo.warm_up()
        boxes = Boxes(topo)
        try:
            boxes.start("pep-a")
            pb = boxes.start("pep-b")
            srv = serve(topo.server, SERVER4, 8000, mode="drip")
            cl = topo.client.popen([sys.executable, "-c", DRIP_CLIENT, SERVER4, "8000"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            try:
                assert cl.stdout.readline().split() == ["GOT", "100000"]
                pb.kill()  # no RST from it: its table is simply gone
                pb.wait()
                boxes.start("pep-b")
                # pep-a's keep-alive probe (after 2 s idle) meets the new pep-b: RST
                out, err = cl.communicate(timeout=40)
                assert out.split() == ["RESET"], (out, err)
                sa = boxes.wait_stats("pep-a", lambda s: s["ended_reset_by_server"] == 1)
                assert sa["ended_idle_timeout"] == 0
                sb = boxes.wait_stats("pep-b", lambda s: s["rst_sent_unknown_flow"] >= 1)
                assert sb["connections_opened"] == 0
            finally:
                for p in (srv, cl):
                    if p.poll() is None:
                        p.kill()
                    p.wait()
        finally:
            boxes.stop_all()


# zero_rtt_wait: the near box waits this long after the client's handshake for its first
# bytes before opening the long leg without them; the shipped 10 ms is less than a client
# process on a loaded machine may take between connect() and send() (zero_rtt_no_data)
ZERO_RTT = """zero_rtt = true
tfo_key = "000102030405060708090a0b0c0d0e0f"
zero_rtt_wait = 1.0
"""

FETCH = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8000), timeout=30)
s.sendall(b"GET /100k\\r\\n")
got = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    got += len(d)
print(got)
"""

RESPOND = """
import socket, sys
l = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], 8000)); l.listen(8); print("LISTENING", flush=True)
for _ in range(1):
    c, _ = l.accept()
    req = c.recv(100)
    assert req == b"GET /100k\\r\\n", req
    c.sendall(b"x" * 100000); c.close()
"""


def payload_syns(path):
    """[(is SYN-ACK, payload bytes, TFO option present)] of the SYNs in a pcap."""
    out = []
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            t = getattr(ip, "data", None)
            if isinstance(t, dpkt.tcp.TCP) and t.flags & dpkt.tcp.TH_SYN:
                fo = any(kind == 34 for kind, _ in dpkt.tcp.parse_opts(t.opts))
                out.append((bool(t.flags & dpkt.tcp.TH_ACK), bytes(t.data), fo))
    return out


def test_zero_rtt_fetch_first_bytes_ride_in_the_syn():
    with Topology() as topo:
        delay = DirectionParams.parse("delay=10ms")
        topo.start_link(LinkSpec(delay, delay))
        topo.warm_up()
        boxes = Boxes(topo)
        try:
            boxes.start("pep-a", ZERO_RTT)
            boxes.start("pep-b", ZERO_RTT)
            cap = capture(topo.link, "la", topo.workdir / "link.pcap")
            for server_addr in (SERVER4, SERVER6):
                srv = topo.server.popen([sys.executable, "-c", RESPOND, server_addr], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                try:
                    assert srv.stdout.readline().strip() == "LISTENING"
                    res = topo.client.run([sys.executable, "-c", FETCH, server_addr], timeout=30, check=False)
                    assert res.stdout.split() == ["100000"], res.stderr[-2000:]
                finally:
                    srv.kill()
                    srv.wait()
            stop_capture(cap)
            sa = boxes.wait_stats("pep-a", lambda s: s["zero_rtt_syn_data_acked"] == 2)
            sb = boxes.wait_stats("pep-b", lambda s: s["zero_rtt_accepted"] == 2)
            assert (sa["zero_rtt_syn_data"], sa["zero_rtt_no_data"], sa["scps_peers"]) == (2, 0, 2), sa
            assert (sb["scps_peers"], sb["zero_rtt_syn_data"]) == (2, 0), sb
        finally:
            boxes.stop_all()
        syns = payload_syns(topo.workdir / "link.pcap")
        # the long leg's SYN carries the cookie and the request; the SYN-ACK acknowledges it.
        # Each goes twice (first-flight redundancy, on with zero_rtt); a copy of the SYN that
        # reaches the far box after it answered draws one more SYN-ACK
        syn = (False, b"GET /100k\r\n", True)
        synack = (True, b"", False)
        i = syns.index(syn, 2)
        for one in (syns[:i], syns[i:]):       # IPv4, then IPv6
            assert one[:2] == [syn, syn] and one[2:] in ([synack] * 2, [synack] * 3), syns
