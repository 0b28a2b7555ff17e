"""Issue 8 §4, wire conformance: a Repr reproduces the bytes it was parsed from,
IPv6 routing headers give the pseudo-header's final destination, the version
nibble agrees with the ethertype at every entry point, MTU 0 is estimated by
the RFC 1191 plateau table, every SNACK hole is kept, and a fragment that would
end beyond 65535 is an integrity error of its own."""
import ipaddress
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stackpep._fast import wire as w
from stackpep.wire import (
    EthernetFrame,
    EthernetRepr,
    IcmpPtbRepr,
    IntegrityError,
    Ipv4Repr,
    Ipv6Repr,
    ScpsCapabilities,
    SanityError,
    TcpFlags,
    TcpOptions,
    TcpRepr,
    counters,
    parse_frame,
    parse_frame_repr,
    parse_ip_tcp_repr,
    plateau_mtu,
    vectors,
)

ROOT = Path(__file__).resolve().parents[1] / "vectors" / "wire"
ALL = vectors.load_all(ROOT)
V = {v.name: v for v in ALL}
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reprs_to_bytes(ip, tcp):
    """Emit an (ip Repr, TcpRepr) pair the way a tool would."""
    buf = bytearray(ip.buffer_len() + tcp.buffer_len())
    n = ip.emit(buf)
    dst = ip.final_dst if ip.version == 6 else ip.dst
    tcp.emit(memoryview(buf)[n:], ip.src, dst)
    return bytes(buf)


# Every well-formed TCP vector; checksum-partial frames hold a pseudo-header sum,
# not a checksum, so emit (which fills a real one) cannot give their bytes back.
EXACT = [v for v in ALL if v.parser == "ip_tcp" and not v.error and v.verify_csum == 1]


def test_exact_set_covers_the_layouts_that_used_to_be_lost():
    names = {v.name for v in EXACT}
    assert {"tcp/v4-syn-accecn-ae", "scps/v4-syn-scps-extended-only", "options/v4-nonlinux-order",
            "options/v4-eol-then-garbage", "options/v4-unknown-kinds", "scps/v4-ack-two-snacks",
            "ipv6-ext/v6-routing-srh-segments-left", "ip/v4-with-ip-options", "link/eth-vlan"} <= names
    assert len(EXACT) >= 50


@pytest.mark.parametrize("vec", EXACT, ids=[v.name for v in EXACT])
def test_every_valid_vector_parses_and_emits_to_the_same_bytes(vec):
    if vec.layer == "eth":
        eth, ip, tcp = parse_frame_repr(vec.data)
        head = bytearray(eth.buffer_len())
        eth.emit(head)
        got = bytes(head) + _reprs_to_bytes(ip, tcp)
    else:
        ip, tcp = parse_ip_tcp_repr(vec.data)
        got = _reprs_to_bytes(ip, tcp)
    # link padding after the IP packet (eth-min-frame-padding) is not part of it
    assert got == vec.data[:len(got)] and len(vec.data) - len(got) == (6 if vec.name.endswith("padding") else 0)


def test_the_defects_named_in_the_issue():
    # AE (0x100) is kept on parse and emit
    _, tcp = parse_ip_tcp_repr(V["tcp/v4-syn-accecn-ae"].data)
    assert tcp.flags == TcpFlags.AE | TcpFlags.CWR | TcpFlags.ECE | TcpFlags.SYN
    # an extended SCPS option without the base form invents no bitmap / connection id
    _, tcp = parse_ip_tcp_repr(V["scps/v4-syn-scps-extended-only"].data)
    assert tcp.options.scps == ScpsCapabilities(None, None, bytes.fromhex("0110aabb"))
    assert not tcp.options.scps.has_capabilities and tcp.options.buffer_len() == 12
    # order: the non-Linux layout is kept as the layout, the canonical one is not
    _, tcp = parse_ip_tcp_repr(V["options/v4-nonlinux-order"].data)
    assert tcp.options.layout == V["options/v4-nonlinux-order"].data[40:64]
    assert (tcp.options.mss, tcp.options.timestamps, tcp.options.unknown) == (1460, (7, 8), ((99, b"\x42"),))
    _, _, tcp = parse_frame_repr(V["captured/v4-syn"].data)            # Linux layout
    assert tcp.options.layout is None


