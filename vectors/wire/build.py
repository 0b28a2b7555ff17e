#!/usr/bin/env python3
"""Write the hand-built wire vectors: SCPS options, ICMP PTB, 802.1Q, IPv6
extension chains, and malformed packets (one defect each).

Run from the repository root (no root needed):
    PYTHONPATH=. /work/venv/bin/python vectors/wire/build.py
Packets are assembled here with struct and a pure-Python RFC 1071 checksum, not
with stackpep.  Expected fields of well-formed vectors come from tshark's
dissectors (SCPS ones included); a malformed vector's expected error and counter
are those of the single defect it was built with (docs/wire.md lists them).
"""
import ipaddress
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from tshark import dissect, expect_from  # noqa: E402

from stackpep.wire import vectors  # noqa: E402

SRC = "built by vectors/wire/build.py"
A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "fd00:1::1", "fd00:1::2"

# ---- independent packet construction -------------------------------------------------


def csum(data: bytes, init: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = init + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def addr(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> int:
    if len(src) == 4:
        data = src + dst + struct.pack("!BBH", 0, proto, length)
    else:
        data = src + dst + struct.pack("!IxxxB", length, proto)
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def tcp(sport=40000, dport=80, seq=1000, ack=0, flags=0x02, win=64240, opts=b"", payload=b"", doff=None, urg=0,
        src=A4, dst=B4, good_csum=True):
    assert len(opts) % 4 == 0, opts
    hl = 20 + len(opts)
    d = hl // 4 if doff is None else doff
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, d << 4, flags, win, 0, urg) + opts + payload
    c = csum(seg, pseudo(addr(src), addr(dst), 6, len(seg)))
    if not good_csum:
        c ^= 0x5A5A
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def ip4(payload, proto=6, src=A4, dst=B4, tos=0, ttl=64, ident=0x1234, flags_frag=0x4000, opts=b"", total=None,
        ihl=None, version=4, good_csum=True):
    hl = 20 + len(opts)
    h = struct.pack("!BBHHHBBH4s4s", (version << 4) | (hl // 4 if ihl is None else ihl), tos,
                    hl + len(payload) if total is None else total, ident, flags_frag, ttl, proto, 0,
                    addr(src), addr(dst)) + opts
    c = csum(h)
    if not good_csum:
        c ^= 0x00FF
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def ip6(payload, nh=6, src=A6, dst=B6, tc=0, flow=0x12345, hlim=64, plen=None):
    first = (6 << 28) | (tc << 20) | flow
    return struct.pack("!IHBB16s16s", first, len(payload) if plen is None else plen, nh, hlim,
                       addr(src), addr(dst)) + payload


def ext(nh, body_len_units=0, kind="opts"):
    """An IPv6 extension header: next header nh; options/routing bodies padded with PadN."""
    if kind == "frag":
        return None
    n = (body_len_units + 1) * 8
    body = bytes([1, n - 4]) + bytes(n - 4)          # PadN option filling the header (RFC 8200 §4.2)
    return bytes([nh, body_len_units]) + body


def hbh(nh, units=0):
    return ext(nh, units)


def dstopts(nh, units=0):
    return ext(nh, units)


def routing(nh):
    # type 0 routing header (RFC 2460 §4.4) with one address and segments left 0
    return bytes([nh, 2, 0, 0]) + bytes(4) + addr("fd00:2::1")


def srh(nh, segments, left, last_entry=None):
    """RFC 8754 §2 Segment Routing Header; `segments` is Segment List[0..n] (the
    final destination first: the list is in reverse order)."""
    le = len(segments) - 1 if last_entry is None else last_entry
    body = b"".join(addr(a) for a in segments)
    return bytes([nh, 2 * len(segments), 4, left, le, 0, 0, 0]) + body


def rh2(nh, home, left=1):
    """RFC 6275 §6.4 type 2 routing header: one address, the home address."""
    return bytes([nh, 2, 2, left]) + bytes(4) + addr(home)


def rh0(nh, addrs, left):
    """RFC 2460 §4.4 type 0 (deprecated by RFC 5095)."""
    return bytes([nh, 2 * len(addrs), 0, left]) + bytes(4) + b"".join(addr(a) for a in addrs)


def frag6(nh, offset=0, more=False, ident=0xABCD):
    return struct.pack("!BBHI", nh, 0, (offset << 3) | (1 if more else 0), ident)


def ah(nh):
    # RFC 4302 §2: payload len = 4 (6 words total -> (4+2)*4 = 24 bytes), SPI, seq, 12-byte ICV
    return struct.pack("!BBHII", nh, 4, 0, 0x100, 1) + bytes(12)


def tcp_ae(**kw):
    """A TCP segment with the AE bit (0x100, byte 12 bit 0) set, checksum refilled."""
    seg = bytearray(tcp(flags=0xC2, **kw))
    seg[12] |= 0x01
    seg[16:18] = b"\0\0"
    src, dst = kw.get("src", A4), kw.get("dst", B4)
    seg[16:18] = struct.pack("!H", csum(bytes(seg), pseudo(addr(src), addr(dst), 6, len(seg))))
    return bytes(seg)


def tcp6(src=A6, dst=B6, **kw):
    return tcp(src=src, dst=dst, **kw)


def eth(payload, ethertype=0x0800, vlan=None):
    h = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")
    if vlan is not None:
        h += struct.pack("!HH", 0x8100, vlan)
    return h + struct.pack("!H", ethertype) + payload


# Linux-style SYN options: MSS, SACKOK+TS, NOP WS
SYN_OPTS = bytes.fromhex("020405b4") + bytes.fromhex("0402080a") + struct.pack("!II", 111, 0) + bytes.fromhex("01030307")
TS_OPTS = bytes.fromhex("0101080a") + struct.pack("!II", 222, 111)

# ---- tshark cross-check --------------------------------------------------------------


def pcap_bytes(frames, linktype):
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    return out


def tshark_row(data, layer):
    with tempfile.NamedTemporaryFile(suffix=".pcap") as f:
        f.write(pcap_bytes([data], 1 if layer == "eth" else 101))
        f.flush()
        return dissect(f.name)[0]


COUNT = [0]


def good(name, data, description, layer="ip", rebuild=True, extra=None, comment="", verify_csum=1, check=None):
    """A well-formed TCP vector whose expected fields are tshark's."""
    row = tshark_row(data, layer)
    if row["tcp.checksum.status"] not in ("1", "Good"):
        raise SystemExit(f"{name}: tshark says the TCP checksum is not good ({row['tcp.checksum.status']!r})")
    e = expect_from(row)
    scps_bitmap = e.pop("scps_bitmap", None)
    scps_conn_id = e.pop("scps_conn_id", None)
    scps_binding_ids = e.pop("scps_binding_ids", None)
    if extra:
        e.update(extra)
    if scps_bitmap is not None:
        assert e["scps"]["bitmap"] == scps_bitmap, (name, "tshark disagrees on the SCPS bitmap")
        assert e["scps"]["connection_id"] == scps_conn_id, (name, "tshark disagrees on the connection id")
        ext = bytes.fromhex(e["scps"]["binding_space"])
        ids, i = [], 0
        while i < len(ext):
            ids.append(str(ext[i]))
            i += 2 + 2 * (ext[i + 1] >> 4)
        assert ",".join(ids) == scps_binding_ids, (name, "tshark disagrees on the binding spaces", scps_binding_ids)
    if check:
        check(row)
    e["csum_status"] = "GOOD"
    if layer == "eth":
        e.setdefault("vlan_tci", -1)
    vectors.dump(HERE / name, description=description, source=SRC + "; fields from tshark", layer=layer,
                 parser="ip_tcp", verify_csum=verify_csum, data=data, expect=e, rebuild=rebuild, comment=comment)
    COUNT[0] += 1


def bad(name, data, description, error, counter, layer="ip", parser="ip_tcp", verify_csum=1, comment=""):
    kind = "IntegrityError" if error == "I" else "SanityError"
    vectors.dump(HERE / name, description=description, source=SRC, layer=layer, parser=parser,
                 verify_csum=verify_csum, data=data, expect={"error": kind, "counter": counter}, comment=comment)
    COUNT[0] += 1


def ptb(name, data, description, expect, comment=""):
    vectors.dump(HERE / name, description=description, source=SRC + "; MTU cross-checked with tshark", layer="ip",
                 parser="icmp_ptb", verify_csum=1, data=data, expect=expect, comment=comment)
    COUNT[0] += 1


def tfo_vectors():
    """TCP Fast Open, kind 34 (RFC 7413 §4.1.1), in Linux's layout: after the standard
    SYN options, NOP-padded after the cookie."""
    def check_cookie(want):
        def check(row):
            got = row["tcp.options.tfo.cookie"].replace(":", "")
            if got != want:
                sys.exit(f"tshark read the Fast Open cookie as {got!r}, not {want!r}")
        return check
    cookie8 = bytes.fromhex("0123456789abcdef")
    good("tfo/v4-syn-tfo-cookie-data.toml",
         ip4(tcp(opts=SYN_OPTS + bytes([34, 10]) + cookie8 + bytes([1, 1]), payload=bytes(range(100)))),
         "SYN with an 8-byte Fast Open cookie and 100 bytes of data (RFC 7413 §4.2)",
         check=check_cookie(cookie8.hex()))
    good("tfo/v4-syn-tfo-cookie-request.toml",
         ip4(tcp(opts=SYN_OPTS + bytes([34, 2, 1, 1]))),
         "SYN with an empty Fast Open option: a cookie request (RFC 7413 §4.1.2)",
         check=lambda r: r["tcp.options.tfo.request"] or sys.exit("tshark saw no cookie request"))
    cookie16 = bytes(range(0xA0, 0xB0))
    good("tfo/v6-synack-tfo-cookie-16.toml",
         ip6(tcp6(flags=0x12, seq=5000, ack=1001,
                  opts=SYN_OPTS + bytes([34, 18]) + cookie16 + bytes([1, 1]))),
         "SYN-ACK carrying a 16-byte Fast Open cookie (the largest, RFC 7413 §4.1.1)",
         check=check_cookie(cookie16.hex()))


def main():
    # ---- SCPS options (CCSDS 714.0-B-2; kinds 20-23) ---------------------------------
    scps_caps = bytes([20, 4, 0xC0, 7])                          # BETS | SNACK1, connection id 7
    good("scps/v4-syn-scps-caps.toml",
         ip4(tcp(opts=SYN_OPTS + scps_caps)),
         "SYN with Linux options and SCPS capabilities (BETS, SNACK1, conn id 7)",
         extra={"scps": {"bitmap": 0xC0, "connection_id": 7, "binding_space": ""}},
         check=lambda r: r["tcp.options.scps.vector"] or sys.exit("tshark saw no SCPS option"))
    good("scps/v6-synack-scps-caps-compress.toml",
         ip6(tcp6(flags=0x12, ack=1001, seq=5000, opts=SYN_OPTS + bytes([20, 4, 0x18, 42]))),
         "SYN-ACK, IPv6, SCPS capabilities with header compression and NL timestamps",
         extra={"scps": {"bitmap": 0x18, "connection_id": 42, "binding_space": ""}})
    good("scps/v4-syn-scps-extended-6.toml",
         ip4(tcp(opts=bytes.fromhex("020405b4") + bytes([20, 4, 0x80, 3]) + bytes([20, 6, 0x01, 0x10, 0xAA, 0xBB])
                 + bytes([1, 1]))),
         "SYN with SCPS capabilities and an extended-capabilities option: binding space 1, one 16-bit word",
         extra={"scps": {"bitmap": 0x80, "connection_id": 3, "binding_space": "0110aabb"}},
         comment="CCSDS 714.0-B-2 §3.2.5 extended form as Wireshark dissects it: a second kind-20 option.")
    good("scps/v4-syn-scps-extended-12.toml",
         ip4(tcp(opts=bytes.fromhex("020405b4") + bytes([20, 4, 0x40, 9])
                 + bytes([20, 12, 0x01, 0x10, 0xAA, 0xBB, 0x02, 0x20, 1, 2, 3, 4])),
             ),
         "SYN with an extended-capabilities option of two binding spaces (1: one word, 2: two words)",
         extra={"scps": {"bitmap": 0x40, "connection_id": 9, "binding_space": "0110aabb022001020304"}},
         )
    good("scps/v4-ack-snack.toml",
         ip4(tcp(flags=0x10, seq=2000, ack=90000, opts=TS_OPTS + bytes([1, 1, 21, 6, 0, 3, 0, 2]))),
         "ACK with timestamps and a SNACK: hole 3 segments after ack, 2 segments long")
    good("scps/v6-ack-snack.toml",
         ip6(tcp6(flags=0x10, seq=2000, ack=90000, opts=bytes([1, 1, 21, 6, 0x01, 0x00, 0x00, 0x10]))),
         "IPv6 ACK with a SNACK (offset 256, size 16)")
    good("scps/v4-ack-two-snacks.toml",
         ip4(tcp(flags=0x10, seq=2000, ack=90000,
                 opts=TS_OPTS + bytes([1, 1, 21, 6, 0, 3, 0, 2]) + bytes([1, 1, 21, 6, 0, 9, 0, 4]))),
         "ACK with two SNACK options: holes (3, 2) and (9, 4), both kept in order",
         extra={"snack_holes": [[3, 2], [9, 4]]})
    good("scps/v4-syn-scps-extended-only.toml",
         ip4(tcp(opts=bytes.fromhex("020405b4") + bytes([20, 6, 0x01, 0x10, 0xAA, 0xBB, 1, 1]))),
         "SYN with an SCPS extended-capabilities option and no 4-byte capabilities option",
         extra={"scps": {"binding_space": "0110aabb"}},
         comment="The base form is absent: no bitmap, no connection id (none is invented on emit).")
    good("tcp/v4-syn-accecn-ae.toml",
         ip4(tcp_ae(opts=SYN_OPTS)),
         "AccECN SYN: AE, CWR and ECE set (flag bits 0x1c2)", extra={"flags_hi": 1})
    good("options/v4-nonlinux-order.toml",
         ip4(tcp(flags=0x10, seq=3000, ack=5000,
                 opts=bytes([1]) + bytes([8, 10]) + struct.pack("!II", 7, 8) + bytes([99, 3, 0x42])
                 + bytes([2, 4, 5, 0xB4]) + bytes([1, 1, 1, 0, 0, 0]))),
         "options in an order Linux does not use: NOP, TS, unknown 99, MSS, NOPs, EOL padding", rebuild=False,
         extra={"unknown": [[99, "42"]]},
         comment="A Repr keeps this layout (tests/test_wire_exact.py); emit_ip_tcp writes Linux's.")
    good("scps/v4-data-record-boundary.toml",
         ip4(tcp(flags=0x18, seq=3000, ack=1, opts=TS_OPTS + bytes([1, 1, 22, 2]), payload=b"record-1")),
         "data segment ending a record: NOP NOP RB(22,2)")
    good("scps/v4-ack-corruption-experienced.toml",
         ip4(tcp(flags=0x10, seq=3000, ack=5000, opts=bytes([1, 1, 23, 2]))),
         "ACK reporting corruption experienced (23,2)")
    good("scps/v4-ack-snack-rb-ce.toml",
         ip4(tcp(flags=0x18, seq=3000, ack=5000,
                 opts=TS_OPTS + bytes([1, 1, 21, 6, 0, 1, 0, 1]) + bytes([1, 1, 22, 2]) + bytes([1, 1, 23, 2]),
                 payload=b"x" * 100)),
         "data with TS, SNACK, record boundary and corruption experienced together",
         extra={"record_boundary": True, "corruption_experienced": True},
         comment="tshark 4.0 stops dissecting after a SNACK option it cannot relate to an MSS\n"
                 "(\"Malformed Packet\"), so RB and CE here are expected by construction; the\n"
                 "single-option vectors v4-data-record-boundary and v4-ack-corruption-experienced\n"
                 "have them from tshark.")
    good("options/v4-unknown-kinds.toml",
         ip4(tcp(flags=0x10, seq=3000, ack=5000,
                 opts=TS_OPTS + bytes([30, 4, 0x10, 0x01, 254, 6, 0xF9, 0x89, 0xAB, 0xCD]) + bytes([0, 0]))),
         "unknown kinds (30 MPTCP-like, 254 experimental RFC 6994) kept verbatim and rebuilt",
         extra={"unknown": [[30, "1001"], [254, "f989abcd"]]})
    good("options/v4-sack-4-blocks.toml",
         ip4(tcp(flags=0x10, seq=1, ack=1000, opts=bytes([1, 1, 5, 34]) + b"".join(
             struct.pack("!II", 2000 + 3000 * i, 3000 + 3000 * i) for i in range(4)))),
         "ACK with the maximum 4 SACK blocks (no timestamps), RFC 2018 §3")
    good("options/v4-eol-then-garbage.toml",
         ip4(tcp(flags=0x10, seq=1, ack=1000, opts=bytes.fromhex("020405b4") + bytes([0, 0xEE, 0xEE, 0xEE]))),
         "EOL ends the option list: bytes after it are ignored (RFC 9293 §3.2)", rebuild=False,
         extra={"mss": 1460})
    good("ip/v4-dscp-ecn-ttl.toml",
         ip4(tcp(flags=0x10, seq=1, ack=2, opts=TS_OPTS), tos=0xB9, ttl=3, flags_frag=0),
         "DSCP EF (46) with ECT(1), TTL 3, DF clear")
    good("ip/v6-tclass-flow.toml",
         ip6(tcp6(flags=0x10, seq=1, ack=2, opts=TS_OPTS), tc=0x2A, flow=0xFEDCB, hlim=1),
         "IPv6 traffic class 0x2a (DSCP 10, ECN 2), flow label 0xfedcb, hop limit 1")
    good("ip/v4-with-ip-options.toml",
         ip4(tcp(flags=0x10, seq=1, ack=2), opts=bytes([1, 1, 1, 0])),
         "IPv4 header with 4 bytes of options (NOP NOP NOP EOL): skipped, TCP found at 24",
         rebuild=False, extra={"ip_hdr_len": 24})
    eth_pad = eth(ip4(tcp(flags=0x10, seq=1, ack=2))) + bytes(6)
    good("link/eth-min-frame-padding.toml", eth_pad,
         "60-byte Ethernet frame: 40-byte IP packet plus 6 bytes of link padding (total length wins)",
         layer="eth", rebuild=False)
    good("link/eth-vlan.toml", eth(ip4(tcp(flags=0x10, seq=1, ack=2, opts=TS_OPTS)), vlan=0x2064),
         "802.1Q tagged frame: PCP 1, VID 100", layer="eth", extra={"vlan_tci": 0x2064})
    good("link/eth-vlan-v6.toml", eth(ip6(tcp6(flags=0x10, seq=1, ack=2)), ethertype=0x86DD, vlan=0x0FFE),
         "802.1Q tagged IPv6 frame, VID 4094", layer="eth", extra={"vlan_tci": 0x0FFE})

    # ---- IPv6 extension-header chains ------------------------------------------------
    t6 = tcp6(flags=0x10, seq=7, ack=9, opts=TS_OPTS)
    chain = hbh(43) + routing(60) + dstopts(51) + ah(6)
    good("ipv6-ext/v6-hbh-routing-dst-ah.toml", ip6(chain + t6, nh=0),
         "IPv6 chain hop-by-hop, routing, destination options, AH, then TCP", rebuild=False,
         extra={"ip_hdr_len": 40 + len(chain)})
    good("ipv6-ext/v6-atomic-fragment.toml", ip6(frag6(6) + t6, nh=44),
         "atomic fragment (offset 0, M 0; RFC 6946): processed as a whole packet", rebuild=False,
         extra={"ip_hdr_len": 48})
    good("ipv6-ext/v6-dstopts-16.toml", ip6(dstopts(6, units=1) + t6, nh=60),
         "destination options header of 16 bytes (length 1)", rebuild=False, extra={"ip_hdr_len": 56})
    bad("ipv6-ext/v6-fragment-first.toml", ip6(frag6(6, 0, True) + t6, nh=44),
        "first fragment (offset 0, M 1)", "S", "ip_fragment")
    bad("ipv6-ext/v6-fragment-later.toml", ip6(frag6(6, 185, False) + bytes(24), nh=44),
        "non-first fragment: what follows is not a TCP header", "S", "ip_fragment")
    p = ip6(dstopts(6) + t6, nh=60)
    bad("ipv6-ext/v6-chain-truncated.toml", ip6(dstopts(6)[:4], nh=60),
        "payload ends 4 bytes into a destination options header", "I", "ipv6_ext_truncated")
    bad("ipv6-ext/v6-chain-past-end.toml", ip6(dstopts(6, units=10)[:16], nh=60),
        "destination options header claims 88 bytes, 16 remain", "I", "ipv6_ext_past_end")
    long_chain = b"".join(dstopts(60) for _ in range(8)) + dstopts(6)
    bad("ipv6-ext/v6-chain-too-long.toml", ip6(long_chain + t6, nh=60),
        "nine destination options headers: over the bound of 8", "I", "ipv6_ext_chain")
    bad("ipv6-ext/v6-chain-hbh-repeated.toml", ip6(hbh(0) + hbh(6) + t6, nh=0),
        "hop-by-hop header repeated (a looping chain)", "S", "ipv6_hbh_not_first")
    bad("ipv6-ext/v6-chain-hbh-late.toml", ip6(dstopts(0) + hbh(6) + t6, nh=60),
        "hop-by-hop after destination options (RFC 8200 §4.3)", "S", "ipv6_hbh_not_first")
    bad("ipv6-ext/v6-jumbo.toml", ip6(hbh(6) + t6, nh=0, plen=0),
        "payload length 0 with hop-by-hop: a jumbogram (RFC 2675)", "S", "ipv6_jumbo")
    # RFC 8200 §8.1: with segments left, the pseudo-header uses the final destination
    # (tshark's checksum check, which also does, must say GOOD)
    final, hop = "fd00:3::9", "fd00:2::1"
    t6f = tcp6(dst=final, flags=0x18, seq=70, ack=90, opts=TS_OPTS, payload=b"routed")
    rh = srh(6, [final, hop], left=1)
    good("ipv6-ext/v6-routing-srh-segments-left.toml", ip6(rh + t6f, nh=43, dst=hop),
         "SRH (type 4) with segments left 1: TCP checksum over the final destination, Segment List[0]",
         rebuild=False, extra={"ip_hdr_len": 40 + len(rh), "final_dst": final},
         comment="RFC 8200 §8.1, RFC 8754 §2: the header's destination is the next segment,\n"
                 "the pseudo-header's the last one (Segment List[0]).")
    rh = rh2(6, final)
    good("ipv6-ext/v6-routing-type2-home-address.toml", ip6(rh + t6f, nh=43, dst=hop),
         "Mobile IPv6 type 2 routing header: TCP checksum over the home address (RFC 6275 §6.4)",
         rebuild=False, extra={"ip_hdr_len": 40 + len(rh), "final_dst": final})
    rh = srh(6, [final, hop], left=0)
    good("ipv6-ext/v6-routing-srh-segments-left-0.toml", ip6(rh + tcp6(dst=hop, flags=0x10, seq=1, ack=2), nh=43,
                                                             dst=hop),
         "SRH with segments left 0: the header's destination is the final one", rebuild=False,
         extra={"final_dst": hop})
    bad("checksum/v6-routing-checksum-over-header-dst.toml",
        ip6(srh(6, [final, hop], left=1) + tcp6(dst=hop, flags=0x10, seq=1, ack=2), nh=43, dst=hop),
        "SRH with segments left 1 but the TCP checksum computed over the header's destination", "I",
        "tcp_checksum")
    bad("ipv6-ext/v6-routing-type0-segments-left.toml",
        ip6(rh0(6, [final], 1) + tcp6(dst=final, flags=0x10, seq=1, ack=2), nh=43, dst=hop),
        "deprecated type 0 routing header (RFC 5095) with segments left 1", "S", "ipv6_routing_type")
    bad("ipv6-ext/v6-routing-srh-last-entry-past-header.toml",
        ip6(srh(6, [final, hop], left=1, last_entry=2) + tcp6(dst=final, flags=0x10, seq=1, ack=2), nh=43, dst=hop),
        "SRH Last Entry 2 (three addresses) in a header holding two", "I", "ipv6_routing_malformed")
    bad("ipv6-ext/v6-routing-srh-left-past-last-entry.toml",
        ip6(srh(6, [final, hop], left=3) + tcp6(dst=final, flags=0x10, seq=1, ack=2), nh=43, dst=hop),
        "SRH segments left 3 > Last Entry + 1 (RFC 8754 §4.3.1.1)", "I", "ipv6_routing_malformed")
    # RFC 8200 §4.5: offset*8 + data beyond 65535
    bad("ipv6-ext/v6-fragment-past-max.toml", ip6(frag6(6, 8189, True) + bytes(48), nh=44),
        "fragment at offset 65512 with 48 bytes: would end at 65560 > 65535", "I", "ip_fragment_past_max")
    bad("ipv6-ext/v6-esp.toml", ip6(bytes(32), nh=50), "ESP: the upper layer is not visible", "S", "not_tcp")
    bad("ipv6-ext/v6-no-next-header.toml", ip6(b"", nh=59), "next header 59 (no next header)", "S", "not_tcp")
    del p

    # ---- truncation at every header boundary -------------------------------------------
    syn4 = ip4(tcp(opts=SYN_OPTS))                              # 20 + 40 bytes
    for n, counter in ((0, "ip_truncated"), (1, "ip_truncated"), (19, "ip_truncated"),
                       (20, "ipv4_total_len"), (40, "ipv4_total_len"), (59, "ipv4_total_len")):
        bad(f"truncated/v4-syn-cut-{n}.toml", syn4[:n], f"IPv4 SYN cut to {n} of 60 bytes", "I", counter)
    bad("truncated/v4-tcp-10-bytes.toml", ip4(tcp()[:10]), "IPv4 total length leaves 10 bytes of TCP",
        "I", "tcp_truncated")
    bad("truncated/v4-tcp-doff-past-end.toml", ip4(tcp(opts=SYN_OPTS)[:30]),
        "TCP data offset 15 (60 bytes) in a 30-byte segment", "I", "tcp_doff_past_end")
    syn6 = ip6(tcp6(opts=SYN_OPTS))
    for n, counter in ((39, "ip_truncated"), (40, "ipv6_payload_len"), (79, "ipv6_payload_len")):
        bad(f"truncated/v6-syn-cut-{n}.toml", syn6[:n], f"IPv6 SYN cut to {n} of 80 bytes", "I", counter)
    bad("truncated/v6-tcp-12-bytes.toml", ip6(tcp6()[:12]), "IPv6 payload of 12 TCP bytes", "I", "tcp_truncated")
    frame = eth(syn4)
    bad("truncated/eth-13.toml", frame[:13], "Ethernet header cut at 13 bytes", "I", "eth_truncated", layer="eth")
    bad("truncated/eth-14.toml", frame[:14], "Ethernet header and nothing after it", "I", "ip_truncated", layer="eth")
    bad("truncated/eth-vlan-16.toml", eth(syn4, vlan=5)[:16], "802.1Q tag cut short", "I", "vlan_truncated",
        layer="eth")
    # RFC 1122 §3.2.1.1, RFC 8200 §3: the version nibble must match the ethertype
    bad("link/eth-ipv4-ethertype-ipv6-packet.toml", eth(ip6(tcp6(flags=0x10, seq=1, ack=2)), ethertype=0x0800),
        "ethertype IPv4 carrying an IPv6 packet", "I", "ip_version_mismatch", layer="eth")
    bad("link/eth-ipv6-ethertype-ipv4-packet.toml", eth(ip4(tcp(flags=0x10, seq=1, ack=2)), ethertype=0x86DD),
        "ethertype IPv6 carrying an IPv4 packet", "I", "ip_version_mismatch", layer="eth")
    bad("link/eth-vlan-ipv6-ethertype-ipv4-packet.toml",
        eth(ip4(tcp(flags=0x10, seq=1, ack=2)), ethertype=0x86DD, vlan=7),
        "802.1Q tag, inner ethertype IPv6, carrying an IPv4 packet", "I", "ip_version_mismatch", layer="eth")
    bad("link/eth-arp.toml", eth(bytes(28), ethertype=0x0806), "ARP frame", "S", "eth_not_ip", layer="eth")

    # ---- option lengths ----------------------------------------------------------------
    def opt_case(name, opts, desc, counter):
        bad(f"options/{name}.toml", ip4(tcp(flags=0x10, seq=1, ack=2, opts=opts)), desc, "I", counter)

    opt_case("len-0", bytes([2, 0, 5, 0xB4]), "MSS option with length 0", "tcp_opt_len")
    opt_case("len-1", bytes([2, 1, 5, 0xB4]), "MSS option with length 1", "tcp_opt_len")
    opt_case("unknown-len-0", bytes([1, 1, 99, 0]), "unknown kind 99 with length 0", "tcp_opt_len")
    opt_case("len-past-header", bytes([1, 1, 8, 10]) + struct.pack("!I", 5),
             "timestamps option claims 10 bytes, 6 remain in the header", "tcp_opt_past_end")
    opt_case("kind-at-end", bytes([1, 1, 1, 2]), "MSS kind in the last byte, no length byte", "tcp_opt_past_end")
    opt_case("unknown-past-header", bytes([99, 40, 0, 0]), "unknown kind claims 40 bytes, 4 remain",
             "tcp_opt_past_end")
    opt_case("mss-len-5", bytes([2, 5, 5, 0xB4, 0, 1, 1, 1]), "MSS with length 5", "tcp_opt_bad_len")
    opt_case("ws-len-2", bytes([1, 3, 2, 0]), "window scale with length 2", "tcp_opt_bad_len")
    opt_case("ts-len-8", bytes([8, 8]) + bytes(6), "timestamps with length 8", "tcp_opt_bad_len")
    opt_case("sack-len-11", bytes([5, 11]) + bytes(9) + bytes([0]), "SACK with length 11 (not 2 + 8n)",
             "tcp_opt_bad_len")
    opt_case("sackperm-len-3", bytes([4, 3, 0, 0]), "SACK-permitted with length 3", "tcp_opt_bad_len")
    opt_case("scps-len-3", bytes([20, 3, 0x80, 0]), "SCPS capabilities with length 3", "tcp_opt_bad_len")
    opt_case("scps-ext-len-16", bytes([20, 16]) + bytes(14),
             "SCPS extended capabilities of 16 bytes (more than the 12 kept)", "tcp_opt_bad_len")
    opt_case("snack-len-4", bytes([21, 4, 0, 1]), "SNACK with length 4", "tcp_opt_bad_len")
    opt_case("rb-len-3", bytes([22, 3, 0, 0]), "record boundary with length 3", "tcp_opt_bad_len")
    opt_case("ce-len-4", bytes([23, 4, 0, 0]), "corruption experienced with length 4", "tcp_opt_bad_len")
    opt_case("tfo-len-4", bytes([34, 4, 0xAB, 0xCD]), "Fast Open cookie of 2 bytes (RFC 7413 §4.1.1: 4..16)",
             "tcp_opt_bad_len")
    tfo_vectors()

    # ---- checksums ---------------------------------------------------------------------
    bad("checksum/v4-tcp-bad.toml", ip4(tcp(opts=SYN_OPTS, good_csum=False)), "IPv4 SYN, TCP checksum wrong", "I",
        "tcp_checksum")
    bad("checksum/v6-tcp-bad.toml", ip6(tcp6(opts=SYN_OPTS, good_csum=False)), "IPv6 SYN, TCP checksum wrong", "I",
        "tcp_checksum")
    bad("checksum/v4-ip-header-bad.toml", ip4(tcp(opts=SYN_OPTS), good_csum=False), "IPv4 header checksum wrong",
        "I", "ipv4_checksum")
    vectors.dump(HERE / "checksum/v4-tcp-bad-unchecked.toml",
                 description="TCP checksum wrong but verify_csum=0: parsed, status UNCHECKED", source=SRC,
                 layer="ip", parser="ip_tcp", verify_csum=0, data=ip4(tcp(seq=77, opts=SYN_OPTS, good_csum=False)),
                 expect={"seq": 77, "mss": 1460, "csum_status": "UNCHECKED"})
    COUNT[0] += 1

    # ---- IPv4 / TCP header fields -----------------------------------------------------
    t = tcp(flags=0x10, seq=1, ack=2)
    bad("ip/v4-ihl-4.toml", ip4(t, ihl=4), "IPv4 IHL 4", "I", "ipv4_ihl")
    bad("ip/v4-ihl-past-end.toml", ip4(b"", ihl=15, total=20), "IPv4 IHL 15 in a 20-byte packet", "I",
        "ipv4_hdr_past_end")
    bad("ip/v4-total-short.toml", ip4(t, total=19), "IPv4 total length 19 < header length", "I", "ipv4_total_len")
    bad("ip/version-5.toml", ip4(t, version=5), "IP version 5", "I", "ip_version")
    bad("ip/v4-mf.toml", ip4(t, flags_frag=0x2000), "IPv4 first fragment (MF)", "S", "ip_fragment")
    bad("ip/v4-frag-offset.toml", ip4(t, flags_frag=0x00B9), "IPv4 later fragment (offset 185)", "S", "ip_fragment")
    bad("ip/v4-fragment-past-max.toml", ip4(bytes(40), flags_frag=8189, proto=6),
        "fragment at offset 65512 with 40 bytes of data: ends at 65552 > 65535 (RFC 791)", "I",
        "ip_fragment_past_max")
    bad("ip/v4-fragment-ends-at-max.toml", ip4(bytes(23), flags_frag=8189, proto=6),
        "fragment at offset 65512 with 23 bytes: ends at 65535, a legal (refused) fragment", "S", "ip_fragment")
    bad("ip/v4-udp.toml", ip4(bytes(8), proto=17), "UDP, not TCP", "S", "not_tcp")
    bad("tcp/v4-doff-4.toml", ip4(tcp(doff=4)), "TCP data offset 4", "I", "tcp_doff")
    bad("tcp/v4-sport-0.toml", ip4(tcp(sport=0)), "TCP source port 0", "S", "tcp_port_zero")
    bad("tcp/v6-dport-0.toml", ip6(tcp6(dport=0)), "IPv6, TCP destination port 0", "S", "tcp_port_zero")
    bad("tcp/v4-syn-fin.toml", ip4(tcp(flags=0x03)), "SYN and FIN together", "S", "tcp_syn_fin")
    bad("tcp/v4-syn-rst.toml", ip4(tcp(flags=0x06)), "SYN and RST together", "S", "tcp_syn_rst")
    bad("tcp/v4-multicast-dst.toml", ip4(tcp(dst="224.0.0.1"), dst="224.0.0.1"), "TCP to 224.0.0.1", "S",
        "tcp_multicast")
    bad("tcp/v4-broadcast-src.toml", ip4(tcp(src="255.255.255.255"), src="255.255.255.255"),
        "TCP from 255.255.255.255", "S", "tcp_multicast")
    bad("tcp/v6-multicast-dst.toml", ip6(tcp6(dst="ff02::1"), dst="ff02::1"), "TCP to ff02::1", "S",
        "tcp_multicast")

    # ---- ICMP frag-needed / packet-too-big ------------------------------------------------
    orig4 = ip4(tcp(sport=40000, dport=443, seq=123456789, ack=5, flags=0x18, opts=TS_OPTS, payload=b"z" * 1400))

    def icmp4(type_, code, rest, quote, good_csum=True, src="198.18.9.1", dst=A4):
        m = struct.pack("!BBH", type_, code, 0) + rest + quote
        c = csum(m) ^ (0 if good_csum else 0x1111)
        return ip4(m[:2] + struct.pack("!H", c) + m[4:], proto=1, src=src, dst=dst, flags_frag=0)

    def icmp6(type_, code, rest, quote, src="fd00:9::1", dst=A6):
        m = struct.pack("!BBH", type_, code, 0) + rest + quote
        c = csum(m, pseudo(addr(src), addr(dst), 58, len(m)))
        return ip6(m[:2] + struct.pack("!H", c) + m[4:], nh=58, src=src, dst=dst)

    def check_mtu(data, field, want):
        row = tshark_row(data, "ip")
        assert row[field] == str(want), (field, row[field], want)

    d = icmp4(3, 4, struct.pack("!HH", 0, 1400), orig4[:28])
    check_mtu(d, "icmp.mtu", 1400)
    ptb("icmp/v4-frag-needed-min-quote.toml", d, "ICMPv4 frag needed, MTU 1400, quoting IP header + 8 bytes (RFC 792)",
        {"mtu": 1400, "ip_version": 4, "src": A4, "dst": B4, "sport": 40000, "dport": 443, "seq": 123456789,
         "tcp_hdr_len": 8})
    d = icmp4(3, 4, struct.pack("!HH", 0, 1280), orig4[:548])
    check_mtu(d, "icmp.mtu", 1280)
    ptb("icmp/v4-frag-needed-long-quote.toml", d, "ICMPv4 frag needed quoting 548 bytes (Linux quotes up to 576)",
        {"mtu": 1280, "sport": 40000, "dport": 443, "seq": 123456789, "tcp_hdr_len": 60})
    orig6 = ip6(tcp6(sport=40001, dport=443, seq=987654321, ack=5, flags=0x18, opts=TS_OPTS, payload=b"z" * 1400))
    d = icmp6(2, 0, struct.pack("!I", 1280), orig6[:1232])
    check_mtu(d, "icmpv6.mtu", 1280)
    ptb("icmp/v6-ptb.toml", d, "ICMPv6 packet too big, MTU 1280, quoting 1232 bytes (RFC 4443 §3.2)",
        {"mtu": 1280, "ip_version": 6, "src": A6, "dst": B6, "sport": 40001, "dport": 443, "seq": 987654321})
    orig6x = ip6(dstopts(6) + tcp6(sport=40002, dport=443, seq=42, flags=0x10, payload=b"q" * 1400), nh=60)
    d = icmp6(2, 0, struct.pack("!I", 1400), orig6x[:200])
    ptb("icmp/v6-ptb-quote-with-dstopts.toml", d, "ICMPv6 PTB whose quote has a destination options header",
        {"mtu": 1400, "sport": 40002, "dport": 443, "seq": 42})
    d = icmp6(2, 0, struct.pack("!I", 1000), orig6[:1232])
    ptb("icmp/v6-ptb-mtu-below-1280.toml", d, "ICMPv6 PTB reporting MTU 1000 < 1280 (RFC 8201 §4)",
        {"error": "SanityError", "counter": "icmp_mtu"})
    d = icmp4(3, 4, struct.pack("!HH", 0, 0), orig4[:28])
    check_mtu(d, "icmp.mtu", 0)
    ptb("icmp/v4-frag-needed-mtu-0.toml", d, "ICMPv4 frag needed from an old router: MTU 0 (RFC 1191 §5)",
        {"mtu": 1006, "mtu_field": 0, "mtu_estimated": True, "quoted_total_len": 1452, "sport": 40000,
         "dport": 443, "seq": 123456789},
        comment="RFC 1191 §5: estimate by the §7 plateau table below the quoted total length\n"
                "(1452 -> 1006).")
    orig4s = ip4(tcp(sport=40000, dport=443, seq=5, flags=0x18, payload=b"z" * 1460))
    d = icmp4(3, 4, struct.pack("!HH", 0, 0), orig4s[:28])
    ptb("icmp/v4-frag-needed-mtu-0-1500.toml", d, "MTU 0 quoting a 1500-byte datagram: plateau 1492",
        {"mtu": 1492, "mtu_field": 0, "mtu_estimated": True, "quoted_total_len": 1500})
    d = icmp4(3, 4, struct.pack("!HH", 0, 40), orig4[:28])
    ptb("icmp/v4-frag-needed-mtu-40.toml", d, "ICMPv4 frag needed reporting MTU 40 < 68 (RFC 791)",
        {"error": "SanityError", "counter": "icmp_mtu"})
    d = icmp4(8, 0, struct.pack("!HH", 1, 1), b"ping")
    ptb("icmp/v4-echo.toml", d, "ICMPv4 echo request", {"error": "SanityError", "counter": "icmp_not_ptb"})
    d = icmp4(3, 3, struct.pack("!HH", 0, 0), orig4[:28])
    ptb("icmp/v4-port-unreachable.toml", d, "ICMPv4 port unreachable (code 3)",
        {"error": "SanityError", "counter": "icmp_not_ptb"})
    d = icmp4(3, 4, struct.pack("!HH", 0, 1400), orig4[:28], good_csum=False)
    ptb("icmp/v4-bad-checksum.toml", d, "ICMPv4 checksum wrong", {"error": "IntegrityError", "counter": "icmp_checksum"})
    d = icmp4(3, 4, struct.pack("!HH", 0, 1400), orig4[:24])
    ptb("icmp/v4-quote-truncated.toml", d, "quote holds the IP header and 4 TCP bytes (8 needed)",
        {"error": "IntegrityError", "counter": "icmp_quote_truncated"})
    d = icmp4(3, 4, struct.pack("!HH", 0, 1400), orig4[:20 + 8][:6] + bytes([0, 0xB9]) + orig4[8:28])
    ptb("icmp/v4-quote-later-fragment.toml", d, "the quoted packet is a later IPv4 fragment (offset 185)",
        {"error": "SanityError", "counter": "icmp_quote_not_tcp"})
    d = icmp4(3, 4, struct.pack("!HH", 0, 1400), ip4(bytes(8), proto=17))
    ptb("icmp/v4-quote-udp.toml", d, "the quoted packet is UDP", {"error": "SanityError", "counter": "icmp_quote_not_tcp"})
    d = ip4(bytes([3, 4, 0xFC, 0xFB]), proto=1, flags_frag=0)
    ptb("icmp/v4-truncated.toml", d, "ICMP message of 4 bytes", {"error": "IntegrityError", "counter": "icmp_truncated"})
    ptb("icmp/v4-tcp-not-icmp.toml", orig4, "a TCP packet handed to the ICMP parser",
        {"error": "SanityError", "counter": "not_icmp"})
    print(f"wrote {COUNT[0]} vectors under {HERE}")


if __name__ == "__main__":
    main()
