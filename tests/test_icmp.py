"""ICMP errors for intercepted flows, without namespaces: parsing, the RFC 1191
plateau, the rate limit on a virtual clock, RFC 5927's sequence check on a real
engine, and the splitter over memory ports behind a narrow "router" that drops
what does not fit and answers Packet Too Big, in virtual time."""
import hashlib
import os
import struct

import pytest
import trio
import trio.testing

from stackpep._fast import tcp
from stackpep._fast.capture import ICMP_ERROR, flow_key, icmp_error_key
from stackpep.io.ports import MemoryPort, MemoryRouter
from stackpep.pep.api import open_pep
from stackpep.pep.config import from_dict
from stackpep.pep.icmp import (ICMP_COUNTERS, IcmpGuard, IcmpReject, TokenBucket, emit_icmp_error,
                               parse_icmp_error, plateau_mtu)
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.stream import EngineDriver, TcpStream

C4, S4, R4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2]), bytes([198, 18, 1, 1])
C6 = bytes.fromhex("fd000001" + "00" * 11 + "02")
S6 = bytes.fromhex("fd000002" + "00" * 11 + "02")
R6 = bytes.fromhex("fd000002" + "00" * 11 + "01")


def quote_of(pkt, v6):
    # what a router quotes: RFC 792 IPv4 header + 8 bytes; RFC 4443 as much as fits in 1280
    return bytes(pkt[:28]) if not v6 else bytes(pkt[:1280 - 48])


def established_pair(v6=False, mtu=1500):
    """Two engines joined back to back (a = the leg under test, b = its peer)."""
    la, ra = (S6, C6) if v6 else (S4, C4)
    a = tcp.TcpConnection(TcpConfig(mtu=mtu), la, 80, ra, 40000, 1000)
    b = tcp.TcpConnection(TcpConfig(), ra, 40000, la, 80, 2000)
    b.listen()
    a.connect(0)
    for _ in range(4):
        for p in a.packets_to_send(0):
            b.receive_packet(p, 0)
        for p in b.packets_to_send(0):
            a.receive_packet(p, 0)
    assert (a.state, b.state) == ("ESTABLISHED", "ESTABLISHED")
    return a, b


def tcp_seq(pkt):
    off = 40 if pkt[0] >> 4 == 6 else (pkt[0] & 15) * 4
    return struct.unpack_from("!I", pkt, off + 4)[0]


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize("v6", [False, True])
def test_ptb_parses_and_the_capture_files_it_under_the_quoted_flow(v6):
    a, _ = established_pair(v6)
    a.send(b"x" * 3000)
    seg = a.packets_to_send(0)[0]  # a leg with the client leg's roles: server address -> client
    r = R6 if v6 else R4
    icmp = emit_icmp_error(6 if v6 else 4, r, a.local_addr, 2 if v6 else 3, 0 if v6 else 4, quote_of(seg, v6),
                           mtu=1280 if v6 else 1400)
    err = parse_icmp_error(icmp, verify_checksum=True)
    assert err.packet_too_big and err.path_mtu() == (1280 if v6 else 1400)
    assert (err.quoted_src, err.quoted_sport, err.quoted_dst, err.quoted_dport) == (a.local_addr, 80, a.remote_addr,
                                                                                    40000)
    assert err.quoted_seq == tcp_seq(seg) == 1001
    # On a client-facing interface the capture reads the quote as server -> client
    # (a client-leg packet), on a server-facing one as client -> server.
    assert icmp_error_key(icmp, True) == flow_key(a.remote_addr, 40000, a.local_addr, 80)
    assert icmp_error_key(icmp, False) == flow_key(a.local_addr, 80, a.remote_addr, 40000)
    # one flipped bit: the capture drops it (bad checksum), the parser says why
    bad = bytearray(icmp)
    bad[-1] ^= 1
    assert icmp_error_key(bytes(bad), True) is None
    with pytest.raises(IcmpReject, match="checksum"):
        parse_icmp_error(bytes(bad), verify_checksum=True)


