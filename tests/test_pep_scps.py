"""SCPS-TP on the long leg, two boxes that find each other, connections from either
side -- over in-memory ports and a delayed in-memory link, in virtual time.

    client host --c-[ box A ]-s--- link (20 ms each way) ---c-[ box B ]-s-- server host

Box A has `[wan] leg = "server"`, box B `[wan] leg = "client"` (examples/geo-pep-*.toml).
What is checked: the long leg's SYN and SYN-ACK carry option 20 (bits, a connection
id per box), both boxes count the peer, bytes arrive intact both ways; a connection
opened from the server side goes through both boxes the same way; one box alone
talks plain TCP to the server (one-sided, counted); a server that drops SYNs with
option 20 is reached by the retry without it and remembered; the far box lost
mid-transfer -> the client gets a reset.
"""
from __future__ import annotations

import hashlib
import os
import struct

import pytest
import trio
import trio.testing

from stackpep._fast import tcp
from stackpep._fast.scpshc import HcTable
from stackpep.io.ports import MemoryPort, MemoryRouter
from stackpep.pep.api import open_pep
from stackpep.pep.config import from_dict
from stackpep.pep.reset import reset_for
from stackpep.pep.scps import CONN_IDS, ScpsLink
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.stream import EngineDriver, TcpStream
from stackpep.wire import parse_packet

C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
C6 = bytes.fromhex("fd000001" + "00" * 11 + "02")
S6 = bytes.fromhex("fd000002" + "00" * 11 + "02")
CLIENT_NETS = ("198.18.0.0/24", "fd00:1::/64")
SERVER_NETS = ("198.18.1.0/24", "fd00:2::/64")
ONE_WAY = 0.02  # s, each direction of the link

SNACK_BITS = 0x40


def box_config(wan_leg, **over):
    d = {"pep": {"workers": 1},
         "interfaces": {"client": ["c"], "server": ["s"]},
         "intercept": {"prefixes": ["198.18.0.0/15", "fd00::/14"]},
         "handshake": {"timeout": 5.0},
         "wan": {"leg": wan_leg, "rate": 20_000_000, "rtt": 2 * ONE_WAY},
         "control": {"socket": ""}}
    for k, v in over.items():
        if v is None:
            d.pop(k, None)
        else:
            d.setdefault(k, {}).update(v)
    return from_dict(d)


def tcp_of(pkt):
    return parse_packet(bytes(pkt), 1)


def is_compressed(pkt):
    return (pkt[0] >> 4 == 4 and pkt[9] == 105) or (pkt[0] >> 4 == 6 and pkt[6] == 105)


class EndHost:
    """A host with stackpep's engine as its TCP (no SCPS), listening on port 80."""

    def __init__(self, nursery, addr, inject, drop_scps_syn=False):
        self.nursery, self.addr, self.inject = nursery, addr, inject
        self.drop_scps_syn = drop_scps_syn  # like `nft ... tcp option 20 exists drop`
        self.dropped_scps_syns = 0
        self.drivers = {}
        self.accepted = trio.open_memory_channel(100)

    def receive(self, pkt):
        s = tcp_of(pkt)
        key = (s.dport, s.sport)
        d = self.drivers.get(key)
        if d is None and s.flags & 0x02 and not s.flags & 0x10 and s.dport == 80:
            if self.drop_scps_syn and s.scps is not None:
                self.dropped_scps_syns += 1
                return
            conn = tcp.TcpConnection(TcpConfig(), self.addr, 80, s.src, s.sport, int.from_bytes(os.urandom(4), "big"))
            d = self.drivers[key] = EngineDriver(conn, self.inject)
            d.listen()
            self.nursery.start_soon(d.run)
            self.accepted[0].send_nowait(TcpStream(d))
        if d is not None:
            d.deliver(pkt)

    async def connect(self, remote, port, lport=40000):
        conn = tcp.TcpConnection(TcpConfig(), self.addr, lport, remote, port, int.from_bytes(os.urandom(4), "big"))
        d = self.drivers[(lport, port)] = EngineDriver(conn, self.inject)
        self.nursery.start_soon(d.run)
        d.connect()
        s = TcpStream(d)
        await s.wait_connected()
        return s

    async def accept(self):
        return await self.accepted[1].receive()


