"""SYN-flood defences over in-memory ports, in virtual time (tests/test_splitter.py's
Box): the embryonic table evicts the oldest first (of the box, of a source, when
the table is full), server-leg opens are rate-limited per source and in total,
and handshake.mode "syn-cookie" answers SYNs without state and opens the server
leg only for a client whose ACK returns a valid cookie.  Plus the cookie itself
(SipHash-2-4 reference vectors, expiry, tampering) and the EmbryonicTable."""
import os

import pytest
import trio

from stackpep._fast.syncookie import COOKIE_PERIOD_US, MSS_TABLE, SynCookies, siphash
from stackpep.pep.admission import EVICT_GRACE_US, EmbryonicTable, source_prefix
from stackpep.pep.api import open_pep
from stackpep.tcp.config import TcpConfig
from stackpep.wire import parse_packet


def _splitter_tests():
    # the in-memory Box of tests/test_splitter.py (--import-mode=importlib: loaded by path)
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_test_splitter_box", Path(__file__).with_name("test_splitter.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_ts = _splitter_tests()
C4, S4, C6, S6, Box, pep_config, recv_all, run_virtual, seg = (_ts.C4, _ts.S4, _ts.C6, _ts.S6, _ts.Box, _ts.pep_config,
                                                               _ts.recv_all, _ts.run_virtual, _ts.seg)

SYN, RST, ACK = 0x02, 0x04, 0x10


def spoofed(i, sport=1024, dport=80):
    """A SYN from a source nobody owns (198.18.0.100 + i: routed to the client port)."""
    return seg(bytes([198, 18, 0, 100 + i]), sport, S4, dport, SYN, 1000 + i, 0)


def syns_to_server(box):
    return [p for p in box.server_wire if parse_packet(p, 0).flags == SYN]


# ------------------------------------------------------------------ the cookie
def test_siphash_reference_vectors():
    # SipHash paper (Aumasson, Bernstein 2012) appendix A: key 00..0f, messages 00..(n-1)
    key = bytes(range(16))
    assert siphash(key, b"") == 0x726FDB47DD0E0E31
    assert siphash(key, bytes(range(15))) == 0xA129CA6149BE45E5
    assert siphash(key, bytes(range(8))) == 0x93F5F5799A932462


def test_cookie_round_trip_expiry_and_tampering():
    sc = SynCookies(bytes(range(16)))
    c, s = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
    now = 1000 * COOKIE_PERIOD_US + 5
    ck = sc.make(c, s, 40000, 80, 0x12345678, 1460, 7, True, True, now)
    assert sc.check(c, s, 40000, 80, 0x12345678, ck, now) == (1460, 7, True, True)
    # valid while its period is the current one or up to MAX_AGE (2) older
    assert sc.check(c, s, 40000, 80, 0x12345678, ck, now + 2 * COOKIE_PERIOD_US) == (1460, 7, True, True)
    assert sc.check(c, s, 40000, 80, 0x12345678, ck, now + 3 * COOKIE_PERIOD_US) == "expired"
    # another client ISN, port, address or secret: not ours
    assert sc.check(c, s, 40000, 80, 0x12345679, ck, now) == "invalid"
    assert sc.check(c, s, 40001, 80, 0x12345678, ck, now) == "invalid"
    assert sc.check(bytes([198, 18, 0, 3]), s, 40000, 80, 0x12345678, ck, now) == "invalid"
    assert SynCookies(bytes(16)).check(c, s, 40000, 80, 0x12345678, ck, now) == "invalid"
    # what the cookie keeps: MSS rounded down to the table, no window scaling, no SACK/TS
    c6, s6 = bytes.fromhex("fd000001" + "00" * 11 + "02"), bytes.fromhex("fd000002" + "00" * 11 + "02")
    ck = sc.make(c6, s6, 1, 2, 7, 1439, None, False, False, now)
    assert sc.check(c6, s6, 1, 2, 7, ck, now) == (1400, None, False, False)
    ck = sc.make(c, s, 1, 2, 7, 100, 14, False, True, now)
    assert sc.check(c, s, 1, 2, 7, ck, now) == (MSS_TABLE[0], 14, False, True)


def test_embryonic_table_oldest_first_per_source():
    t = EmbryonicTable()
    a, b = source_prefix(bytes([198, 18, 0, 2])), source_prefix(bytes.fromhex("fd000001" + "00" * 11 + "02"))
    assert b == bytes.fromhex("fd00000100000000")  # IPv6: the /64
    t.add(b"k1", "c1", a)
    t.add(b"k2", "c2", b)
    t.add(b"k3", "c3", a)
    assert (len(t), t.count(a), t.count(b)) == (3, 2, 1)
    assert t.oldest() == "c1" and t.oldest(b) == "c2" and t.oldest(a) == "c1"
    t.discard(b"k1", "someone else")  # only the connection's own entry
    assert t.oldest() == "c1"
    t.discard(b"k1", "c1")
    assert t.oldest() == "c2" and t.oldest(a) == "c3" and t.count(a) == 1
    t.discard(b"k2")
    assert t.oldest(b) is None and t.sources() == 1