def test_quote_too_short_or_not_tcp_is_refused():
    udp_quote = bytearray(28)
    udp_quote[0], udp_quote[9] = 0x45, 17
    icmp = emit_icmp_error(4, R4, C4, 3, 1, bytes(udp_quote))
    assert icmp_error_key(icmp, False) is None
    with pytest.raises(IcmpReject) as e:
        parse_icmp_error(icmp)
    assert e.value.reason == "icmp_drop_malformed"
    # only the IPv4 header quoted: no ports, no SEQ
    tcp_quote = bytearray(28)
    tcp_quote[0], tcp_quote[9] = 0x45, 6
    assert icmp_error_key(emit_icmp_error(4, R4, C4, 3, 4, bytes(tcp_quote[:24]), mtu=1400), False) is None
    with pytest.raises(IcmpReject):
        parse_icmp_error(emit_icmp_error(4, R4, C4, 3, 4, bytes(tcp_quote[:24]), mtu=1400))


def test_next_hop_mtu_zero_takes_the_plateau_below_the_quoted_length():
    # RFC 1191 §5 and §7 (Table 7-1)
    assert [plateau_mtu(n) for n in (1500, 1492, 1493, 576, 69, 68, 20)] == [1492, 1006, 1492, 508, 68, 68, 68]
    a, _ = established_pair()
    a.send(b"x" * 3000)
    seg = a.packets_to_send(0)[0]
    assert len(seg) == 1500
    err = parse_icmp_error(emit_icmp_error(4, R4, S4, 3, 4, quote_of(seg, False), mtu=0))
    assert (err.mtu, err.path_mtu()) == (0, 1492)


# ---------------------------------------------------------------- the guard
def test_rate_limit_on_a_virtual_clock():
    b = TokenBucket(rate=10, burst=3)
    assert [b.allow(0) for _ in range(5)] == [True, True, True, False, False]
    assert b.allow(50_000) is False  # half a token
    assert b.allow(100_000) is True  # one token per 100 ms
    assert b.allow(100_000) is False
    assert [b.allow(10_000_000) for _ in range(4)] == [True, True, True, False]  # refilled to burst only
    counters = dict.fromkeys(ICMP_COUNTERS, 0)
    g = IcmpGuard(counters, rate=1, burst=2)
    assert [g.admit(0), g.admit(0), g.admit(0), g.admit(999_999), g.admit(1_000_000)] == [True, True, False, False,
                                                                                          True]
    assert counters["icmp_drop_rate_limited"] == 2


@pytest.mark.parametrize("v6", [False, True])
def test_quoted_seq_must_lie_in_snd_una_to_snd_nxt(v6):
    a, b = established_pair(v6)
    counters = dict.fromkeys(ICMP_COUNTERS, 0)
    g = IcmpGuard(counters)
    a.send(b"y" * 4000)
    segs = a.packets_to_send(0)
    assert [tcp_seq(p) for p in segs] == [1001, 1001 + a.statistics().mss, 1001 + 2 * a.statistics().mss]
    r, ver = (R6, 6) if v6 else (R4, 4)

    def err_for(seq_pkt, seq=None):
        q = bytearray(quote_of(seq_pkt, v6))
        if seq is not None:
            struct.pack_into("!I", q, 44 if v6 else 24, seq & 0xFFFFFFFF)
        return g.parse(emit_icmp_error(ver, r, a.local_addr, 3 if not v6 else 1, 1, bytes(q)))

    assert g.validate(err_for(segs[2]), a)  # in flight
    assert g.validate(err_for(segs[0], 1001 + 4000), a)  # = SND.NXT (Linux: between(seq, una, nxt))
    assert not g.validate(err_for(segs[0], 1001 + 4001), a)  # never sent
    assert not g.validate(err_for(segs[0], 1000 - 70000), a)  # long before
    assert counters["icmp_drop_stale_seq"] == 2
    # the first segment gets acknowledged: its SEQ is no longer in flight
    b.receive_packet(segs[0], 0)
    b.handle_timer(b.get_timer())  # its delayed ACK
    for p in b.packets_to_send(b.get_timer() or 0):
        a.receive_packet(p, 0)
    assert a.statistics().snd_una == 1001 + a.statistics().mss
    assert not g.validate(err_for(segs[0]), a)
    assert g.validate(err_for(segs[1]), a)
    assert counters["icmp_drop_stale_seq"] == 3