class Link:
    """Two memory ports joined with a fixed delay each way; every packet recorded."""

    def __init__(self, nursery, a, b, one_way=ONE_WAY):
        self.nursery = nursery
        self.one_way = one_way
        self.wire = []  # (direction "a->b" / "b->a", packet)
        self.sent_at = []  # virtual time each packet of `wire` entered the link
        self.ends = {"a->b": b, "b->a": a}
        self.queues = {}
        self.cut = False

    def send(self, direction, pkt):
        self.wire.append((direction, pkt))
        self.sent_at.append(trio.current_time())
        if self.cut:
            return
        q = self.queues.get(direction)
        if q is None:  # one FIFO per direction: a link does not reorder
            q = self.queues[direction] = trio.open_memory_channel(100000)
            self.nursery.start_soon(self._deliver, direction, q[1])
        q[0].send_nowait((trio.current_time() + self.one_way, pkt))

    async def _deliver(self, direction, rx):
        async for due, pkt in rx:
            await trio.sleep_until(due)
            port = self.ends[direction]
            if port is not None:
                port.inject(pkt)

    def syns(self):
        """(direction, is SYN-ACK, scps option or None, payload length) of each SYN on the link."""
        out = []
        for d, p in self.wire:
            if is_compressed(p):
                continue  # never a SYN
            s = tcp_of(p)
            if s.flags & 0x02:
                out.append((d, bool(s.flags & 0x10), s.scps, s.payload_len))
        return out


class _Receiver:
    """A host standing where a port would (one box: the server at the link's end)."""

    def __init__(self, host):
        self.host = host

    def inject(self, pkt):
        self.host.receive(pkt)


def router_for(cport, sport):
    return MemoryRouter([(n, cport) for n in CLIENT_NETS] + [(n, sport) for n in SERVER_NETS])


class TwoBoxLink:
    """client -- A -- link -- B -- server; `boxes=1` leaves B out (the link ends at the server)."""

    def __init__(self, nursery, fam="v4", boxes=2, drop_scps_syn=False, compression=False, one_way=ONE_WAY):
        self.ca, self.sa = (C4, S4) if fam == "v4" else (C6, S6)
        self.one_way = one_way
        self.nursery = nursery
        self.compression = compression
        # the link-side ports expand compressed headers (what api.open_pep gives AF_PACKET ports)
        hc = (lambda: HcTable(64)) if compression else (lambda: None)
        self.a_c, self.a_s = MemoryPort("c", client_side=True), MemoryPort("s", client_side=False, hc_table=hc())
        self.b_c, self.b_s = MemoryPort("c", client_side=True, hc_table=hc()), MemoryPort("s", client_side=False)
        self.boxes = boxes
        self.client = EndHost(nursery, self.ca, self.a_c.inject)
        if boxes == 2:
            self.server = EndHost(nursery, self.sa, self.b_s.inject, drop_scps_syn)
            self.link = Link(nursery, self.a_s, self.b_c, one_way)
            self.b_c.on_send = lambda p: self.link.send("b->a", p)
            self.b_s.on_send = self.server.receive
        else:
            # the server sits at the far end of the link itself
            self.link = Link(nursery, self.a_s, None, one_way)
            self.server = EndHost(nursery, self.sa, lambda p: self.link.send("b->a", p), drop_scps_syn)
            self.link.ends["a->b"] = _Receiver(self.server)
        self.a_c.on_send = self.client.receive
        self.a_s.on_send = self._a_to_link

    def _a_to_link(self, pkt):
        self.link.send("a->b", pkt)  # (one box: the link's far end is the server, below)

    def pep_a(self, **over):
        if self.compression:
            over.setdefault("wan", {"scps_compression": True})
        return open_pep(box_config("server", **over), ports=[self.a_c, self.a_s], router=router_for(self.a_c, self.a_s))

    def pep_b(self, **over):
        if self.compression:
            over.setdefault("wan", {"scps_compression": True})
        return open_pep(box_config("client", **over), ports=[self.b_c, self.b_s], router=router_for(self.b_c, self.b_s))


async def recv_all(stream, n=None):
    buf = bytearray()
    while n is None or len(buf) < n:
        d = await stream.receive_some(1 << 16)
        if not d:
            break
        buf += d
    return bytes(buf)


