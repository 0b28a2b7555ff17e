"""Opened legs' segments straight from the capture to the engine in C
(stackpep._fast.capture.FastFlows, TcpConnection.receive_ptr; issue 11, "Cost per
byte at satellite rates"): what goes the fast way, what stays on the Python path,
the order within a flow, and the dispatcher's counters and turns.

The same choice runs over a ring's frames (PacketRing.read_batch with `fast`) and
over a batch of tuples (FastFlows.filter, what an in-memory port uses), so the
rules are pinned here on batches of tuples."""
from __future__ import annotations

import json
import os

import pytest
import trio
import trio.testing

from stackpep._fast import tcp
from stackpep._fast.capture import ICMP_ERROR, FastFlows, flow_key
from stackpep.io.ports import MemoryRouter, PacketPort
from stackpep.pep.api import intercept_spec, open_pep
from stackpep.pep.config import from_dict
from stackpep.pep.dispatcher import Dispatcher
from stackpep.tcp.config import TcpConfig
from stackpep.wire import Segment, parse_packet

C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
SYN, ACK, PSH = 0x02, 0x10, 0x08
NOW = 1_000_000


def seg(flags, seq, ack, payload=b"", sport=40000, src=C4, dst=S4):
    """An intact client -> server segment (checksums filled by the wire layer)."""
    s = Segment()
    s.ip_version = 4
    s.src, s.dst, s.sport, s.dport = src, dst, sport, 80
    s.flags, s.seq, s.ack, s.window, s.ttl = flags, seq, ack, 1000, 64
    return s.to_bytes(payload)


def key(sport=40000):
    return flow_key(C4, sport, S4, 80)


def client_leg(sport=40000):
    """A client leg's engine (it speaks as the server) after the client's SYN:
    SYN-RECEIVED, its SYN-ACK taken; returns (engine, the ack number the client uses)."""
    e = tcp.TcpConnection(TcpConfig(), S4, 80, C4, sport, 7777)
    e.listen()
    e.receive_packet(seg(SYN, 1000, 0, sport=sport), NOW, True)
    (synack,) = e.packets_to_send(NOW)
    return e, parse_packet(synack).seq + 1


def script(ack):
    """The client's segments after its SYN: the handshake's ACK, data in order and
    out of order, a duplicate, a FIN."""
    d = [os.urandom(700) for _ in range(6)]
    s = 1001
    return [seg(ACK, s, ack), seg(ACK | PSH, s, ack, d[0]), seg(ACK, s + 1400, ack, d[2]),
            seg(ACK, s + 700, ack, d[1]), seg(ACK, s + 700, ack, d[1]), seg(ACK, s + 2100, ack, d[3]),
            seg(ACK, s + 2800, ack, d[4]), seg(ACK | 0x01, s + 3500, ack, d[5])], b"".join(d)


def flags_of(p):
    return parse_packet(p).flags


def test_fast_and_python_paths_give_the_engine_the_same_segments_in_order():
    slow, ack = client_leg()
    fast_engine, ack2 = client_leg()
    assert ack == ack2
    pkts, data = script(ack)
    fast = FastFlows()
    conn = object()
    fast.set_leg(key(), conn, True, fast_engine)
    out_slow, out_fast = [], []
    for i in range(0, len(pkts), 3):  # batches of three
        batch = [(key(), p, flags_of(p)) for p in pkts[i:i + 3]]
        for _, p, _ in batch:
            slow.receive_packet(p, NOW + i, True)  # what SplitConnection.deliver does
        assert fast.filter(batch, True, NOW + i) == []  # every one went to the engine here
        n, touched, failed = fast.take()
        assert (n, touched, failed) == (len(batch), [conn], [])  # the connection once per read
        out_slow += slow.packets_to_send(NOW + i)
        out_fast += fast_engine.packets_to_send(NOW + i)
    assert out_fast == out_slow and out_fast  # byte for byte the same answers (ACKs, SACKs)
    assert fast_engine.recv(1 << 20) == slow.recv(1 << 20) == data
    assert fast_engine.statistics() == slow.statistics()
    assert fast.fast_packets == len(pkts)