def test_quote_of_another_tuple_or_to_another_destination_is_refused():
    a, _ = established_pair()
    counters = dict.fromkeys(ICMP_COUNTERS, 0)
    g = IcmpGuard(counters)
    a.send(b"z" * 100)
    seg = bytearray(a.packets_to_send(0)[0])
    ok = g.parse(emit_icmp_error(4, R4, S4, 3, 1, quote_of(seg, False)))
    assert g.validate(ok, a)
    other = bytearray(seg)
    struct.pack_into("!H", other, 22, 40001)  # another client port
    assert not g.validate(g.parse(emit_icmp_error(4, R4, S4, 3, 1, quote_of(other, False))), a)
    assert counters["icmp_drop_wrong_tuple"] == 1
    # sent to someone else than the quoted packet's source (RFC 792: back to the source)
    assert g.parse(emit_icmp_error(4, R4, C4, 3, 1, quote_of(seg, False))) is None
    assert counters["icmp_drop_wrong_destination"] == 1


# ---------------------------------------------------------------- the splitter
def pep_config():
    return from_dict({"interfaces": {"client": ["c"], "server": ["s"]},
                      "intercept": {"prefixes": ["198.18.1.0/24", "fd00:2::/64"], "ports": [80]},
                      "handshake": {"timeout": 5.0}})


class NarrowBox:
    """client -- [narrow router] -- splitter -- [narrow router] -- server, in memory.
    A router drops what the box sends larger than `mtu` towards an end host and
    answers frag-needed / Packet Too Big to the packet's source, as Linux does."""

    def __init__(self, nursery, v6, client_mtu=None, server_mtu=None, ptb_mtu_field=None):
        self.v6 = v6
        self.ca, self.sa = (C6, S6) if v6 else (C4, S4)
        self.cport = MemoryPort("c", client_side=True)
        self.sport = MemoryPort("s", client_side=False)
        self.router = MemoryRouter([("198.18.0.0/24", self.cport), ("fd00:1::/64", self.cport),
                                    ("198.18.1.0/24", self.sport), ("fd00:2::/64", self.sport)])
        self.mtu = {"c": client_mtu, "s": server_mtu}
        self.ptb_mtu_field = ptb_mtu_field
        self.dropped = {"c": 0, "s": 0}
        self.largest_after_ptb = {"c": 0, "s": 0}
        self.nursery = nursery
        self.cport.on_send = lambda p: self._narrow("c", p)
        self.sport.on_send = lambda p: self._narrow("s", p)
        self.accepted = trio.open_memory_channel(10)
        self.client = self.server = None

    def _narrow(self, side, pkt):
        mtu = self.mtu[side]
        port = self.cport if side == "c" else self.sport
        if mtu is not None and len(pkt) > mtu:
            self.dropped[side] += 1
            field = mtu if self.ptb_mtu_field is None else self.ptb_mtu_field
            src = pkt[8:24] if self.v6 else pkt[12:16]
            router = (R6 if self.v6 else R4)
            port.inject(emit_icmp_error(6 if self.v6 else 4, router, bytes(src), 2 if self.v6 else 3,
                                        0 if self.v6 else 4, quote_of(pkt, self.v6), mtu=field))
            return
        if self.dropped[side]:
            self.largest_after_ptb[side] = max(self.largest_after_ptb[side], len(pkt))
        if side == "c":
            self.client.deliver(pkt)
        else:
            if self.server is None:
                conn = tcp.TcpConnection(TcpConfig(), self.sa, 80, self.ca, 40000, 777)
                self.server = EngineDriver(conn, self.sport.inject)
                self.server.listen()
                self.nursery.start_soon(self.server.run)
                self.accepted[0].send_nowait(TcpStream(self.server))
            self.server.deliver(pkt)

    async def connect(self):
        conn = tcp.TcpConnection(TcpConfig(), self.ca, 40000, self.sa, 80, 555)
        self.client = EngineDriver(conn, self.cport.inject)
        self.nursery.start_soon(self.client.run)
        self.client.connect()
        s = TcpStream(self.client)
        await s.wait_connected()
        return s

    async def accept(self):
        return await self.accepted[1].receive()


async def recv_n(stream, n):
    buf = bytearray()
    while len(buf) < n:
        d = await stream.receive_some(1 << 16)
        assert d, "EOF early"
        buf += d
    return bytes(buf)