async def exchange(opener, acceptor, up, down):
    """opener sends `up` and half-closes, acceptor answers `down`; returns what each got."""
    got = {}
    async with trio.open_nursery() as n:
        async def side_a():
            await opener.send_all(up)
            await opener.send_eof()
            got["down"] = await recv_all(opener)

        async def side_b():
            got["up"] = await recv_all(acceptor)
            await acceptor.send_all(down)
            await acceptor.send_eof()

        n.start_soon(side_a)
        n.start_soon(side_b)
    return got["up"], got["down"]


def run_virtual(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


async def until(pred, step=0.01, limit=60.0):
    waited = 0.0
    while not pred():
        await trio.sleep(step)
        waited += step
        assert waited < limit, "condition not reached in virtual time"


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_two_boxes_find_each_other_and_relay_both_ways(fam):
    up, down = os.urandom(200_000), os.urandom(500_000)

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, fam)
            async with tb.pep_a() as a, tb.pep_b() as b:
                c = await tb.client.connect(tb.sa, 80)
                s = await tb.server.accept()
                got_up, got_down = await exchange(c, s, up, down)
                assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
                assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
                sa, sb = a.statistics(), b.statistics()
                # A opened the long leg and offered option 20; B answered it
                assert (sa["scps_offered"], sa["scps_peers"], sa["scps_one_sided"]) == (1, 1, 0)
                assert (sb["scps_offered"], sb["scps_peers"], sb["scps_one_sided"]) == (1, 1, 0)
                assert sa["scps_fallbacks"] == sb["scps_fallbacks"] == 0
            n.cancel_scope.cancel()
        syns = tb.link.syns()
        # exactly one SYN each way on the link, both with option 20: SNACK offered, a connection id
        assert [(d, ack) for d, ack, _, _ in syns] == [("a->b", False), ("b->a", True)]
        for _, _, opt, _ in syns:
            assert opt is not None and opt[0] == SNACK_BITS
        assert syns[0][2][1] == 0  # the first connection id each box hands out
        assert syns[1][2][1] == 0
        # only the end hosts' addresses on the link (transparent both boxes)
        assert {(tcp_of(p).src, tcp_of(p).dst) for _, p in tb.link.wire} == {(tb.ca, tb.sa), (tb.sa, tb.ca)}

    run_virtual(main)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_connection_opened_from_the_server_side_crosses_both_boxes(fam):
    up, down = os.urandom(100_000), os.urandom(150_000)

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, fam)
            async with tb.pep_a() as a, tb.pep_b() as b:
                s = await tb.server.connect(tb.ca, 80, lport=41000)
                c = await tb.client.accept()
                got_up, got_down = await exchange(s, c, up, down)
                assert got_up == up and got_down == down
                sa, sb = a.statistics(), b.statistics()
                assert sa["connections_opened"] == sb["connections_opened"] == 1
                assert sa["drop_server_side_syn"] == sb["drop_server_side_syn"] == 0
                # B opened the long leg this time (its client leg), A's server leg answered
                assert (sb["scps_offered"], sb["scps_peers"]) == (1, 1)
                assert (sa["scps_offered"], sa["scps_peers"]) == (1, 1)
                await until(lambda: a.statistics()["ended_closed"] == 1 and b.statistics()["ended_closed"] == 1, step=1, limit=600)
            n.cancel_scope.cancel()
        syns = tb.link.syns()
        assert [(d, ack, opt is not None) for d, ack, opt, _ in syns] == [("b->a", False, True), ("a->b", True, True)]

    run_virtual(main)


def test_server_side_syn_still_dropped_without_wan():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n)
            async with tb.pep_a(wan=None) as a:
                assert a.config.server_initiated is False
                tb.a_s.inject(_syn(tb.sa, 41000, tb.ca, 80))
                await until(lambda: a.statistics()["drop_server_side_syn"] == 1)
                assert a.statistics()["connections_opened"] == 0
            n.cancel_scope.cancel()

    run_virtual(main)


def _syn(src, sport, dst, dport):
    from stackpep.wire import Segment

    s = Segment()
    s.ip_version = 4 if len(src) == 4 else 6
    s.src, s.dst, s.sport, s.dport, s.seq, s.flags, s.window, s.ttl = src, dst, sport, dport, 1000, 0x02, 65535, 64
    return s.to_bytes(b"")