def test_once_a_flow_takes_the_python_path_in_a_read_the_rest_of_it_does_too():
    e1, ack1 = client_leg(40000)
    e2, ack2 = client_leg(40001)
    fast = FastFlows()
    c1, c2 = object(), object()
    fast.set_leg(key(40000), c1, True, e1)
    fast.set_leg(key(40001), c2, True, e2)
    a1 = seg(ACK, 1001, ack1)
    syn1 = seg(SYN, 1000, 0)  # a new SYN for the key: may supersede (the dispatcher decides)
    d1 = seg(ACK, 1001, ack1, b"x" * 10)
    a2 = seg(ACK, 1001, ack2, sport=40001)
    d2 = seg(ACK, 1001, ack2, b"y" * 10, sport=40001)
    batch = [(key(40000), a1, ACK), (key(40001), a2, ACK), (key(40000), syn1, SYN), (key(40001), d2, ACK),
             (key(40000), d1, ACK)]
    # a1 before the SYN goes to the engine; the SYN and d1 behind it stay in order for
    # the Python path; the other flow is not held back
    assert fast.filter(batch, True, NOW) == [(key(40000), syn1, SYN), (key(40000), d1, ACK)]
    assert fast.take() == (3, [c1, c2], [])
    # the next read starts afresh
    d1b = seg(ACK, 1011, ack1, b"z")
    assert fast.filter([(key(40000), d1b, ACK)], True, NOW) == []
    assert fast.take() == (1, [c1], [])


def test_icmp_errors_not_opened_legs_and_unknown_flows_take_the_python_path():
    e, ack = client_leg()
    fast = FastFlows()
    conn = object()
    fast.set_leg(key(), conn, True, e)  # only the client-facing leg is opened
    d = seg(ACK, 1001, ack, b"x")
    icmp = (key(), b"\x45" + bytes(55), ICMP_ERROR)
    other = (key(40009), seg(ACK, 5, 6, sport=40009), ACK)
    assert fast.filter([icmp, (key(), d, ACK), other], True, NOW) == [icmp, (key(), d, ACK), other]
    # the server-facing side of the flow has no engine here yet
    assert fast.filter([(key(), d, ACK)], False, NOW) == [(key(), d, ACK)]
    assert fast.take() == (0, [], [])
    assert e.statistics().segments_received == 1  # the SYN only
    # gone: everything takes the Python path
    fast.discard(key(), object())  # another connection's entry: not this one
    assert key() in fast
    fast.discard(key(), conn)
    assert key() not in fast and len(fast) == 0
    assert fast.filter([(key(), d, ACK)], True, NOW) == [(key(), d, ACK)]


# -- the dispatcher ------------------------------------------------------------------
def config():
    return from_dict({"interfaces": {"client": ["c"], "server": ["s"]},
                      "intercept": {"prefixes": ["198.18.1.0/24"], "ports": [80]}})


class FakeConn:
    """A split connection as the dispatcher sees it; records Python deliveries and turns."""

    passive = 0
    outcome = None

    def __init__(self, k, log, reusable=False):
        self.key, self.log, self.reusable = k, log, reusable
        self.last_activity = 0
        self.shut = None

    def deliver(self, from_client, pkt, flags, now):
        self.log.append(("deliver", self.key[5], flags))
        return True

    def turn(self, now):
        self.log.append(("turn", self.key[5]))

    def reusable_by_new_syn(self):
        return self.reusable

    def shutdown(self, outcome):
        self.shut = outcome


class FakePort(PacketPort):
    def __init__(self, name, client_side):
        self.name, self.client_side = name, client_side
        self.queue = []

    async def receive_batch(self):
        raise AssertionError("the test drives Dispatcher._pass itself")

    def poll_batch(self):
        batch, self.queue = self.queue, []
        return batch

    def send(self, packets, hop):
        return len(packets)

    def statistics(self):
        return {}


def dispatcher_with(conns):
    cport, sport = FakePort("c", True), FakePort("s", False)
    d = Dispatcher(config(), [cport, sport], MemoryRouter([]), intercept_spec(config()))
    for c in conns:
        d.table[c.key] = c
    return d, cport


def run_pass(d, port, batch, now=NOW):
    async def main():
        port.queue = batch
        d._pass(None, None, now, [port])

    trio.run(main)


