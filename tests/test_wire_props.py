"""Property tests of the wire layer (hypothesis):
  * parse(emit(x)) == x for every Repr;
  * packets built by scapy (an independent implementation) parse to the same
    fields and checksums, and scapy agrees with what we emit;
  * random and mutated bytes never crash a parser: only WireError comes out.
"""
import ipaddress
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stackpep._fast import wire as w
from stackpep.wire import (
    EthernetRepr,
    IcmpPtbRepr,
    IntegrityError,
    Ipv4Repr,
    Ipv6ExtHeader,
    Ipv6Repr,
    ScpsCapabilities,
    TcpOptions,
    TcpRepr,
    WireError,
    parse_ip_tcp_repr,
)

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.layers.inet import IP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
KNOWN_KINDS = {0, 1, 2, 3, 4, 5, 8, 20, 21, 22, 23, 34}
unknown_kind = st.integers(6, 255).filter(lambda k: k not in KNOWN_KINDS)

# unicast, non-multicast addresses (sanity rules reject multicast for TCP)
addr4 = st.integers(0x01000000, 0xDFFFFFFF).map(lambda i: i.to_bytes(4, "big"))
addr6 = st.binary(min_size=16, max_size=16).filter(lambda b: b[0] != 0xFF)


@st.composite
def tcp_options(draw):
    unknown = tuple(draw(st.lists(st.tuples(unknown_kind, st.binary(max_size=6)), max_size=3)))
    o = TcpOptions(
        mss=draw(st.none() | st.integers(1, 0xFFFF)),
        window_scale=draw(st.none() | st.integers(0, 14)),
        sack_permitted=draw(st.booleans()),
        timestamps=draw(st.none() | st.tuples(u32, u32)),
        sack_blocks=tuple(draw(st.lists(st.tuples(u32, u32), max_size=4))),
        scps=draw(st.none() | st.builds(ScpsCapabilities, u8, u8,
                                        st.just(b"") | st.binary(min_size=3, max_size=12))
                  | st.builds(ScpsCapabilities, st.none(), st.none(), st.binary(min_size=3, max_size=12))),
        snack=tuple(draw(st.lists(st.tuples(u16, u16), max_size=4))),
        record_boundary=draw(st.booleans()),
        corruption_experienced=draw(st.booleans()),
        fast_open=draw(st.none() | st.just(b"") | st.binary(min_size=4, max_size=8)),
        unknown=unknown,
    )
    assume(sum(len(d) + 2 for _, d in unknown) <= 40)
    assume(o.buffer_len() <= 40)
    return o


flags = u8.filter(lambda f: (f & 0x03) != 0x03 and (f & 0x06) != 0x06)
flags12 = st.tuples(flags, st.integers(0, 0xF)).map(lambda t: t[0] | t[1] << 8)   # + AE and reserved bits


@st.composite
def tcp_reprs(draw):
    return TcpRepr(draw(st.integers(1, 0xFFFF)), draw(st.integers(1, 0xFFFF)), draw(u32), draw(u32), draw(flags12),
                   draw(u16), draw(u16), draw(tcp_options()), draw(st.binary(max_size=64)))


@PROPS
@given(tcp_reprs(), st.booleans(), st.data())
def test_tcp_repr_round_trip(r, v6, data):
    src, dst = (data.draw(addr6), data.draw(addr6)) if v6 else (data.draw(addr4), data.draw(addr4))
    buf = bytearray(r.buffer_len())
    assert r.emit(buf, src, dst) == len(buf)
    assert TcpRepr.parse(buf, src, dst) == r
    assert w.TcpSegment(buf).verify_checksum(src, dst)


@PROPS
@given(tcp_reprs(), st.booleans(), st.data())
def test_segment_emit_ip_tcp_round_trip(r, v6, data):
    """emit_ip_tcp -> parse_ip_tcp gives back every field (the C contract)."""
    s = r._segment()
    s.ip_version = 6 if v6 else 4
    s.src = data.draw(addr6 if v6 else addr4)
    s.dst = data.draw(addr6 if v6 else addr4)
    s.ttl, s.tos = data.draw(u8), data.draw(u8)
    if v6:
        s.flow_label = data.draw(st.integers(0, 0xFFFFF))
    else:
        s.ip_ident, s.ip_df = data.draw(u16), data.draw(st.booleans())
    pkt = s.to_bytes(r.payload)
    p = w.parse_packet(pkt)
    assert p.csum_status == 1
    ip, tcp = parse_ip_tcp_repr(pkt)
    assert tcp == r
    for name in ("ip_version", "src", "dst", "ttl", "tos", "flow_label" if v6 else "ip_ident"):
        assert getattr(p, name) == getattr(s, name), name
    assert p.payload_len == len(r.payload) and p.payload == r.payload
    assert p.to_bytes(p.payload) == pkt