def test_one_box_alone_talks_plain_tcp_to_the_server():
    up = os.urandom(50_000)

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, boxes=1)
            async with tb.pep_a() as a:
                c = await tb.client.connect(tb.sa, 80)
                s = await tb.server.accept()
                got_up, got_down = await exchange(c, s, up, b"ok")
                assert got_up == up and got_down == b"ok"
                st = a.statistics()
                assert (st["scps_offered"], st["scps_peers"], st["scps_one_sided"], st["scps_fallbacks"]) == (1, 0, 1, 0)
            n.cancel_scope.cancel()
        syns = tb.link.syns()
        assert [(d, ack, opt is not None) for d, ack, opt, _ in syns] == [("a->b", False, True), ("b->a", True, False)]

    run_virtual(main)


def test_server_dropping_option_20_is_reached_without_it_and_remembered():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, boxes=1, drop_scps_syn=True)
            # the retry without the option comes after 1 + 2 + 4 s (RFC 6298 backoff)
            async with tb.pep_a(handshake={"timeout": 10.0}) as a:
                c = await tb.client.connect(tb.sa, 80, lport=40001)
                s = await tb.server.accept()
                up, down = await exchange(c, s, b"first", b"one")
                assert (up, down) == (b"first", b"one")
                st = a.statistics()
                # the first SYN and `syn_retries_with_option` (2) retransmissions carried it
                assert tb.server.dropped_scps_syns == 3
                assert (st["scps_fallbacks"], st["scps_refusals_cached"], st["scps_one_sided"]) == (1, 1, 1)
                assert st["scps_refusals_remembered"] == 1
                # the next connection to that server goes without option 20 at once
                c = await tb.client.connect(tb.sa, 80, lport=40002)
                s = await tb.server.accept()
                up, down = await exchange(c, s, b"second", b"two")
                assert (up, down) == (b"second", b"two")
                st = a.statistics()
                assert tb.server.dropped_scps_syns == 3
                assert (st["scps_offered"], st["scps_not_offered_refused"], st["scps_fallbacks"]) == (1, 1, 1)
            n.cancel_scope.cancel()
        first_syns = [opt is not None for d, ack, opt, _ in tb.link.syns() if d == "a->b"]
        assert first_syns == [True, True, True, False, False]

    run_virtual(main)


def test_far_box_lost_mid_transfer_resets_the_client():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n)
            async with tb.pep_a() as a:
                async with tb.pep_b() as b:
                    c = await tb.client.connect(tb.sa, 80)
                    s = await tb.server.accept()
                    await s.send_all(os.urandom(100_000))
                    got = await c.receive_some(1 << 16)
                    assert got
                    # B dies without a word on the link (its own RSTs never cross)
                    tb.link.cut = True
                await trio.sleep(0.5)
                tb.link.cut = False
                # ... and comes back with an empty table
                async with tb.pep_b() as b2:
                    with pytest.raises(trio.BrokenResourceError):
                        await recv_all(c)
                    st = a.statistics()
                    assert st["ended_reset_by_server"] == 1, {k: v for k, v in st.items() if k.startswith("ended") and v}
                    assert b2.statistics()["rst_sent_unknown_flow"] >= 1
            n.cancel_scope.cancel()

    run_virtual(main)


def test_conn_ids_unique_among_live_connections():
    counters = {"scps_conn_ids_shared": 0}
    link = ScpsLink({"snack": True}, 1_000_000, counters)
    ids = [link.allocate_conn_id() for _ in range(CONN_IDS)]
    assert sorted(ids) == list(range(CONN_IDS)) and counters["scps_conn_ids_shared"] == 0
    link.release_conn_id(7)
    assert link.allocate_conn_id() == 7  # the only free one
    assert link.allocate_conn_id() in range(CONN_IDS) and counters["scps_conn_ids_shared"] == 1
    cfg = link.leg_config(TcpConfig(), 9)
    assert cfg.scps.conn_id == 9 and cfg.scps.snack and link.leg_config(TcpConfig(), 9) is not None


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_header_compression_when_both_boxes_offer_it(fam):
    up, down = os.urandom(100_000), os.urandom(300_000)

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, fam, compression=True)
            async with tb.pep_a() as a, tb.pep_b() as b:
                c = await tb.client.connect(tb.sa, 80)
                s = await tb.server.accept()
                got_up, got_down = await exchange(c, s, up, down)
                assert got_up == up and got_down == down
                for box in (a, b):
                    st = box.statistics()
                    assert st["scps_compressed_legs"] == 1 and st["hc_drop_checksum"] == 0
                    assert st["hc_drop_no_context"] == 0 and st["hc_expanded"] > 100
            n.cancel_scope.cancel()
        syns = tb.link.syns()
        assert [(d, ack, opt[0]) for d, ack, opt, _ in syns] == [("a->b", False, 0x50), ("b->a", True, 0x50)]
        after = tb.link.wire[2:]  # everything after the SYN and SYN-ACK
        both = {d for d, p in after if is_compressed(p)}
        assert both == {"a->b", "b->a"}
        # what could not be compressed went as plain TCP (the SYNs); nothing else on the link
        plain = [tcp_of(p) for d, p in after if not is_compressed(p)]
        assert all(p.flags & 0x02 == 0 for p in plain)
        assert len(plain) < len(after) / 10, (len(plain), len(after))

    run_virtual(main)


