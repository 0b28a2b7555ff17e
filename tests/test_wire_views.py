"""Zero-copy views (one length check, accessors, setters, fill_checksum), the
Segment carrier, Repr validation, and the counters object."""
from pathlib import Path

import pytest

from stackpep._fast import wire as w
from stackpep.wire import (
    EthernetRepr,
    IcmpPtbRepr,
    IntegrityError,
    Ipv4Repr,
    Ipv6Repr,
    SanityError,
    TcpFlags,
    TcpRepr,
    counters,
    parse_ip_tcp_repr,
    vectors,
)

VECTOR_ROOT = Path(__file__).resolve().parents[1] / "vectors" / "wire"
V = {v.name: v for v in vectors.load_all(VECTOR_ROOT)}
SYN4 = V["captured/v4-syn"]          # Ethernet frame
SACK6 = V["captured/v6-sack-3-blocks"]


def test_ethernet_view():
    f = w.EthernetFrame(SYN4.data)
    assert f.ethertype == 0x0800 and f.vlan_tci is None and f.header_len == 14
    assert bytes(f.payload) == SYN4.data[14:]
    tagged = w.EthernetFrame(V["link/eth-vlan"].data)
    assert (tagged.vlan_tci, tagged.vlan_id, tagged.header_len, tagged.ethertype) == (0x2064, 100, 18, 0x0800)
    with pytest.raises(TypeError):
        f.src = b"\0" * 6                 # bytes are read-only
    buf = bytearray(SYN4.data)
    g = w.EthernetFrame(buf)
    g.src = b"\x02\x99\x99\x99\x99\x99"
    assert buf[6:12] == b"\x02\x99\x99\x99\x99\x99"


def test_ipv4_view_setters_and_fill_checksum():
    buf = bytearray(SYN4.data[14:])
    v = w.Ipv4Packet(buf)
    assert (v.header_len, v.total_len, v.protocol, v.dont_frag, v.is_fragment) == (20, 60, 6, True, False)
    assert v.ttl == SYN4.expect["ttl"] and v.verify_checksum()
    v.ttl = 1
    v.dscp = 46
    v.ecn = 1
    assert not v.verify_checksum()
    v.fill_checksum()
    assert v.verify_checksum() and buf[8] == 1 and buf[1] == (46 << 2) | 1
    s = w.parse_packet(bytes(buf))          # still a valid packet (TCP checksum excludes TTL/TOS)
    assert (s.ttl, s.dscp, s.ecn) == (1, 46, 1)


def test_ipv6_view():
    buf = bytearray(SACK6.data)
    v = w.Ipv6Packet(buf)
    assert (v.next_header, v.payload_len, v.flow_label) == (6, 60, SACK6.expect["flow_label"])
    v.flow_label = 0xABCDE
    v.traffic_class = 0xB8
    v.hop_limit = 7
    s = w.parse_packet(bytes(buf))
    assert (s.flow_label, s.tos, s.ttl) == (0xABCDE, 0xB8, 7)


def test_tcp_view_rewrite_then_fill_checksum():
    pkt = bytearray(SACK6.data)
    src, dst = bytes(pkt[8:24]), bytes(pkt[24:40])
    t = w.TcpSegment(memoryview(pkt)[40:])
    assert (t.src_port, t.dst_port, t.seq_number, t.header_len) == (
        SACK6.expect["sport"], SACK6.expect["dport"], SACK6.expect["seq"], 60)
    assert t.ack and not t.syn and t.verify_checksum(src, dst)
    t.dst_port = 6000
    t.window_len = 1
    assert not t.verify_checksum(src, dst)
    assert w.check_packet(bytes(pkt)) == w.CODES["tcp_checksum"]
    t.fill_checksum(src, dst)
    s = w.parse_packet(bytes(pkt))
    assert (s.dport, s.window, s.sack) == (6000, 1, tuple(map(tuple, SACK6.expect["sack"])))


@pytest.mark.parametrize("view, data, counter", [
    (w.Ipv4Packet, b"\x45" + bytes(18), "ip_truncated"),
    (w.Ipv4Packet, b"\x44" + bytes(19), "ipv4_ihl"),
    (w.Ipv4Packet, b"\x65" + bytes(19), "ip_version"),
    (w.Ipv6Packet, b"\x60" + bytes(3) + b"\x00\x10" + bytes(34), "ipv6_payload_len"),
    (w.TcpSegment, bytes(19), "tcp_truncated"),
    (w.TcpSegment, bytes(12) + b"\x40" + bytes(7), "tcp_doff"),
    (w.TcpSegment, bytes(12) + b"\xf0" + bytes(7), "tcp_doff_past_end"),
    (w.EthernetFrame, bytes(13), "eth_truncated"),
    (w.EthernetFrame, bytes(12) + b"\x81\x00\x00", "vlan_truncated"),
])
def test_view_length_check_rejects_and_counts(view, data, counter):
    counters.reset()
    with pytest.raises(IntegrityError) as e:
        view(data)
    assert e.value.counter == counter
    assert dict(counters.nonzero()) == {counter: 1}