def test_a_changed_field_drops_the_layout_for_the_canonical_one():
    ip, tcp = parse_ip_tcp_repr(V["options/v4-nonlinux-order"].data)
    changed = replace(tcp, options=replace(tcp.options, mss=1400))
    pkt = _reprs_to_bytes(replace(ip, payload_len=changed.buffer_len()), changed)
    _, again = parse_ip_tcp_repr(pkt)
    assert again.options.mss == 1400 and again.options.layout is None
    assert again == replace(changed, options=replace(changed.options, layout=None))
    # MSS, NOP NOP TS, then unknown kind 99 EOL-padded: Linux's layout
    assert pkt[40:64] == bytes.fromhex("02040578" "0101080a0000000700000008" "630342" "00")


# ---- generated segments: independent builder, any option layout ----------------------
def _csum(data, init=0):
    if len(data) % 2:
        data += b"\0"
    s = init + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
UNKNOWN = st.integers(6, 255).filter(lambda k: k not in (8, 20, 21, 22, 23))


@st.composite
def option_items(draw):
    """One option's bytes, any kind the parser accepts (repeats allowed)."""
    kind = draw(st.sampled_from(["nop", "mss", "ws", "sackok", "ts", "sack", "scps", "scpsx", "snack", "rb",
                                 "ce", "unknown"]))
    if kind == "nop":
        return b"\x01"
    if kind == "mss":
        return struct.pack("!BBH", 2, 4, draw(st.integers(1, 0xFFFF)))
    if kind == "ws":
        return bytes([3, 3, draw(st.integers(0, 127))])
    if kind == "sackok":
        return b"\x04\x02"
    if kind == "ts":
        return struct.pack("!BBII", 8, 10, draw(u32), draw(u32))
    if kind == "sack":
        n = draw(st.integers(1, 3))
        return bytes([5, 2 + 8 * n]) + b"".join(struct.pack("!II", draw(u32), draw(u32)) for _ in range(n))
    if kind == "scps":
        return bytes([20, 4, draw(u8), draw(u8)])
    if kind == "scpsx":                       # extended capabilities: length 5..14
        d = draw(st.binary(min_size=3, max_size=12))
        return bytes([20, len(d) + 2]) + d
    if kind == "snack":
        return struct.pack("!BBHH", 21, 6, draw(u16), draw(u16))
    if kind == "rb":
        return b"\x16\x02"
    if kind == "ce":
        return b"\x17\x02"
    return (lambda d: bytes([draw(UNKNOWN), len(d) + 2]) + d)(draw(st.binary(max_size=6)))