KEY_A = "00112233445566778899aabbccddeeff"
KEY_OTHER = "ffeeddccbbaa99887766554433221100"


def zero_rtt(key=KEY_A):
    return {"wan": {"zero_rtt": True, "tfo_key": key}}


async def timed_fetch(tb, request, size):
    """Open, send `request`, read `size` bytes: (virtual seconds from connect() to the
    last byte, bytes the server got, bytes the client got)."""
    t0 = trio.current_time()
    c = await tb.client.connect(tb.sa, 80, lport=42000 + len(request))
    await c.send_all(request)
    s = await tb.server.accept()
    got = await s.receive_some(1 << 16)
    await s.send_all(b"r" * size)
    await s.send_eof()
    body = await recv_all(c, size)
    return trio.current_time() - t0, got, body


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_zero_rtt_fetch_saves_a_link_round_trip(fam):
    request = b"GET /100k HTTP/1.0\r\n\r\n"
    out = {}

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, fam)
            async with tb.pep_a() as a, tb.pep_b() as b:
                out["plain"] = await timed_fetch(tb, request, 100_000)
            tb = TwoBoxLink(n, fam)
            async with tb.pep_a(**zero_rtt()) as a, tb.pep_b(**zero_rtt()) as b:
                out["0rtt"] = await timed_fetch(tb, request, 100_000)
                sa, sb = a.statistics(), b.statistics()
                assert (sa["zero_rtt_syn_data"], sa["zero_rtt_syn_data_acked"], sa["zero_rtt_no_data"]) == (1, 1, 0)
                assert (sb["zero_rtt_accepted"], sb["zero_rtt_syn_data"]) == (1, 0)
                assert sa["scps_peers"] == sb["scps_peers"] == 1
            n.cancel_scope.cancel()
        # the long leg's SYN carried the request (and option 20), its SYN-ACK nothing; with
        # zero_rtt each goes twice (first-flight redundancy, on by default with it); the far
        # box still held the client's SYN when the copy came, so it answered once (twice)
        syns = tb.link.syns()
        assert [(d, ack, opt is not None, plen) for d, ack, opt, plen in syns] == [
            ("a->b", False, True, len(request))] * 2 + [("b->a", True, True, 0)] * 2

    run_virtual(main)
    for name in out:
        assert out[name][1:] == (request, b"r" * 100_000), name
    # a link round trip is 40 ms: zero-RTT saves it (the client's SYN-ACK no longer
    # waits for the far end, the request no longer waits for the boxes' handshake, and
    # the far box answers in SYN-RECEIVED); what is left is one round trip plus the
    # transfer (100 KB at 20 Mbit/s = 40 ms, plus headers)
    saved = out["plain"][0] - out["0rtt"][0]
    assert 2 * ONE_WAY * 0.9 <= saved <= 2 * ONE_WAY * 1.1, out
    assert out["0rtt"][0] < 2 * ONE_WAY + 0.045, out


def test_zero_rtt_server_refuses_client_gets_reset():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n)
            # no listener on the server: its stack answers every SYN with RST
            tb.b_s.on_send = lambda pkt: tb.b_s.inject(reset_for(pkt)) if reset_for(pkt) else None
            async with tb.pep_a(**zero_rtt()) as a, tb.pep_b(**zero_rtt()) as b:
                c = await tb.client.connect(tb.sa, 80)  # answered by box A at once
                await c.send_all(b"hello")
                with pytest.raises(trio.BrokenResourceError):
                    await recv_all(c)
                await until(lambda: a.statistics()["ended_refused"] == 1)
                sa, sb = a.statistics(), b.statistics()
                # the far box relays the refusal as a RST to the SYN with option 20; the near
                # box's engine tries once more without the option, which is refused too, so
                # the far box is not taken for a stack that refuses option 20
                assert sb["ended_refused"] == 2 and sa["scps_fallbacks"] == 1
                assert (sa["scps_refusals_remembered"], sa["scps_refusals_cached"]) == (0, 0)
            n.cancel_scope.cancel()

    run_virtual(main)