class _Emb:
    def __init__(self, name, awaits_peer, created=0):
        self.name, self.awaits_peer, self.created = name, awaits_peer, created


def test_embryonic_victim_is_the_oldest_whose_syn_ack_is_unanswered():
    """max_embryonic evicts, among the `scan` oldest, the oldest that holds an
    unanswered SYN-ACK (a spoofed source), not a real client waiting on a slow
    server; with none such within the scan, the oldest."""
    t = EmbryonicTable()
    src = source_prefix(bytes([198, 18, 0, 2]))
    waiting = [_Emb(f"w{i}", False) for i in range(3)]
    for i, c in enumerate(waiting):
        t.add(b"w%d" % i, c, src)
    spoofed_ = _Emb("s0", True)
    t.add(b"s0", spoofed_, src)
    t.add(b"s1", _Emb("s1", True), src)
    now = EVICT_GRACE_US
    assert t.oldest().name == "w0"
    assert t.victim(now).name == "s0"
    assert t.victim(now, scan=3).name == "w0"  # not within the scan: the oldest
    t.discard(b"s0")
    assert t.victim(now).name == "s1"
    t.discard(b"s1")
    assert t.victim(now).name == "w0"
    assert EmbryonicTable().victim(now) is None


def test_embryonic_victim_has_had_its_grace_period():
    """No embryonic connection younger than EVICT_GRACE_US is evicted (a burst of
    SYNs read in one batch would push out the real client whose SYN came just
    before it): the oldest old enough, awaiting its peer first; else none."""
    t = EmbryonicTable()
    src = source_prefix(bytes([198, 18, 0, 2]))
    t.add(b"a", _Emb("a", False, created=1_000), src)
    t.add(b"b", _Emb("b", True, created=2_000), src)
    t.add(b"c", _Emb("c", True, created=3_000), src)
    assert t.victim(1_000 + EVICT_GRACE_US - 1) is None
    assert t.victim(1_000 + EVICT_GRACE_US).name == "a"  # b is still within its grace
    assert t.victim(2_000 + EVICT_GRACE_US).name == "b"  # awaiting its peer: before a
    assert t.victim(2_000 + EVICT_GRACE_US, grace_us=EVICT_GRACE_US + 1).name == "a"


# ------------------------------------------------------------- eviction, limits
def silent_box_config(**limits):
    return pep_config(limits=limits, handshake={"timeout": 30.0})


def test_full_embryonic_table_evicts_the_oldest_first():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="silent")
            async with open_pep(silent_box_config(max_embryonic=3), ports=[box.cport, box.sport],
                                router=box.router) as pep:
                for i in range(5):  # one a second: 0 is the oldest
                    box.cport.inject(spoofed(i))
                    await trio.sleep(1)
                st = pep.statistics()
                assert st["connections_opened"] == 5
                assert st["evicted_embryonic"] == 2 and st["ended_evicted"] == 2
                assert st["connections_embryonic"] == 3 and st["connections_active"] == 3
                # the three newest are left; the evicted ones' server legs stopped retransmitting
                left = sorted(k[3] for k in (c.client_addr for c in pep.dispatcher.table.values()))
                assert left == [102, 103, 104]
                before = len(syns_to_server(box))
                await trio.sleep(10)
                later = {parse_packet(p, 0).src[3] for p in syns_to_server(box)[before:]}
                assert later == {102, 103, 104}
            n.cancel_scope.cancel()

    run_virtual(main)


def test_per_source_limit_evicts_that_source_oldest_only():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="silent")
            cfg = silent_box_config(max_embryonic=100, max_embryonic_per_source=2)
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                box.cport.inject(spoofed(0, sport=1000))  # another source, older than all
                await trio.sleep(0.5)
                for p in range(3):
                    box.cport.inject(spoofed(1, sport=2000 + p))
                    await trio.sleep(0.5)
                st = pep.statistics()
                assert st["evicted_embryonic_per_source"] == 1 and st["evicted_embryonic"] == 0
                left = sorted((c.client_addr[3], c.client_port) for c in pep.dispatcher.table.values())
                assert left == [(100, 1000), (101, 2001), (101, 2002)]
            n.cancel_scope.cancel()

    run_virtual(main)


