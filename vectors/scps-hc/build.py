#!/usr/bin/env python3
"""Write the header-compression vectors (vectors/scps-hc/*.toml).

Run from the repository root (no root needed):
    python3 vectors/scps-hc/build.py
Everything here is pure Python, independent of stackpep: the IP/TCP packets are
assembled with struct and an RFC 1071 checksum, and the compressed form is
written by a second, straightforward encoder of the layout docs/scps.md
("Header compression") describes.  tests/test_scps_hc_vectors.py replays every
file through the C codec: expand gives the packet, compress gives the bytes.

File format: `description`, a [context] table (the receive context the expander
holds: src, dst, sport, dport, conn_id) and [[packets]] replayed in order
through one table, each with `compressed` (hex IP packet, protocol 105) and
either `expanded` (hex IP/TCP packet; with `ours = true` compressing it must give
`compressed` exactly) or `drop` (the counter that moves by one).
"""
import ipaddress
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def ip_wrap(src: bytes, dst: bytes, proto: int, l4: bytes, ip_id=0x0101) -> bytes:
    if len(src) == 4:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ip_id, 0x4000, 64, proto, 0, src, dst)
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + l4
    return struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, src, dst) + l4


def tcp(src, dst, sport, dport, seq, ack, flags, win, opts=b"", data=b"", urg=0):
    hl = 20 + len(opts)
    t = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (hl // 4) << 4, flags, win, 0, urg) + opts + data
    c = csum(pseudo(src, dst, 6, len(t)) + t)
    return ip_wrap(src, dst, 6, t[:16] + struct.pack("!H", c) + t[18:])


def hc(src, dst, cid, ctl, fields: bytes, data=b""):
    """A compressed packet: cid, ctl 1, [ctl 2], fields, [pad], checksum, data (docs/scps.md)."""
    ctl1, ctl2 = ctl >> 8, ctl & 0xFF
    more = ctl2 != 0
    n = 2 + more + len(fields) + 2
    if n % 2:
        if more:
            ctl2 |= 0x40                 # PAD
            fields += b"\0"
        else:
            more = True
    if more:
        ctl1 |= 0x80
    hdr = bytes([cid, ctl1]) + (bytes([ctl2]) if more else b"") + fields
    c = csum(pseudo(src, dst, 105, len(hdr) + 2 + len(data)) + hdr + b"\0\0" + data)
    return ip_wrap(src, dst, 105, hdr + struct.pack("!H", c) + data)


S, A, TS1, TS2, RB, SNACK, PUSH = 0x0200, 0x0100, 0x4000, 0x2000, 0x1000, 0x0800, 0x0400
OPTS, URG, ACKR, RST, FIN = 0x0080, 0x0020, 0x0010, 0x0004, 0x0001
a4, b4 = ipaddress.ip_address("198.18.0.2").packed, ipaddress.ip_address("198.19.0.2").packed
a6, b6 = ipaddress.ip_address("fd00:1::2").packed, ipaddress.ip_address("fd00:2::2").packed
TSO = lambda v, e: b"\x01\x01\x08\x0a" + struct.pack("!II", v, e)  # noqa: E731
wa = lambda w, a: struct.pack("!HI", w, a)  # noqa: E731
u32 = lambda v: struct.pack("!I", v)  # noqa: E731


def write(name, description, ctx, packets):
    src, dst, sport, dport, cid = ctx
    lines = [f"description = {description!r}".replace("'", '"'), "",
             "[context]", f'src = "{ipaddress.ip_address(src)}"', f'dst = "{ipaddress.ip_address(dst)}"',
             f"sport = {sport}", f"dport = {dport}", f"conn_id = {cid}", ""]
    for p in packets:
        lines.append("[[packets]]")
        if "why" in p:
            lines.append(f'why = "{p["why"]}"')
        lines.append(f'compressed = "{p["compressed"].hex()}"')
        if "expanded" in p:
            lines.append(f'expanded = "{p["expanded"].hex()}"')
            lines.append(f"ours = {'true' if p.get('ours', True) else 'false'}")
        else:
            lines.append(f'drop = "{p["drop"]}"')
        lines.append("")
    (HERE / f"{name}.toml").write_text("\n".join(lines))


C4 = (a4, b4, 40000, 80, 7)
C6 = (a6, b6, 40001, 443, 9)

# 1. pure ACK with timestamps: 32 bytes of TCP header -> 22 bytes
p = tcp(a4, b4, 40000, 80, 0x01020304, 0x0A0B0C0D, 0x10, 0x1234, TSO(0x11111111, 0x22222222))
write("v4-pure-ack-ts", "IPv4 pure ACK with timestamps: TS1 TS2 S A", C4, [
    {"compressed": hc(a4, b4, 7, TS1 | TS2 | S | A, wa(0x1234, 0x0A0B0C0D) + u32(0x01020304) + TSO(0x11111111, 0x22222222)[4:]),
     "expanded": p}])

# 2. data, PSH, timestamps and a record boundary (NOP NOP 22 2 last)
data = b"GET / HTTP/1.1\r\n\r\n"
p = tcp(a4, b4, 40000, 80, 1000, 2000, 0x18, 502, TSO(5, 6) + b"\x01\x01\x16\x02", data)
write("v4-data-psh-rb", "IPv4 data segment with PSH, timestamps and a record boundary", C4, [
    {"compressed": hc(a4, b4, 7, TS1 | TS2 | RB | PUSH | S | A, wa(502, 2000) + u32(1000) + TSO(5, 6)[4:], data),
     "expanded": p}])

# 3. IPv6 ACK with timestamps, one SACK block (under OPTS) and a SNACK
sack = b"\x01\x01\x05\x0a" + struct.pack("!II", 5000, 6000)
snack = b"\x01\x01\x15\x06" + struct.pack("!HH", 2, 3)
p = tcp(a6, b6, 40001, 443, 77, 4000, 0x10, 65535, TSO(1, 2) + sack + snack)
write("v6-sack-snack", "IPv6 ACK with timestamps, a SACK block (OPTS) and a SNACK", C6, [
    {"compressed": hc(a6, b6, 9, TS1 | TS2 | SNACK | S | A | OPTS,
                      wa(65535, 4000) + u32(77) + TSO(1, 2)[4:] + snack[4:] + bytes([len(sack)]) + sack),
     "expanded": p}])

# 4. FIN + URG, no timestamps: ctl 2 needed; odd length gets PAD
p = tcp(a4, b4, 40000, 80, 9, 10, 0x31, 100, b"", b"!", urg=1)
write("v4-fin-urg", "IPv4 FIN with URG and an urgent pointer: ctl 2, PAD", C4, [
    {"compressed": hc(a4, b4, 7, S | A | URG | FIN, struct.pack("!H", 1) + wa(100, 10) + u32(9), b"!"),
     "expanded": p}])

# 5. a lost packet spoils nothing: the 2nd of three never arrived
seq = [tcp(a4, b4, 40000, 80, 1000 + 100 * i, 2000, 0x10, 500, TSO(10 + i, 20), b"x" * 100) for i in range(3)]
write("v4-loss", "three data segments, the second lost on the link: the third still expands exactly", C4, [
    {"compressed": hc(a4, b4, 7, TS1 | TS2 | S | A, wa(500, 2000) + u32(1000 + 100 * i) + TSO(10 + i, 20)[4:],
                      b"x" * 100), "expanded": seq[i]} for i in (0, 2)])

# 6. drops: corrupted, unknown connection id, truncated header
good = hc(a4, b4, 7, S | A, wa(1, 2) + u32(3), b"abcd")
bad = bytearray(good)
bad[-1] ^= 0x01
write("v4-drops", "a corrupted packet, an unknown connection id, a header cut short", C4, [
    {"why": "one data bit flipped", "compressed": bytes(bad), "drop": "hc_drop_checksum"},
    {"why": "connection id 8 has no context", "compressed": hc(a4, b4, 8, S | A, wa(1, 2) + u32(3)),
     "drop": "hc_drop_no_context"},
    {"why": "A announced, its 6 bytes missing", "compressed": hc(a4, b4, 7, A, b""), "drop": "hc_drop_malformed"},
])

# 7. a reference peer's style: S left out of a pure ACK (the context supplies it),
#    A left out of a data segment, options without NOPs
write("v4-reference-style", "fields a reference peer omits come from the context", C4, [
    {"why": "no context value yet", "compressed": hc(a4, b4, 7, A, wa(900, 300)), "drop": "hc_drop_no_context"},
    {"compressed": hc(a4, b4, 7, S | A | PUSH, wa(900, 300) + u32(50), b"hi"),
     "expanded": tcp(a4, b4, 40000, 80, 50, 300, 0x18, 900, b"", b"hi")},
    {"compressed": hc(a4, b4, 7, A, wa(800, 301)),
     "expanded": tcp(a4, b4, 40000, 80, 50, 301, 0x10, 800), "ours": False},
    {"compressed": hc(a4, b4, 7, S, u32(52), b"yo"),
     "expanded": tcp(a4, b4, 40000, 80, 52, 301, 0x10, 800, b"", b"yo"), "ours": False},
    {"compressed": hc(a4, b4, 7, S | A | OPTS, wa(800, 301) + u32(54) + b"\x02\x13\x02"),
     "expanded": tcp(a4, b4, 40000, 80, 54, 301, 0x10, 800, b"\x13\x02\x01\x01"), "ours": False},
])