def test_zero_rtt_far_end_without_our_key_gets_the_bytes_once():
    request = os.urandom(500)

    async def main():
        async with trio.open_nursery() as n:
            for other in ("box with another key", "plain server"):
                tb = TwoBoxLink(n, boxes=2 if other.startswith("box") else 1)
                async with tb.pep_a(**zero_rtt()) as a:
                    far = tb.pep_b(**zero_rtt(KEY_OTHER)) if tb.boxes == 2 else None
                    async with (far if far is not None else _nothing()) as b:
                        c = await tb.client.connect(tb.sa, 80)
                        await c.send_all(request)
                        await c.send_eof()
                        s = await tb.server.accept()
                        assert await recv_all(s) == request, other  # once, whole
                        await s.send_eof()
                        assert await recv_all(c) == b""
                        sa = a.statistics()
                        # a box with another key ignores the SYN's data (the bytes go again after
                        # the handshake); the plain server's stack (stackpep's engine) keeps SYN data
                        # as RFC 9293 §3.10.7.2 allows and acknowledges it in its SYN-ACK
                        want = (1, 1, 0) if tb.boxes == 2 else (1, 0, 1)
                        assert (sa["zero_rtt_syn_data"], sa["zero_rtt_syn_data_not_acked"],
                                sa["zero_rtt_syn_data_acked"]) == want, other
                        if b is not None:
                            assert b.statistics()["zero_rtt_accepted"] == 0
                syns = [(d, ack, plen) for d, ack, _, plen in tb.link.syns()]
                # each SYN twice (first-flight redundancy, on with zero_rtt); the far end
                # answered with the SYN-ACK (once or twice: a SYN still held is replaced)
                assert syns[:2] == [("a->b", False, 500)] * 2, (other, syns)
                assert syns[2:] in ([("b->a", True, 0)], [("b->a", True, 0)] * 2), (other, syns)
            n.cancel_scope.cancel()

    run_virtual(main)


class _nothing:
    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return False


def test_zero_rtt_server_speaks_first():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n)
            async with tb.pep_a(**zero_rtt()) as a, tb.pep_b(**zero_rtt()) as b:
                c = await tb.client.connect(tb.sa, 80)  # and waits for a greeting
                s = await tb.server.accept()
                await s.send_all(b"220 hello\r\n")
                assert await c.receive_some(100) == b"220 hello\r\n"
                assert a.statistics()["zero_rtt_no_data"] == 1
            n.cancel_scope.cancel()
        # no data in either SYN; each sent twice (first-flight redundancy, on with zero_rtt)
        assert [(d, plen) for d, _, _, plen in tb.link.syns()] == [("a->b", 0)] * 2 + [("b->a", 0)] * 2

    run_virtual(main)


def test_refusal_through_two_boxes_is_a_refusal_and_scps_stays():
    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n)
            real = tb.b_s.on_send
            tb.b_s.on_send = lambda pkt: tb.b_s.inject(reset_for(pkt)) if reset_for(pkt) else None
            async with tb.pep_a() as a, tb.pep_b() as b:
                with pytest.raises(trio.BrokenResourceError):
                    await tb.client.connect(tb.sa, 80, lport=40100)  # RST for its SYN
                sa = a.statistics()
                assert sa["ended_refused"] == 1 and sa["scps_refusals_cached"] == 0
                # the next connection still offers option 20 and finds the far box
                tb.b_s.on_send = real
                c = await tb.client.connect(tb.sa, 80, lport=40101)
                s = await tb.server.accept()
                assert await exchange(c, s, b"q", b"a") == (b"q", b"a")
                sa = a.statistics()
                assert (sa["scps_peers"], sa["scps_not_offered_refused"]) == (1, 0)
            n.cancel_scope.cancel()

    run_virtual(main)