def test_full_table_evicts_embryonic_not_established():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(limits={"max_connections": 2}), ports=[box.cport, box.sport],
                                router=box.router) as pep:
                c = await box.connect(40000)  # established both ways
                s = await box.accept()
                # spoofed: the server accepts, but the client leg's SYN-ACK goes to nobody
                box.cport.inject(spoofed(0))  # embryonic
                await trio.sleep(0.5)
                box.cport.inject(spoofed(1))  # the table is full: the embryonic one goes
                await trio.sleep(0.5)
                st = pep.statistics()
                assert st["evicted_embryonic_table_full"] == 1 and st["drop_table_full"] == 0
                assert sorted(c.client_addr[3] for c in pep.dispatcher.table.values()) == [2, 101]
                await c.send_all(b"still here")
                assert await s.receive_some(100) == b"still here"
            n.cancel_scope.cancel()

    run_virtual(main)


@pytest.mark.parametrize("which", ["per_source", "total"])
def test_server_open_rate_is_bounded(which):
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="silent")
            lim = ({"server_opens_per_second_per_source": 2} if which == "per_source"
                   else {"server_opens_per_second": 3})
            async with open_pep(silent_box_config(**lim), ports=[box.cport, box.sport], router=box.router) as pep:
                for i in range(10):  # at one instant; per source: all from one address
                    box.cport.inject(spoofed(0 if which == "per_source" else i, sport=3000 + i))
                await trio.sleep(0.1)
                allowed = 2 if which == "per_source" else 3
                st = pep.statistics()
                assert st["connections_opened"] == allowed
                assert st[f"drop_server_open_rate_{which}"] == 10 - allowed
                assert len(syns_to_server(box)) == allowed
                # a second later the bucket holds one second's worth again
                await trio.sleep(1.0)
                for i in range(10):
                    box.cport.inject(spoofed(0 if which == "per_source" else i, sport=4000 + i))
                await trio.sleep(0.1)
                assert pep.statistics()["connections_opened"] == 2 * allowed
            n.cancel_scope.cancel()

    run_virtual(main)


# -------------------------------------------------------------------- syn-cookie
def cookie_config(**over):
    return pep_config(handshake={"mode": "syn-cookie"}, **over)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_syn_cookie_mode_data_both_ways(fam):
    ca, sa = (C4, S4) if fam == "v4" else (C6, S6)
    up, down = os.urandom(100_000), os.urandom(150_000)

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, ca, sa)
            async with open_pep(cookie_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                # the client is established before the box asked the server anything
                assert box.server_wire == []
                await c.send_all(up)
                s = await box.accept()
                assert await recv_all(s, len(up)) == up
                await s.send_all(down)
                await s.send_eof()
                assert await recv_all(c) == down
                await c.send_eof()
                assert await s.receive_some(10) == b""
                st = pep.statistics()
                assert (st["syncookies_sent"], st["syncookies_valid"], st["connections_opened"]) == (1, 1, 1)
                # the SYN-ACK's ISN was the cookie, and the client leg kept it
                synack = [parse_packet(p, 0) for p in box.client_wire if parse_packet(p, 0).flags == SYN | ACK]
                assert len(synack) == 1
                conn = next(iter(pep.dispatcher.table.values()))
                assert conn.cookie[0] == synack[0].seq
            n.cancel_scope.cancel()

    run_virtual(main)


def test_syn_cookie_mode_spoofed_syns_open_nothing():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(cookie_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                for i in range(50):
                    box.cport.inject(spoofed(i % 100, sport=5000 + i))
                await trio.sleep(1)
                st = pep.statistics()
                assert st["syncookies_sent"] == 50
                assert st["connections_opened"] == 0 and len(pep.dispatcher.table) == 0
                assert box.server_wire == []  # the server saw nothing at all
                answers = [parse_packet(p, 0) for p in box.client_wire]
                assert len(answers) == 50 and {a.flags for a in answers} == {SYN | ACK}
                # an ACK that does not return a cookie of ours: an unknown flow (RST), counted
                a = answers[0]
                box.cport.inject(seg(a.dst, a.dport, a.src, a.sport, ACK, 1001, (a.seq + 1 + (1 << 20)) & 0xFFFFFFFF))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["syncookie_drop_invalid"] == 1 and st["connections_opened"] == 0
                assert st["drop_unknown_flow"] == 1 and box.server_wire == []
                # the right one opens the split connection and only then the server leg
                box.server_mode = "silent"
                box.cport.inject(seg(a.dst, a.dport, a.src, a.sport, ACK, 1001, (a.seq + 1) & 0xFFFFFFFF))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["syncookies_valid"] == 1 and st["connections_opened"] == 1
                assert len(syns_to_server(box)) == 1
            n.cancel_scope.cancel()

    run_virtual(main)


def test_syn_cookie_mode_refused_server_resets_the_established_client():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="refuse")
            async with open_pep(cookie_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                assert c.driver.connected
                with pytest.raises(trio.BrokenResourceError):
                    await c.receive_some(10)
                assert pep.statistics()["ended_refused"] == 1
            n.cancel_scope.cancel()

    run_virtual(main)