def test_segment_builds_every_option():
    s = w.Segment()
    s.ip_version, s.src, s.dst = 6, bytes(15) + b"\1", bytes(15) + b"\2"
    s.sport, s.dport, s.seq, s.ack, s.flags, s.window = 5000, 80, 1, 2, int(TcpFlags.ACK), 100
    s.ts = (7, 8)
    s.sack = [(10, 20), (30, 40)]
    s.scps = (0x80, 1, b"")
    s.snack = (1, 2)
    s.record_boundary = True
    s.corruption_experienced = True
    assert s.options_len() == 12 + 20 + 4 + 8 + 4 + 4
    with pytest.raises(ValueError):
        s.to_bytes()                       # 52 bytes of options do not fit in 40
    s.sack = []
    p = w.parse_packet(s.to_bytes(b"abc"))
    assert (p.ts, p.scps, p.snack, p.record_boundary, p.corruption_experienced, p.payload) == (
        (7, 8), (0x80, 1, b""), (1, 2), True, True, b"abc")
    with pytest.raises(ValueError):
        s.sack = [(1, 2)] * 5
    with pytest.raises(ValueError):
        s.unknown_options = [(2, b"\0\0")]  # MSS is not unknown


def test_repr_errors_name_the_condition_and_count():
    counters.reset()
    with pytest.raises(IntegrityError, match="IP version") as e:
        Ipv4Repr.parse(SACK6.data)
    assert e.value.counter == "ip_version_mismatch"      # as parse_frame says for it under 0x0800
    with pytest.raises(IntegrityError, match="IP version") as e:
        Ipv4Repr.parse(V["ip/version-5"].data)
    assert e.value.counter == "ip_version"
    with pytest.raises(SanityError, match="SYN and FIN"):
        TcpRepr.parse(V["tcp/v4-syn-fin"].data[20:], verify_checksum=False)
    with pytest.raises(IntegrityError, match="TCP checksum"):
        TcpRepr.parse(V["checksum/v4-tcp-bad"].data[20:], bytes(V["checksum/v4-tcp-bad"].data[12:16]),
                      bytes(V["checksum/v4-tcp-bad"].data[16:20]))
    assert dict(counters.nonzero()) == {"ip_version_mismatch": 1, "ip_version": 1, "tcp_syn_fin": 1,
                                        "tcp_checksum": 1}
    snap = counters.snapshot()
    assert snap["tcp_checksum"] == 1 and counters["tcp_checksum"] == 1
    with pytest.raises(TypeError):
        snap["tcp_checksum"] = 0           # immutable snapshot
    counters.reset()
    assert counters.nonzero() == {} and set(counters.snapshot()) == set(w.COUNTER_NAMES)


def test_reprs_of_real_packets():
    ip, tcp = parse_ip_tcp_repr(SACK6.data)
    assert isinstance(ip, Ipv6Repr) and ip.next_header == 6 and ip.payload_len == 60
    assert tcp.options.sack_blocks == tuple(map(tuple, SACK6.expect["sack"]))
    buf = bytearray(ip.buffer_len() + tcp.buffer_len())
    n = ip.emit(buf)
    tcp.emit(memoryview(buf)[n:], ip.src, ip.dst)
    assert bytes(buf) == SACK6.data
    eth = EthernetRepr.parse(SYN4.data)
    assert eth.ethertype == 0x0800 and eth.vlan_tci is None
    ptb = IcmpPtbRepr.parse(V["icmp/v6-ptb"].data)
    assert ptb.mtu == 1280 and ptb.quoted.sport == 40001
    buf = bytearray(ptb.buffer_len())
    ptb.emit(buf)
    assert bytes(buf) == V["icmp/v6-ptb"].data


def test_ipv6_chain_repr_exposes_the_fragment_header():
    ip = Ipv6Repr.parse(V["ipv6-ext/v6-fragment-later"].data)
    assert [h.kind for h in ip.ext_headers] == [44]
    assert ip.fragment == (185, False, 0xABCD) and ip.is_fragment
    chain = Ipv6Repr.parse(V["ipv6-ext/v6-hbh-routing-dst-ah"].data)
    assert [h.kind for h in chain.ext_headers] == [0, 43, 60, 51] and chain.next_header == 6