@PROPS
@given(addr4, addr4, u8, st.integers(0, 64), u8, st.integers(0, 63), st.integers(0, 3), u16, st.booleans(),
       st.booleans(), st.integers(0, 0x1FFF), st.integers(0, 10).map(lambda n: bytes(range(4 * n))))
def test_ipv4_repr_round_trip(src, dst, proto, plen, ttl, dscp, ecn, ident, df, mf, off, opts):
    r = Ipv4Repr(src, dst, proto, plen, ttl, dscp, ecn, ident, df, mf, off, opts)
    buf = bytearray(r.buffer_len() + plen)
    assert r.emit(buf) == r.buffer_len()
    if r.is_fragment and off * 8 + plen > 0xFFFF:      # RFC 791: no datagram holds it
        with pytest.raises(IntegrityError) as e:
            Ipv4Repr.parse(buf)
        assert e.value.counter == "ip_fragment_past_max"
        return
    assert Ipv4Repr.parse(buf) == r
    v = w.Ipv4Packet(buf)
    assert v.verify_checksum() and v.is_fragment == r.is_fragment


@st.composite
def routing_bodies(draw):
    """Routing header bodies (after next-header and length) the parser reads:
    any type with segments left 0, SRH (RFC 8754 §2) and type 2 (RFC 6275 §6.4)."""
    kind = draw(st.sampled_from(["idle", "srh", "mip6"]))
    if kind == "idle":
        n = draw(st.integers(0, 3))
        return bytes([draw(u8), 0]) + draw(st.binary(min_size=4 + 8 * n, max_size=4 + 8 * n))
    if kind == "mip6":
        return bytes([2, 1]) + bytes(4) + draw(addr6)
    n = draw(st.integers(1, 3))
    return (bytes([4, draw(st.integers(0, n)), n - 1, draw(u8)]) + draw(st.binary(min_size=2, max_size=2))
            + b"".join(draw(addr6) for _ in range(n)))


@st.composite
def ext_headers(draw):
    kinds = draw(st.lists(st.sampled_from([43, 60, 51, 44]), max_size=4))
    if draw(st.booleans()):
        kinds = [0] + kinds
    out = []
    for i, k in enumerate(kinds):
        last = i == len(kinds) - 1
        if k == 44:
            off = draw(st.integers(0, 0x1FFF)) if last else 0
            more = draw(st.booleans()) if last else False
            data = ((off << 3) | more).to_bytes(2, "big") + draw(u32).to_bytes(4, "big")
        elif k == 51:
            data = draw(st.binary(min_size=6, max_size=30).filter(lambda b: (len(b) + 2) % 4 == 0))
        elif k == 43:
            data = draw(routing_bodies())
        else:
            data = draw(st.integers(0, 3).flatmap(lambda n: st.binary(min_size=6 + 8 * n, max_size=6 + 8 * n)))
        out.append(Ipv6ExtHeader(k, data))
    return tuple(out)


@PROPS
@given(addr6, addr6, st.sampled_from([6, 17, 58, 59, 50, 132]), st.integers(0, 64), u8, u8,
       st.integers(0, 0xFFFFF), ext_headers())
def test_ipv6_repr_round_trip(src, dst, nh, plen, hlim, tc, flow, exts):
    r = Ipv6Repr(src, dst, nh, plen, hlim, tc, flow, exts)
    assume(r.buffer_len() - 40 + plen > 0 or nh != 0)
    buf = bytearray(r.buffer_len() + plen)
    assert r.emit(buf) == r.buffer_len()
    frag = r.fragment
    if r.is_fragment:
        # RFC 8200 §4.5: per-fragment headers + offset*8 + fragment data <= 65535
        i = next(i for i, h in enumerate(exts) if h.kind == 44)
        unfrag = sum(h.buffer_len() for h in exts[:i])
        if unfrag + frag[0] * 8 + plen > 0xFFFF:
            with pytest.raises(IntegrityError) as e:
                Ipv6Repr.parse(buf)
            assert e.value.counter == "ip_fragment_past_max"
            return
    assert Ipv6Repr.parse(buf) == r
    assert w.parse_ip(buf, 0)["final_dst"] == r.final_dst      # the C walk and the Repr agree
    v = w.Ipv6Packet(buf)
    assert (v.traffic_class, v.flow_label, v.hop_limit) == (tc, flow, hlim)