def run_virtual(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("v6,mtu,field", [(False, 1400, None), (True, 1280, None), (False, 1400, 0)])
def test_split_connection_shrinks_each_leg_on_its_own_packet_too_big(v6, mtu, field):
    up, down = os.urandom(300_000), os.urandom(300_000)
    want = 1006 if field == 0 else mtu  # next-hop MTU 0: plateau below 1500 is 1492 > 1400; then 1006

    async def main():
        async with trio.open_nursery() as n:
            box = NarrowBox(n, v6, client_mtu=mtu, server_mtu=mtu, ptb_mtu_field=field)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                async with trio.open_nursery() as n2:
                    n2.start_soon(c.send_all, up)
                    n2.start_soon(s.send_all, down)
                    got_up = await recv_n(s, len(up))
                    got_down = await recv_n(c, len(down))
                assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
                assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
                st = pep.statistics()
            n.cancel_scope.cancel()
        assert box.dropped["c"] >= 1 and box.dropped["s"] >= 1
        # every packet after the first report fitted the path
        assert 0 < box.largest_after_ptb["c"] <= mtu and 0 < box.largest_after_ptb["s"] <= mtu
        if field == 0:
            # 1500 -> plateau 1492 (still too big) -> the router's next report: plateau below 1492
            assert box.largest_after_ptb["s"] <= want
            assert st["icmp_ptb_server_leg"] == 2 and st["icmp_ptb_client_leg"] == 2
        else:
            assert st["icmp_ptb_server_leg"] == 1 and st["icmp_ptb_client_leg"] == 1
        assert st["icmp_errors_in"] == box.dropped["c"] + box.dropped["s"]
        assert st["icmp_errors_in"] == (st["icmp_ptb_server_leg"] + st["icmp_ptb_client_leg"]
                                        + st["icmp_ptb_no_change"])
        assert {k: v for k, v in st.items() if k.startswith("icmp_drop_") and v} == {}

    run_virtual(main)


def test_soft_error_is_recorded_and_the_connection_goes_on_and_forgeries_are_counted():
    async def main():
        async with trio.open_nursery() as n:
            box = NarrowBox(n, False)
            sent_to_server = []
            orig = box.sport.on_send
            box.sport.on_send = lambda p: (sent_to_server.append(p), orig(p))
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                await c.send_all(b"a" * 5000)
                assert await recv_n(s, 5000) == b"a" * 5000
                # errors quoting the server leg's last packet
                last = sent_to_server[-1]
                conn = next(iter(pep.dispatcher.table.values()))
                leg = conn.legs[1].engine
                una = leg.statistics().snd_nxt  # = SND.UNA too once the last ACK is in
                q = bytearray(quote_of(last, False))
                struct.pack_into("!I", q, 24, una)
                box.sport.inject(emit_icmp_error(4, R4, C4, 3, 1, bytes(q)))  # host unreachable
                q2 = bytearray(q)
                struct.pack_into("!I", q2, 24, (una - 100000) & 0xFFFFFFFF)
                box.sport.inject(emit_icmp_error(4, R4, C4, 3, 1, bytes(q2)))  # stale
                box.sport.inject(emit_icmp_error(4, R4, S4, 3, 1, bytes(q)))  # not to the source
                q3 = bytearray(q)
                q3[16:20] = bytes([198, 18, 7, 7])  # a flow we do not intercept
                box.sport.inject(emit_icmp_error(4, R4, C4, 3, 1, bytes(q3)))
                q4 = bytearray(q)
                struct.pack_into("!H", q4, 20, 40099)  # intercepted, but no such connection
                box.sport.inject(emit_icmp_error(4, R4, C4, 3, 1, bytes(q4)))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["icmp_errors_in"] == 5
                assert (st["icmp_soft_error_server_leg"], st["icmp_drop_stale_seq"], st["icmp_drop_wrong_destination"],
                        st["icmp_drop_not_intercepted"], st["icmp_drop_unknown_flow"]) == (1, 1, 1, 1, 1)
                assert conn.last_soft_error == "server leg: host unreachable (ICMP 3/1) from 198.18.1.1"
                assert conn._soft_error_note() == \
                    " (last ICMP error: server leg: host unreachable (ICMP 3/1) from 198.18.1.1, 1 in all)"
                # not aborted: data still flows both ways
                await c.send_all(b"b" * 3000)
                assert await recv_n(s, 3000) == b"b" * 3000
                await s.send_all(b"c" * 3000)
                assert await recv_n(c, 3000) == b"c" * 3000
                assert conn.leg_states() == ["ESTABLISHED", "ESTABLISHED"]
            n.cancel_scope.cancel()

    run_virtual(main)