def test_dispatcher_counts_turns_and_stamps_fast_packets_as_the_python_path_does():
    log = []
    c0, c1 = FakeConn(key(40000), log), FakeConn(key(40001), log)
    d, cport = dispatcher_with([c0, c1])
    e0, ack0 = client_leg(40000)
    d.fast.set_leg(c0.key, c0, True, e0)
    batch = [(c0.key, seg(ACK, 1001, ack0), ACK), (c1.key, seg(ACK, 1, 1, sport=40001), ACK),
             (c0.key, seg(ACK, 1001, ack0, b"x"), ACK),
             (c0.key, b"\x45" + bytes(55), ICMP_ERROR),  # an ICMP error quoting c0's flow ...
             (c0.key, seg(ACK, 1002, ack0, b"y"), ACK)]  # ... and the flow's next segment: Python, in order
    run_pass(d, cport, batch)
    st = d.counters
    assert (st["packets_in"], st["packets_to_connections"], st["packets_fast"]) == (5, 4, 2)
    assert st["icmp_errors_in"] == 1
    assert e0.statistics().segments_received == 3  # SYN + the two handed over in C
    assert c0.last_activity == NOW  # (the Python path's FakeConn.deliver does not stamp)
    # c1 and c0's last segment went the Python way; one turn each, c0 first (it took packets first)
    assert log == [("deliver", c1.key[5], ACK), ("deliver", c0.key[5], ACK), ("turn", c0.key[5]),
                   ("turn", c1.key[5])]


def test_a_syn_for_a_fast_flow_goes_to_the_python_path_and_may_supersede():
    log = []
    old = FakeConn(key(), log, reusable=True)  # e.g. lingering in TIME-WAIT
    d, cport = dispatcher_with([old])
    e, ack = client_leg()
    d.fast.set_leg(old.key, old, True, e)
    opened = []
    d._open = lambda conn, source: opened.append(conn)
    run_pass(d, cport, [(old.key, seg(SYN, 9000, 0), SYN)])
    assert old.shut == "superseded" and old.key not in d.table
    assert old.key not in d.fast  # forgotten: no fast entry left for the old connection
    assert [c.key for c in opened] == [old.key]  # the SYN opened a new one
    assert e.statistics().segments_received == 1 and d.counters["packets_fast"] == 0


def test_split_connection_legs_enter_the_fast_table_and_leave_it_when_it_ends():
    from tests.test_splitter import Box, pep_config, recv_all  # (the in-memory client and server hosts)

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                fast = pep.dispatcher.fast
                c = await box.connect()
                s = await box.accept()
                (conn,) = pep.connections()
                assert conn.key in fast
                await c.send_all(b"u" * 50_000)
                assert await recv_all(s, 50_000) == b"u" * 50_000
                st = pep.statistics()
                assert st["packets_fast"] > 0
                assert st["packets_to_connections"] <= st["packets_in"]
                await c.send_eof()
                assert await s.receive_some(10) == b""
                await s.send_eof()
                assert await recv_all(c) == b""
                while conn.outcome is None:
                    await trio.sleep(0.1)
                assert conn.key not in fast  # ended: its late segments take the Python path
                while pep.statistics()["connections_active"] + pep.statistics()["connections_time_wait"]:
                    await trio.sleep(1)
                assert len(fast) == 0
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- the ring: PacketRing.read_batch with FastFlows, over a veth in namespaces ---------------
RING_SEND = r"""
import sys, os, struct
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
from stackpep.wire import Segment
C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
def seg(flags, seq, ack, payload=b""):
    s = Segment(); s.ip_version = 4
    s.src, s.dst, s.sport, s.dport = C4, S4, 40000, 80
    s.flags, s.seq, s.ack, s.window, s.ttl = flags, seq, ack, 1000, 64
    return s.to_bytes(payload)
ring = PacketRing(IFNAME, client_side=True)
ACK = 7778     # the engines' ISS (7777) + 1
if PHASE == 1:
    frames = [seg(0x02, 1000, 0)]
else:
    d = [bytes([65 + i]) * 600 for i in range(8)]
    s = 1001
    frames = [seg(0x10, s, ACK), seg(0x18, s, ACK, d[0]), seg(0x10, s + 1200, ACK, d[2]),
              seg(0x10, s + 600, ACK, d[1]), seg(0x10, s + 600, ACK, d[1]),
              seg(0x02, 1000, 0),                       # the client's SYN again: the Python path
              seg(0x10, s + 1800, ACK, d[3]), seg(0x10, s + 2400, ACK, d[4])]
print(ring.send_batch(frames, bytes(12)))
"""