@st.composite
def raw_segments(draw):
    """(src, dst, tcp bytes) built with struct: options in any order, NOP/EOL
    anywhere, bytes after EOL, AE and reserved bits."""
    opts = b"".join(draw(st.lists(option_items(), max_size=8)))
    assume(len(opts) <= 40)
    pad = (-len(opts)) % 4
    if draw(st.booleans()):
        # EOL, then anything up to the header's end (RFC 9293 §3.2 says zeros; kept as sent)
        pad = pad or 4
        opts += b"\x00" + draw(st.binary(min_size=pad - 1, max_size=pad - 1))
    else:
        opts += b"\x00" * pad
    assume(len(opts) <= 40)
    v6 = draw(st.booleans())
    a = (st.binary(min_size=16, max_size=16).filter(lambda b: b[0] != 0xFF) if v6
         else st.integers(0x01000000, 0xDFFFFFFF).map(lambda i: i.to_bytes(4, "big")))
    src, dst = draw(a), draw(a)
    flags = draw(u8.filter(lambda f: (f & 3) != 3 and (f & 6) != 6))
    hl = 20 + len(opts)
    seg = (struct.pack("!HHIIBBHHH", draw(st.integers(1, 0xFFFF)), draw(st.integers(1, 0xFFFF)), draw(u32),
                       draw(u32), (hl // 4) << 4 | draw(st.integers(0, 15)), flags, draw(u16), 0, draw(u16))
           + opts + draw(st.binary(max_size=40)))
    ph = (src + dst + struct.pack("!BBH", 0, 6, len(seg)) if not v6 else src + dst + struct.pack("!IxxxB", len(seg), 6))
    c = _csum(seg, sum(struct.unpack(f"!{len(ph) // 2}H", ph)))
    return src, dst, seg[:16] + struct.pack("!H", c) + seg[18:]


@PROPS
@given(raw_segments())
def test_generated_segments_parse_then_emit_to_the_same_bytes(case):
    src, dst, seg = case
    r = TcpRepr.parse(seg, src, dst)
    buf = bytearray(r.buffer_len())
    assert r.emit(buf, src, dst) == len(seg)
    assert bytes(buf) == seg
    assert TcpRepr.parse(buf, src, dst) == r


# ---- IPv6 routing header: the final destination (RFC 8200 §8.1) ----------------------
@pytest.mark.parametrize("name", ["ipv6-ext/v6-routing-srh-segments-left", "ipv6-ext/v6-routing-type2-home-address"])
def test_routing_header_final_destination_is_used_and_exposed(name):
    data = V[name].data
    s = w.parse_packet(data)
    final = ipaddress.ip_address("fd00:3::9").packed
    assert s.csum_status == 1 and s.final_dst == final and s.has_final_dst
    assert s.dst == ipaddress.ip_address("fd00:2::1").packed          # the header's address is unchanged
    ip, _ = parse_ip_tcp_repr(data)
    assert ip.final_dst == final
    seg = data[s.ip_hdr_len:]
    assert w.TcpSegment(seg).verify_checksum(s.src, s.final_dst)
    assert not w.TcpSegment(seg).verify_checksum(s.src, s.dst)


def test_routing_header_errors_are_counted_by_name():
    for name, err, counter in (("ipv6-ext/v6-routing-type0-segments-left", SanityError, "ipv6_routing_type"),
                               ("ipv6-ext/v6-routing-srh-left-past-last-entry", IntegrityError,
                                "ipv6_routing_malformed"),
                               ("checksum/v6-routing-checksum-over-header-dst", IntegrityError, "tcp_checksum")):
        counters.reset()
        with pytest.raises(err) as e:
            w.parse_packet(V[name].data)
        assert e.value.counter == counter and dict(counters.nonzero()) == {counter: 1}


# ---- version nibble vs ethertype: every entry point agrees ---------------------------
ENTRY_POINTS = [
    ("parse_frame", lambda f: parse_frame(f)),
    ("parse_frame_repr", lambda f: parse_frame_repr(f)),
    ("EthernetFrame", lambda f: EthernetFrame(f)),
    ("EthernetRepr", lambda f: EthernetRepr.parse(f)),
    ("Repr by ethertype", lambda f: (Ipv4Repr if EthernetFrame(f[:14]).ethertype == 0x0800 else Ipv6Repr).parse(
        f[14:])),
]


@pytest.mark.parametrize("vec", ["link/eth-ipv4-ethertype-ipv6-packet", "link/eth-ipv6-ethertype-ipv4-packet"])
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=[e[0] for e in ENTRY_POINTS])
def test_version_and_ethertype_must_agree_everywhere(vec, entry):
    counters.reset()
    with pytest.raises(IntegrityError) as e:
        entry[1](V[vec].data)
    assert e.value.counter == "ip_version_mismatch"
    assert dict(counters.nonzero()) == {"ip_version_mismatch": 1}


def test_a_matching_version_passes_every_entry_point():
    f = V["link/eth-vlan-v6"].data
    for _, parse in ENTRY_POINTS[:4]:
        parse(f)


# ---- ICMP frag-needed with MTU 0 (RFC 1191 §5) --------------------------------------
def test_plateau_table():
    # RFC 1191 §7: the largest plateau below the total length; 68 at the bottom
    assert [plateau_mtu(t) for t in (65536, 65535, 32001, 32000, 17915, 8167, 4353, 2003, 1500, 1493, 1492, 1007,
                                     576, 509, 297, 296, 100, 68, 0)] == [
        65535, 32000, 32000, 17914, 17914, 8166, 4352, 2002, 1492, 1492, 1006, 1006,
        508, 508, 296, 68, 68, 68, 68]


def test_mtu_zero_is_estimated_not_rejected():
    counters.reset()
    info = w.parse_ptb_ex(V["icmp/v4-frag-needed-mtu-0"].data)
    assert (info.mtu, info.mtu_field, info.mtu_estimated, info.quoted_total_len) == (1006, 0, True, 1452)
    assert (info.quoted.sport, info.quoted.dport, info.quoted.seq) == (40000, 443, 123456789)
    assert w.parse_ptb(V["icmp/v4-frag-needed-mtu-0"].data)[0] == 1006
    r = IcmpPtbRepr.parse(V["icmp/v4-frag-needed-mtu-0"].data)
    assert (r.mtu, r.next_hop_mtu, r.mtu_estimated) == (0, 1006, True)
    buf = bytearray(r.buffer_len())
    r.emit(buf)
    assert bytes(buf) == V["icmp/v4-frag-needed-mtu-0"].data          # the 0 is kept on the wire
    r = IcmpPtbRepr.parse(V["icmp/v4-frag-needed-min-quote"].data)
    assert (r.mtu, r.next_hop_mtu, r.mtu_estimated) == (1400, 1400, False)
    assert dict(counters.nonzero()) == {}


# ---- SNACK: every hole -----------------------------------------------------------
def test_every_snack_hole_is_kept():
    s = w.parse_packet(V["scps/v4-ack-two-snacks"].data)
    assert s.snack_holes == ((3, 2), (9, 4)) and s.snack == (3, 2)
    _, tcp = parse_ip_tcp_repr(V["scps/v4-ack-two-snacks"].data)
    assert tcp.options.snack == ((3, 2), (9, 4))
    # six SNACKs fill 36 of the 40 option bytes: the most a header holds, all kept
    opts = b"".join(struct.pack("!BBHH", 21, 6, i, i + 1) for i in range(6)) + b"\x01\x01\x01\x00"
    r = TcpRepr.parse(struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 15 << 4, 0x10, 5, 0, 0) + opts, verify_checksum=False)
    assert r.options.snack == tuple((i, i + 1) for i in range(6))