@PROPS
@given(st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6),
       u16.filter(lambda t: t not in (0x8100, 0x88A8)), st.none() | u16)
def test_ethernet_repr_round_trip(dst, src, et, tci):
    r = EthernetRepr(dst, src, et, tci)
    buf = bytearray(r.buffer_len() + 4)
    buf[r.buffer_len()] = {0x0800: 0x45, 0x86DD: 0x60}.get(et, 0)   # the IP version the ethertype names
    assert r.emit(buf) == r.buffer_len()
    assert EthernetRepr.parse(buf) == r


@PROPS
@given(st.booleans(), tcp_reprs(), st.data())
def test_icmp_ptb_repr_round_trip(v6, inner, data):
    a = addr6 if v6 else addr4
    s = inner._segment()
    s.ip_version, s.src, s.dst = (6 if v6 else 4), data.draw(a), data.draw(a)
    orig = s.to_bytes(inner.payload)
    ihl = 40 if v6 else 20
    quote = orig[:data.draw(st.integers(ihl + 8, len(orig)))]
    mtu = data.draw(st.integers(1280, 0xFFFFFFFF) if v6 else st.just(0) | st.integers(68, 0xFFFF))
    r = IcmpPtbRepr(6 if v6 else 4, data.draw(a), data.draw(a), mtu, quote, data.draw(u8), data.draw(u8),
                    0 if v6 else data.draw(u16), data.draw(st.integers(0, 0xFFFFF)) if v6 else 0)
    buf = bytearray(r.buffer_len())
    assert r.emit(buf) == len(buf)
    assert IcmpPtbRepr.parse(buf) == r
    q = r.quoted
    assert (q.sport, q.dport, q.seq, q.src, q.dst) == (inner.src_port, inner.dst_port, inner.seq, s.src, s.dst)
    info = w.parse_ptb_ex(buf)
    assert (info.mtu, info.mtu_field, info.mtu_estimated) == (r.next_hop_mtu, mtu, r.mtu_estimated)
    if r.mtu_estimated:                 # RFC 1191 §5: the plateau below the quoted total length
        assert r.next_hop_mtu == w.plateau_mtu(len(orig)) and r.next_hop_mtu < max(len(orig), 69)


# ---- against scapy ---------------------------------------------------------------------
@st.composite
def scapy_packets(draw):
    v6 = draw(st.booleans())
    opts = []
    if draw(st.booleans()):
        opts.append(("MSS", draw(st.integers(1, 0xFFFF))))
    if draw(st.booleans()):
        opts.append(("SAckOK", b""))
    if draw(st.booleans()):
        opts.append(("Timestamp", (draw(u32), draw(u32))))
    if draw(st.booleans()):
        opts.append(("WScale", draw(st.integers(0, 14))))
    if draw(st.booleans()):
        opts.append(("SAck", tuple(draw(st.lists(u32, min_size=2, max_size=6).filter(lambda x: len(x) % 2 == 0)))))
    draw(st.randoms()).shuffle(opts)
    if sum({"MSS": 4, "SAckOK": 2, "Timestamp": 10, "WScale": 3}.get(k, 2 + 4 * len(v) if k == "SAck" else 0)
           for k, v in opts) > 40:
        opts = opts[:2]
    ip = (IPv6(src=str(ipaddress.IPv6Address(draw(addr6))), dst=str(ipaddress.IPv6Address(draw(addr6))),
               tc=draw(u8), fl=draw(st.integers(0, 0xFFFFF)), hlim=draw(u8)) if v6 else
          IP(src=str(ipaddress.IPv4Address(draw(addr4))), dst=str(ipaddress.IPv4Address(draw(addr4))),
             tos=draw(u8), ttl=draw(u8), id=draw(u16), flags="DF" if draw(st.booleans()) else 0))
    tcp = TCP(sport=draw(st.integers(1, 0xFFFF)), dport=draw(st.integers(1, 0xFFFF)), seq=draw(u32), ack=draw(u32),
              flags=draw(flags), window=draw(u16), urgptr=draw(u16), options=opts)
    return ip / tcp / draw(st.binary(max_size=200))


