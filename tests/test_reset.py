"""Unknown-flow resets: the RST itself (RFC 9293 §3.10.7.1, built by
the wire layer), the token buckets that limit them (RFC 5961 §7) and the record
of recently closed flows -- all sans-IO, on a virtual clock (µs integers)."""
import pytest

from stackpep.pep.config import check_dict
from stackpep.pep.reset import RecentlyClosed, ResetLimiter, ResetLimits, reset_for, source_of
from stackpep.wire import Segment, parse_packet

C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
C6 = bytes.fromhex("fd000001" + "00" * 11 + "02")
S6 = bytes.fromhex("fd000002" + "00" * 11 + "02")
SEC = 1_000_000


def seg(src, dst, flags, seq=1000, ack=0, payload=b""):
    s = Segment()
    s.ip_version = 4 if len(src) == 4 else 6
    s.src, s.dst, s.sport, s.dport = src, dst, 40000, 80
    s.flags, s.seq, s.ack, s.ttl, s.window = flags, seq, ack, 64, 1000
    return s.to_bytes(payload)


def test_rst_for_ack_takes_its_sequence_from_the_ack():
    r = parse_packet(reset_for(seg(C4, S4, 0x10, seq=5, ack=777)))  # verified checksums
    assert (r.src, r.dst, r.sport, r.dport, r.seq, r.ack, r.flags) == (S4, C4, 80, 40000, 777, 0, 0x04)


def test_rst_for_syn_or_fin_without_ack_counts_them_in_seg_len():
    # SEG.LEN = data bytes + SYN + FIN (RFC 9293 §3.10.7.1)
    r = parse_packet(reset_for(seg(C6, S6, 0x02, seq=100, payload=b"abc")))
    assert (r.ip_version, r.src, r.dst, r.seq, r.ack, r.flags) == (6, S6, C6, 0, 104, 0x14)
    r = parse_packet(reset_for(seg(C4, S4, 0x01, seq=0xFFFFFFFF, payload=b"ab")))
    assert (r.seq, r.ack, r.flags) == (0, 2, 0x14)  # wraps modulo 2**32


def test_rst_is_not_answered():
    assert reset_for(seg(C4, S4, 0x04)) is None


def test_rst_for_ipv6_with_destination_options_walks_the_chain():
    tcp = bytearray(seg(C6, S6, 0x10, seq=9, ack=4242)[40:])
    opt = bytes([6, 0, 1, 4, 0, 0, 0, 0])  # Destination Options: next header TCP, PadN (RFC 8200 §4.6)
    ip = bytearray(seg(C6, S6, 0x10)[:40])
    ip[4:6] = (len(opt) + len(tcp)).to_bytes(2, "big")
    ip[6] = 60
    pkt = bytes(ip) + opt + bytes(tcp)  # the TCP checksum does not cover the extension header
    assert parse_packet(pkt).ip_hdr_len == 48
    assert source_of(pkt) == C6
    r = parse_packet(reset_for(pkt))
    assert (r.src, r.dst, r.seq, r.flags, r.ip_hdr_len) == (S6, C6, 4242, 0x04, 40)


def test_token_buckets_per_source_and_overall_on_a_virtual_clock():
    lim = ResetLimiter(ResetLimits(rate=2, burst=4, per_source_rate=1, per_source_burst=2))
    a, b, c = b"\x01" * 4, b"\x02" * 4, b"\x03" * 4
    t = 10 * SEC
    assert [lim.allow(a, t) for _ in range(3)] == ["sent", "sent", "per_source"]
    assert [lim.allow(b, t) for _ in range(3)] == ["sent", "sent", "per_source"]
    assert lim.allow(c, t) == "total"  # c has tokens, the box has none
    # half a second: a has half a token, the box one
    assert lim.allow(a, t + SEC // 2) == "per_source"
    assert lim.allow(c, t + SEC // 2) == "sent"
    assert lim.allow(c, t + SEC // 2) == "total"
    # long idle: refilled to the bursts, never beyond
    t += 100 * SEC
    assert [lim.allow(a, t) for _ in range(3)] == ["sent", "sent", "per_source"]


def test_rate_zero_sends_nothing():
    lim = ResetLimiter(ResetLimits(rate=0, burst=1))
    assert [lim.allow(b"\x01" * 4, t * SEC) for t in range(3)] == ["sent", "total", "total"]


def test_source_buckets_are_bounded():
    lim = ResetLimiter(ResetLimits(max_sources=3))
    for i in range(10):
        lim.allow(bytes([i]) * 4, 0)
    assert list(lim.sources) == [bytes([i]) * 4 for i in (7, 8, 9)]


def test_recently_closed_expires_and_is_bounded():
    rc = RecentlyClosed(hold_us=2 * SEC, max_entries=2)
    rc.add(b"k1", True, 0)
    rc.add(b"k2", False, SEC)
    assert rc.get(b"k1", SEC) is True and rc.get(b"k2", SEC) is False
    assert rc.get(b"k1", 2 * SEC) is None  # held for exactly 2 s
    rc.add(b"k3", False, 2 * SEC)
    rc.add(b"k4", False, 2 * SEC)
    assert len(rc) == 2 and rc.get(b"k2", 2 * SEC) is None  # the oldest went first


def test_which_late_segments_are_dropped_silently():
    rc = RecentlyClosed(hold_us=SEC)
    rc.add(b"reset", True, 0)
    rc.add(b"closed", False, 0)
    data, ack, fin = seg(S4, C4, 0x18, payload=b"x"), seg(S4, C4, 0x10), seg(S4, C4, 0x11)
    assert rc.silent_drop(b"reset", data, 0x18, 10) and rc.silent_drop(b"reset", ack, 0x10, 10)
    assert rc.silent_drop(b"closed", ack, 0x10, 10)
    assert not rc.silent_drop(b"closed", data, 0x18, 10) and not rc.silent_drop(b"closed", fin, 0x11, 10)
    assert not rc.silent_drop(b"other", ack, 0x10, 10)
    assert not rc.silent_drop(b"reset", ack, 0x10, SEC)  # expired


BASE = {"interfaces": {"client": ["a"], "server": ["b"]}}


def test_resets_table_is_read_and_checked():
    cfg = check_dict({**BASE, "resets": {"rate": 50, "burst": 5, "per_source_rate": 0.5, "per_source_burst": 2,
                                         "recent_close_time": 0}}, "x", {})
    assert (cfg.reset_rate, cfg.reset_burst, cfg.reset_per_source_rate, cfg.reset_per_source_burst,
            cfg.recent_close_time) == (50.0, 5, 0.5, 2, 0.0)
    problems = check_dict({**BASE, "resets": {"rate": -1, "burst": 0, "per_source_rate": "x",
                                              "recent_close_time": 601, "nope": 1}}, "x", {})
    assert sorted(p.key for p in problems) == ["resets.burst", "resets.nope", "resets.per_source_rate",
                                               "resets.rate", "resets.recent_close_time"]