# ---- fragments past 65535 (RFC 791, RFC 8200 §4.5) ---------------------------------
@pytest.mark.parametrize("name", ["ip/v4-fragment-past-max", "ipv6-ext/v6-fragment-past-max"])
def test_fragment_past_65535_is_an_integrity_error_everywhere(name):
    data = V[name].data
    for parse in (lambda b: w.parse_packet(b), lambda b: w.parse_ip(b, 1),
                  lambda b: (Ipv4Repr if b[0] >> 4 == 4 else Ipv6Repr).parse(b)):
        counters.reset()
        with pytest.raises(IntegrityError) as e:
            parse(data)
        assert e.value.counter == "ip_fragment_past_max"
        assert dict(counters.nonzero()) == {"ip_fragment_past_max": 1}
    # one byte less and it is an ordinary (refused) fragment
    counters.reset()
    with pytest.raises(SanityError) as e:
        w.parse_packet(V["ip/v4-fragment-ends-at-max"].data)
    assert e.value.counter == "ip_fragment"


def test_tcp_options_repr_api():
    o = TcpOptions(snack=((1, 2), (3, 4)), scps=ScpsCapabilities(None, None, b"\x01\x10\xaa\xbb"))
    assert o.buffer_len() == 16 + 8
    with pytest.raises(ValueError):
        replace(o, scps=ScpsCapabilities(None, None, b"")).buffer_len()