@PROPS
@given(scapy_packets())
def test_scapy_packets_parse_to_the_same_fields_and_checksums(pkt):
    raw = bytes(pkt)
    ref = pkt.__class__(raw)           # scapy's own dissection of the final bytes
    t = ref["TCP"]
    s = w.parse_packet(raw)
    assert s.csum_status == 1          # our checksum agrees with scapy's
    assert (s.sport, s.dport, s.seq, s.ack, s.flags, s.window, s.urg_ptr) == (
        t.sport, t.dport, t.seq, t.ack, int(t.flags), t.window, t.urgptr)
    assert s.tcp_hdr_len == t.dataofs * 4 and s.payload == bytes(t.payload)
    if s.ip_version == 4:
        assert (s.tos, s.ttl, s.ip_ident, s.ip_df) == (ref.tos, ref.ttl, ref.id, bool(ref.flags.DF))
        assert s.src == ipaddress.IPv4Address(ref.src).packed
    else:
        assert (s.tos, s.flow_label, s.ttl) == (ref.tc, ref.fl, ref.hlim)
        assert s.dst == ipaddress.IPv6Address(ref.dst).packed
    o = dict((k, v) for k, v in t.options)
    assert s.mss == o.get("MSS")
    assert s.wscale == o.get("WScale")
    assert s.sack_perm == ("SAckOK" in o)
    assert s.ts == o.get("Timestamp")
    sack = o.get("SAck", ())
    assert s.sack == tuple(zip(sack[0::2], sack[1::2]))
    # and scapy verifies what we emit: recomputing its checksum changes nothing.
    # (Our Linux-style, NOP-aligned layout can need more than scapy's packed one.)
    if s.options_len() > 40:
        with pytest.raises(ValueError):
            s.to_bytes(s.payload)
        return
    mine = s.to_bytes(s.payload)
    again = pkt.__class__(mine)
    stored = again["TCP"].chksum
    del again["TCP"].chksum
    if s.ip_version == 4:
        del again.chksum
    assert pkt.__class__(bytes(again))["TCP"].chksum == stored


# ---- robustness --------------------------------------------------------------------------
PARSERS = [
    lambda b: w.parse_packet(b, 1),
    lambda b: w.parse_packet(b, 2),
    lambda b: w.parse_frame(b, 1),
    lambda b: w.parse_ptb(b, 1),
    lambda b: w.parse_ptb(b, 0),
    lambda b: w.parse_ip(b, 1),
    lambda b: w.parse_tcp(b, None, None, 0),
    lambda b: w.parse_tcp(b, b"\1\2\3\4", b"\5\6\7\10", 1),
    lambda b: Ipv4Repr.parse(b),
    lambda b: Ipv6Repr.parse(b),
    lambda b: EthernetRepr.parse(b),
    lambda b: IcmpPtbRepr.parse(b, False),
    lambda b: parse_ip_tcp_repr(b, False),
    lambda b: w.Ipv4Packet(b),
    lambda b: w.Ipv6Packet(b),
    lambda b: w.TcpSegment(b),
    lambda b: w.EthernetFrame(b),
]


def _only_wire_errors(data):
    for parse in PARSERS:
        try:
            parse(data)
        except WireError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_wire_errors(data):
    _only_wire_errors(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 6, 0x45, 0x46, 0x4F, 0x60]), st.binary(max_size=120))
def test_random_ip_like_bytes_only_raise_wire_errors(first, rest):
    _only_wire_errors(bytes([first]) + rest)


from stackpep.wire import vectors as _vectors  # noqa: E402

VECTOR_ROOT = Path(__file__).resolve().parents[1] / "vectors" / "wire"
_V = {v.name: v.data for v in _vectors.load_all(VECTOR_ROOT)}
BASES = [
    bytes(IP(src="198.18.0.1", dst="198.18.0.2") / TCP(options=[("MSS", 1460), ("Timestamp", (1, 2))]) / b"data"),
    _V["ipv6-ext/v6-hbh-routing-dst-ah"],
    _V["scps/v4-syn-scps-extended-12"],
    _V["icmp/v6-ptb-quote-with-dstopts"],
    _V["icmp/v4-frag-needed-min-quote"],
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BASES), st.lists(st.tuples(st.integers(0, 200), u8), min_size=1, max_size=4),
       st.integers(0, 200))
def test_mutated_packets_only_raise_wire_errors(base, edits, cut):
    b = bytearray(base)
    for pos, val in edits:
        b[pos % len(b)] = val
    _only_wire_errors(bytes(b[:cut]))
    _only_wire_errors(bytes(b))


def test_every_rejection_is_counted_once():
    from stackpep.wire import counters
    counters.reset()
    with pytest.raises(WireError) as e:
        w.parse_packet(b"\x45" + bytes(10))
    assert dict(counters.nonzero()) == {e.value.counter: 1}