# -- a relayed answer's tail on a GEO link (docs/BENCHMARKS-geo.md "The extra round trip") --
GEO_ONE_WAY = 0.3  # s: the testbed's GEO link, 600 ms RTT
HEADER = 156       # the testbed's HTTP server: its response header, written alone, then the body


async def relayed_answer(tb, gap=0.005):
    """A 100 KB fetch the way the testbed's http.server answers it: the header in one
    write, the body in the next.  `gap` (s) lets box B's pacer send the header before
    the body reaches it: a partial segment in the middle of the stream, as when a
    server's first burst ends mid-segment.  The connection stays open (keep-alive).
    Returns the (first byte, last byte) times at the client."""
    c = await tb.client.connect(tb.sa, 80, lport=43000)
    await c.send_all(b"GET /obj/100000 HTTP/1.1\r\n\r\n")
    s = await tb.server.accept()
    await s.receive_some(1 << 16)
    await s.send_all(b"h" * HEADER)
    await trio.sleep(gap)
    await s.send_all(b"b" * 100_000)
    # no FIN: an HTTP/1.1 server keeps the connection open after the answer, so
    # nothing but the rules below decides when the last partial segment leaves
    first = None
    got = 0
    while got < HEADER + 100_000:
        d = await c.receive_some(1 << 16)
        assert d
        if first is None:
            first = trio.current_time()
        got += len(d)
    return first, trio.current_time()


def b_to_a_data(tb):
    """(virtual time it entered the link, payload length) of each data segment box B
    sent towards A, in order (first transmissions only: no loss on this link)."""
    out = []
    for (d, p), t in zip(tb.link.wire, tb.link.sent_at):
        if d == "b->a":
            s = tcp_of(p)
            if s.payload_len:
                out.append((t, s.payload_len))
    return out


@pytest.mark.parametrize("fam", ["v4", "v6"])
@pytest.mark.parametrize("nagle", [None, True])
def test_relayed_tail_after_a_partial_segment_is_not_held_a_round_trip(fam, nagle):
    # The extra 600 ms of the testbed's slow 100 KB fetches (first byte on time, last
    # byte one link round trip late, at 0 % loss): box B sent a partial segment in the
    # middle of the answer (the header, or the end of the server's first burst, sent
    # before more data arrived), then the answer's partial tail; Nagle in Minshall's
    # form (RFC 9293 §3.7.4, as Linux) held the tail until that earlier small segment
    # was acknowledged -- a whole link round trip.  The [wan] leg runs without Nagle
    # (pep/config.py wan_leg_settings); `[tcp.client] nagle = true` on box B brings the
    # hold back, which is what this test shows exactly.
    geo = {"wan": {"rtt": 2 * GEO_ONE_WAY}}
    b_over = dict(geo, tcp={"client": {"nagle": True}}) if nagle else geo
    out = {}

    async def main():
        async with trio.open_nursery() as n:
            tb = TwoBoxLink(n, fam, one_way=GEO_ONE_WAY)
            async with tb.pep_a(**geo), tb.pep_b(**b_over):
                out["times"] = await relayed_answer(tb)
            n.cancel_scope.cancel()
        out["data"] = b_to_a_data(tb)

    run_virtual(main)
    first, last = out["times"]
    data = out["data"]
    mss = 1448 if fam == "v4" else 1428  # 1500 - IP header - 20 TCP - 12 timestamps
    # on the link: the header alone, full segments, and the body's remainder last
    assert data[0][1] == HEADER
    assert [ln for _, ln in data[1:-1]] == [mss] * (100_000 // mss)
    assert data[-1][1] == 100_000 % mss
    header_sent, (before_tail, _), (tail_sent, _) = data[0][0], data[-2], data[-1]
    # the body follows the header after the server's gap, paced at 20 Mbit/s
    assert data[1][0] - header_sent == pytest.approx(0.005, abs=1e-4)
    if nagle:
        # held until box A's ACK of the header came back: one round trip after it left
        assert tail_sent - header_sent >= 2 * GEO_ONE_WAY
        assert tail_sent - before_tail > 0.5
        assert last - first > 0.5 + 0.04
    else:
        # right behind the last full segment (the pacer's next slot: 1500 B at
        # 20 Mbit/s = 0.6 ms), long before any ACK could have come back
        assert tail_sent - before_tail < 0.0006
        # the whole answer within its serialization (100 KB at 20 Mbit/s = 42 ms)
        # after the first byte, not a round trip later
        assert last - first < 0.05