RING_RECV = r"""
import sys, json, select
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing, FastFlows, flow_key
from stackpep._fast import tcp
from stackpep.tcp.config import TcpConfig
C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
NOW = 1_000_000
fast_ring = PacketRing(IFNAME, client_side=True)
plain_ring = PacketRing(IFNAME, client_side=True)
engines = []
for _ in range(2):
    e = tcp.TcpConnection(TcpConfig(), S4, 80, C4, 40000, 7777)
    e.listen()
    engines.append(e)
fe, pe = engines
fast = FastFlows()
got = {"fast": 0, "slow_fast_ring": 0, "plain": 0, "reads_with_both": 0}
out = {"fast": [], "plain": []}
def pump(want):
    while got["fast"] + got["slow_fast_ring"] < want or got["plain"] < want:
        select.select([fast_ring, plain_ring], [], [], 0.05)
        slow = fast_ring.read_batch(16, fast, NOW)
        n, touched, failed = fast.take()
        got["fast"] += n
        got["slow_fast_ring"] += len(slow)
        if n and slow:
            got["reads_with_both"] += 1
        for k, p, f in slow:                      # the dispatcher's Python path
            fe.receive_packet(p, NOW, True)
        for k, p, f in plain_ring.read_batch():   # the Python path alone
            got["plain"] += 1
            pe.receive_packet(p, NOW, True)
print("READY", flush=True)
pump(1)                                           # the SYN
fast.set_leg(flow_key(C4, 40000, S4, 80), object(), True, fe)   # the client leg is opened
out["fast"] += fe.packets_to_send(NOW); out["plain"] += pe.packets_to_send(NOW)
print("SYN", flush=True)
pump(9)
out["fast"] += fe.packets_to_send(NOW); out["plain"] += pe.packets_to_send(NOW)
print(json.dumps({**got, "same_output": out["fast"] == out["plain"], "n_out": len(out["fast"]),
                  "same_stats": fe.statistics() == pe.statistics(),
                  "data": [fe.recv(1 << 16).hex(), pe.recv(1 << 16).hex()],
                  "segs": fe.statistics().segments_received}))
"""


@pytest.mark.netns
def test_ring_read_hands_an_opened_legs_segments_to_its_engine_as_the_python_path_would():
    import subprocess
    import sys
    from pathlib import Path

    import stackpep
    from stackpep.testbed.netns import Network

    root = repr(str(Path(stackpep.__file__).resolve().parents[1]))
    with Network() as net:
        c = net.add_host("client")
        b = net.add_host("box", forwarding=True)
        ci, bi = net.link(c, b, ["198.18.0.2/24"], ["198.18.0.1/24"])
        rcv = b.popen([sys.executable, "-c", RING_RECV.replace("ROOT", root).replace("IFNAME", repr(bi))],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert rcv.stdout.readline().strip() == "READY", rcv.stderr.read()
            for phase, expect in ((1, "SYN"), (2, None)):
                prog = RING_SEND.replace("ROOT", root).replace("IFNAME", repr(ci)).replace("PHASE", str(phase))
                assert c.run([sys.executable, "-c", prog]).stdout.strip() == str(1 if phase == 1 else 8)
                if expect:
                    assert rcv.stdout.readline().strip() == expect, rcv.stderr.read()
            out = json.loads(rcv.communicate(timeout=30)[0])
        finally:
            if rcv.poll() is None:
                rcv.kill()
    # every frame read once from each ring; the engines took the same segments in the same order
    assert out["plain"] == 9 and out["fast"] + out["slow_fast_ring"] == 9
    assert out["fast"] >= 5  # (at least the five before the second SYN went the C way)
    assert out["slow_fast_ring"] >= 2  # the two SYNs at least
    assert out["same_output"] and out["n_out"] >= 2 and out["same_stats"]
    assert out["data"][0] == out["data"][1] and len(out["data"][0]) == 2 * 5 * 600
    assert out["segs"] == 9
