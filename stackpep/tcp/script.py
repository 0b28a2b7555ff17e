"""Packetdrill-style scripts for the sans-IO TCP engine, run on a virtual clock.

A script is a timeline.  Each line starts with a time (``+0.1`` relative to the
previous line, ``0.200`` absolute, optionally ``~0.01`` tolerance) and says what
happens then: a segment arrives (``<``), a segment must leave (``>``), the
application acts (``app send 1000``), an ICMP packet-too-big is reported, or an
assertion about events, state, statistics or the timer.  Sequence and
acknowledgement numbers are relative to each side's ISN, as in packetdrill.
The full grammar is in ``docs/tcp-scripts.md``.

The runner builds inbound IP packets itself (``struct``; no scapy) and parses
every outbound packet, checking IPv4 header and TCP checksums, addresses,
ports and lengths before comparing the segment with the script.  Application
payload follows a known pattern per direction, so every byte that leaves or is
read by ``app recv`` is checked too.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

__all__ = [
    "ScriptError",
    "ScriptSyntaxError",
    "Script",
    "parse_script",
    "load_script",
    "run_script",
    "build_segment",
    "parse_segment",
    "Segment",
    "format_segment",
    "payload_pattern",
]

# -- TCP header constants (RFC 9293 §3.1, RFC 3168 §6.1) ------------------------
#  0                   1                   2                   3
#  |          Source Port          |       Destination Port        |
#  |                        Sequence Number                        |
#  |                    Acknowledgment Number                      |
#  |  Data |       |C|E|U|A|P|R|S|F|                               |
#  | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
#  |           Checksum            |         Urgent Pointer        |
TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK, TH_URG, TH_ECE, TH_CWR = 1, 2, 4, 8, 16, 32, 64, 128
# Script flag letters, packetdrill's spelling ("." is ACK, E = ECE, W = CWR).
FLAG_LETTERS = {"F": TH_FIN, "S": TH_SYN, "R": TH_RST, "P": TH_PSH, ".": TH_ACK,
                "U": TH_URG, "E": TH_ECE, "W": TH_CWR}
_FLAG_ORDER = "SFRPU.EW"

# TCP option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018)
OPT_EOL, OPT_NOP, OPT_MSS, OPT_WS, OPT_SACK_PERM, OPT_SACK, OPT_TS = 0, 1, 2, 3, 4, 5, 8
# SCPS-TP options (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)"; IANA kinds 20-23): capabilities (bitmap,
# connection id), SNACK (hole offset, hole size in segments), record boundary,
# corruption experienced
OPT_SCPS, OPT_SNACK, OPT_RB, OPT_CE = 20, 21, 22, 23
# TCP Fast Open, RFC 7413 §4.1.1 (packetdrill writes it "FO <cookie hex>")
OPT_FO = 34

# IP ECN codepoints (RFC 3168 §5)
ECN_CODES = {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3}
ECN_NAMES = {v: k for k, v in ECN_CODES.items()}

MOD32 = 1 << 32
WILD = None  # a field written as "..." in a script


class ScriptSyntaxError(ValueError):
    """The script text itself is malformed."""


class ScriptError(AssertionError):
    """The engine did not behave as the script says."""


# =============================================================================
# Payload patterns: every application byte is known, so content is checked.
# =============================================================================
_PATTERN_LEN = 1 << 16


def _make_pattern(mul: int, add: int) -> bytes:
    # 251 is prime, so the pattern does not repeat on any power-of-two stride.
    return bytes(((i * mul + add) % 251) for i in range(251))


_PATTERNS = {"out": _make_pattern(7, 3), "in": _make_pattern(13, 5)}


def payload_pattern(direction: str, offset: int, length: int) -> bytes:
    """Bytes ``offset .. offset+length`` of the stream sent in ``direction``.

    ``"out"``: what the application gives the engine (``app send``);
    ``"in"``: what the remote (the script) sends (checked by ``app recv``).
    """
    if offset < 0 or length < 0:
        raise ValueError("negative offset/length")
    p = _PATTERNS[direction]
    start = offset % 251
    reps = (start + length) // 251 + 1
    return (p * reps)[start:start + length]


# =============================================================================
# Segments on the wire: a small independent codec (IPv4/IPv6 + TCP).
# =============================================================================
@dataclass
class Segment:
    """A parsed or to-be-built IP+TCP packet (absolute numbers)."""

    version: int
    src: bytes
    dst: bytes
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    urg: int = 0
    options: List[Tuple] = field(default_factory=list)  # ('mss', n), ('nop',), ...
    payload: bytes = b""
    ecn: int = 0
    ttl: int = 64
    df: bool = True

    @property
    def seg_len(self) -> int:
        """SEG.LEN: payload plus one for each of SYN and FIN (RFC 9293 §3.4)."""
        return len(self.payload) + (1 if self.flags & TH_SYN else 0) + (1 if self.flags & TH_FIN else 0)


def _csum(data: bytes) -> int:
    from stackpep._fast.checksum import internet_checksum

    return internet_checksum(data)


def _transport_csum(src: bytes, dst: bytes, segment: bytes) -> int:
    from stackpep._fast.checksum import transport_checksum

    return transport_checksum(src, dst, 6, segment)


def encode_options(options: Sequence[Tuple]) -> bytes:
    out = bytearray()
    for opt in options:
        kind = opt[0]
        if kind == "eol":
            out.append(OPT_EOL)
        elif kind == "nop":
            out.append(OPT_NOP)
        elif kind == "mss":
            out += struct.pack("!BBH", OPT_MSS, 4, opt[1])
        elif kind == "wscale":
            out += struct.pack("!BBB", OPT_WS, 3, opt[1])
        elif kind == "sackOK":
            out += struct.pack("!BB", OPT_SACK_PERM, 2)
        elif kind == "TS":
            out += struct.pack("!BBII", OPT_TS, 10, opt[1] % MOD32, opt[2] % MOD32)
        elif kind == "sack":
            blocks = opt[1]
            out += struct.pack("!BB", OPT_SACK, 2 + 8 * len(blocks))
            for left, right in blocks:
                out += struct.pack("!II", left % MOD32, right % MOD32)
        elif kind == "scps":
            out += struct.pack("!BBBB", OPT_SCPS, 4, opt[1], opt[2])
        elif kind == "snack":
            out += struct.pack("!BBHH", OPT_SNACK, 6, opt[1], opt[2])
        elif kind == "rb":
            out += struct.pack("!BB", OPT_RB, 2)
        elif kind == "ce":
            out += struct.pack("!BB", OPT_CE, 2)
        elif kind == "FO":
            out += struct.pack("!BB", OPT_FO, 2 + len(opt[1] or b"")) + (opt[1] or b"")
        elif kind == "raw":
            out += struct.pack("!BB", opt[1], 2 + len(opt[2])) + opt[2]
        else:  # pragma: no cover - parser only produces the kinds above
            raise ValueError(f"cannot encode option {opt!r}")
    while len(out) % 4:
        out.append(OPT_EOL)
    if len(out) > 40:
        raise ScriptSyntaxError(f"options take {len(out)} bytes, more than 40")
    return bytes(out)


def decode_options(data: bytes) -> List[Tuple]:
    """TCP options as a list of tuples; raises ValueError if malformed."""
    opts: List[Tuple] = []
    i = 0
    while i < len(data):
        kind = data[i]
        if kind == OPT_EOL:
            opts.append(("eol",))
            break
        if kind == OPT_NOP:
            opts.append(("nop",))
            i += 1
            continue
        if i + 1 >= len(data):
            raise ValueError(f"option kind {kind} truncated")
        ln = data[i + 1]
        if ln < 2 or i + ln > len(data):
            raise ValueError(f"option kind {kind} has bad length {ln}")
        body = data[i + 2:i + ln]
        if kind == OPT_MSS and ln == 4:
            opts.append(("mss", struct.unpack("!H", body)[0]))
        elif kind == OPT_WS and ln == 3:
            opts.append(("wscale", body[0]))
        elif kind == OPT_SACK_PERM and ln == 2:
            opts.append(("sackOK",))
        elif kind == OPT_TS and ln == 10:
            opts.append(("TS",) + struct.unpack("!II", body))
        elif kind == OPT_SCPS and ln == 4:
            opts.append(("scps", body[0], body[1]))
        elif kind == OPT_SNACK and ln == 6:
            opts.append(("snack",) + struct.unpack("!HH", body))
        elif kind == OPT_RB and ln == 2:
            opts.append(("rb",))
        elif kind == OPT_CE and ln == 2:
            opts.append(("ce",))
        elif kind == OPT_FO:
            opts.append(("FO", bytes(body)))
        elif kind == OPT_SACK and (ln - 2) % 8 == 0 and ln > 2:
            blocks = [struct.unpack("!II", body[j:j + 8]) for j in range(0, ln - 2, 8)]
            opts.append(("sack", blocks))
        elif kind in (OPT_MSS, OPT_WS, OPT_SACK_PERM, OPT_TS, OPT_SACK):
            raise ValueError(f"option kind {kind} has bad length {ln}")
        else:
            opts.append(("raw", kind, bytes(body)))
        i += ln
    return opts


def build_segment(seg: Segment, bad_checksum: bool = False) -> bytes:
    """IP packet bytes for ``seg`` with correct checksums (unless asked otherwise)."""
    opts = encode_options(seg.options)
    off = (20 + len(opts)) // 4
    tcp = bytearray(struct.pack("!HHIIBBHHH", seg.sport, seg.dport, seg.seq % MOD32, seg.ack % MOD32,
                                off << 4, seg.flags, seg.window, 0, seg.urg) + opts + seg.payload)
    csum = _transport_csum(seg.src, seg.dst, bytes(tcp))
    if bad_checksum:
        csum ^= 0x5555
    struct.pack_into("!H", tcp, 16, csum)
    if seg.version == 4:
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, seg.ecn & 3, 20 + len(tcp), 0,
                                    0x4000 if seg.df else 0, seg.ttl, 6, 0, seg.src, seg.dst))
        struct.pack_into("!H", hdr, 10, _csum(bytes(hdr)))
        return bytes(hdr) + bytes(tcp)
    first = (6 << 28) | ((seg.ecn & 3) << 20)
    return struct.pack("!IHBB16s16s", first, len(tcp), 6, seg.ttl, seg.src, seg.dst) + bytes(tcp)


def parse_segment(pkt: bytes) -> Segment:
    """Parse and validate an IP+TCP packet; raises ValueError naming what is wrong.

    Checks the IP version, header length, total/payload length, protocol, the
    IPv4 header checksum, the TCP data offset and the TCP checksum.
    """
    pkt = bytes(pkt)
    if not pkt:
        raise ValueError("empty packet")
    version = pkt[0] >> 4
    if version == 4:
        if len(pkt) < 20:
            raise ValueError("IPv4 header truncated")
        ihl = (pkt[0] & 15) * 4
        if ihl < 20 or ihl > len(pkt):
            raise ValueError(f"bad IPv4 IHL {ihl}")
        total = struct.unpack_from("!H", pkt, 2)[0]
        if total != len(pkt):
            raise ValueError(f"IPv4 total length {total} != packet length {len(pkt)}")
        if pkt[9] != 6:
            raise ValueError(f"IPv4 protocol {pkt[9]} is not TCP")
        if _csum(pkt[:ihl]) != 0:
            raise ValueError("bad IPv4 header checksum")
        flags_frag = struct.unpack_from("!H", pkt, 6)[0]
        if flags_frag & 0x3fff:
            raise ValueError("IPv4 fragment")
        ecn, ttl, df = pkt[1] & 3, pkt[8], bool(flags_frag & 0x4000)
        src, dst = pkt[12:16], pkt[16:20]
        tcp = pkt[ihl:]
    elif version == 6:
        if len(pkt) < 40:
            raise ValueError("IPv6 header truncated")
        first, plen, nh, ttl = struct.unpack_from("!IHBB", pkt, 0)
        if plen != len(pkt) - 40:
            raise ValueError(f"IPv6 payload length {plen} != {len(pkt) - 40}")
        if nh != 6:
            raise ValueError(f"IPv6 next header {nh} is not TCP")
        ecn, df = (first >> 20) & 3, True
        src, dst = pkt[8:24], pkt[24:40]
        tcp = pkt[40:]
    else:
        raise ValueError(f"IP version {version}")
    if len(tcp) < 20:
        raise ValueError("TCP header truncated")
    sport, dport, seq, ack, offb, flags, win, _csum_field, urg = struct.unpack_from("!HHIIBBHHH", tcp, 0)
    doff = (offb >> 4) * 4
    if doff < 20 or doff > len(tcp):
        raise ValueError(f"bad TCP data offset {doff}")
    if _transport_csum(src, dst, tcp) != 0:
        raise ValueError("bad TCP checksum")
    options = decode_options(tcp[20:doff])
    return Segment(version, src, dst, sport, dport, seq, ack, flags, win, urg, options,
                   tcp[doff:], ecn, ttl, df)


def flags_str(flags: int) -> str:
    s = "".join(c for c in _FLAG_ORDER if flags & FLAG_LETTERS[c])
    return s or "-"


def format_options(options: Sequence[Tuple], seq_base: int, sack_base: int) -> str:
    parts = []
    for o in options:
        k = o[0]
        if k in ("nop", "eol", "sackOK", "rb", "ce"):
            parts.append(k)
        elif k == "scps":
            parts.append(f"scps {o[1]:#04x} id {o[2]}")
        elif k == "snack":
            parts.append(f"snack off {o[1]} size {o[2]}")
        elif k == "FO":
            parts.append("FO" if o[1] == b"" else "FO ..." if o[1] is None else f"FO {o[1].hex()}")
        elif k in ("mss", "wscale"):
            parts.append(f"{k} {o[1]}")
        elif k == "TS":
            parts.append(f"TS val {o[1]} ecr {o[2]}")
        elif k == "sack":
            parts.append("sack " + " ".join(f"{(a - sack_base) % MOD32}:{(b - sack_base) % MOD32}"
                                             for a, b in o[1]))
        else:
            parts.append(f"raw {o[1]} {o[2].hex() or '-'}")
    return "<" + ",".join(parts) + ">"


def format_segment(seg: Segment, seq_base: int, ack_base: int) -> str:
    """A segment in script syntax, numbers relative to the two ISNs."""
    rel = (seg.seq - seq_base) % MOD32
    s = f"{flags_str(seg.flags)} {rel}:{(rel + len(seg.payload)) % MOD32}({len(seg.payload)})"
    if seg.flags & TH_ACK:
        s += f" ack {(seg.ack - ack_base) % MOD32}"
    s += f" win {seg.window}"
    if seg.urg or seg.flags & TH_URG:
        s += f" urg {seg.urg}"
    if seg.options:
        # SACK blocks name the *other* side's sequence space.
        s += " " + format_options(seg.options, seq_base, ack_base)
    if seg.ecn:
        s = f"[{ECN_NAMES[seg.ecn]}] " + s
    return s


# =============================================================================
# Script model and parser
# =============================================================================
@dataclass
class TimeSpec:
    value: float  # seconds
    relative: bool
    tolerance: float = 0.0
    any_time: bool = False  # "*": whenever it happens (only for ">")


@dataclass
class PacketSpec:
    ecn: Optional[int]  # None = not checked (">") / not-ECT ("<")
    flags: int
    seq: Optional[int]  # relative; None = "..."
    end: Optional[int]
    length: Optional[int]
    ack: Optional[int]  # None = absent ("<") or "..."
    ack_given: bool
    win: Optional[int]  # None = "..." or omitted
    win_given: bool
    urg: Optional[int]
    options: Optional[List[Tuple]]  # None = "<...>" (not checked)
    options_given: bool
    bad_checksum: bool = False
    payload_check: bool = True


@dataclass
class Step:
    lineno: int
    time: TimeSpec
    kind: str  # 'in', 'out', 'out_none', 'app', 'icmp', 'event', 'no_event', 'state', 'stat', 'timer'
    args: Any
    text: str


@dataclass
class Script:
    steps: List[Step]
    family: int = 4
    config: Dict[str, Any] = field(default_factory=dict)
    iss: int = 1_000_000_000
    peer_iss: int = 2_000_000_000
    ts_offset: int = 0
    local_port: int = 8080
    remote_port: int = 40000
    xfail: Optional[str] = None
    comment: str = ""
    path: str = "<script>"


_TIME_RE = re.compile(r"^(\*|[+]?\d+(?:\.\d*)?)(?:~(\d+(?:\.\d*)?))?$")
_SEQ_RE = re.compile(r"^(\d+|\.\.\.):(\d+|\.\.\.)\((\d+|\.\.\.)\)$")


def _num(tok: str, what: str, lineno: int) -> int:
    try:
        return int(tok, 0)
    except ValueError:
        raise ScriptSyntaxError(f"line {lineno}: {what} must be an integer, got {tok!r}") from None


def _opt_num(tok: str, what: str, lineno: int) -> Optional[int]:
    return None if tok == "..." else _num(tok, what, lineno)


def _config_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low == "none":
        return None
    try:
        return int(v, 0)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v.strip("\"'")


def _parse_options(text: str, lineno: int) -> Optional[List[Tuple]]:
    text = text.strip()
    if text == "...":
        return None
    opts: List[Tuple] = []
    if not text:
        return opts
    for part in (p.strip() for p in text.split(",")):
        toks = part.split()
        if not toks:
            raise ScriptSyntaxError(f"line {lineno}: empty option")
        k = toks[0]
        if k in ("nop", "eol", "sackOK", "rb", "ce") and len(toks) == 1:
            opts.append((k,))
        elif k == "scps" and len(toks) == 4 and toks[2] == "id":
            opts.append(("scps", _opt_num(toks[1], "scps bits", lineno), _opt_num(toks[3], "scps id", lineno)))
        elif k == "snack" and len(toks) == 5 and toks[1] == "off" and toks[3] == "size":
            opts.append(("snack", _opt_num(toks[2], "snack offset", lineno),
                         _opt_num(toks[4], "snack size", lineno)))
        elif k == "FO" and len(toks) <= 2:
            # packetdrill: "FO" = a cookie request, "FO <hex>" = that cookie; "FO ..." any cookie
            try:
                cookie = None if toks[1:] == ["..."] else bytes.fromhex(toks[1]) if len(toks) == 2 else b""
            except ValueError:
                raise ScriptSyntaxError(f"line {lineno}: FO cookie must be hex, got {toks[1]!r}") from None
            opts.append(("FO", cookie))
        elif k in ("mss", "wscale") and len(toks) == 2:
            opts.append((k, _opt_num(toks[1], k, lineno)))
        elif k == "TS" and len(toks) == 5 and toks[1] == "val" and toks[3] == "ecr":
            opts.append(("TS", _opt_num(toks[2], "TS val", lineno), _opt_num(toks[4], "TS ecr", lineno)))
        elif k == "sack" and len(toks) >= 2:
            blocks = []
            for b in toks[1:]:
                m = re.match(r"^(\d+):(\d+)$", b)
                if not m:
                    raise ScriptSyntaxError(f"line {lineno}: bad SACK block {b!r}")
                blocks.append((int(m.group(1)), int(m.group(2))))
            opts.append(("sack", blocks))
        elif k == "raw" and len(toks) in (2, 3):
            body = bytes.fromhex(toks[2]) if len(toks) == 3 and toks[2] != "-" else b""
            opts.append(("raw", _num(toks[1], "option kind", lineno), body))
        else:
            raise ScriptSyntaxError(f"line {lineno}: unknown option {part!r}")
    return opts


def _parse_packet(rest: str, lineno: int, outbound: bool) -> PacketSpec:
    opts_text = None
    m = re.search(r"<([^<>]*)>\s*$", rest)
    if m:
        opts_text = m.group(1)
        rest = rest[:m.start()]
    toks = rest.split()
    ecn = None
    if toks and toks[0].startswith("["):
        name = toks.pop(0).strip("[]")
        if name not in ECN_CODES:
            raise ScriptSyntaxError(f"line {lineno}: unknown ECN codepoint {name!r}")
        ecn = ECN_CODES[name]
    if not toks:
        raise ScriptSyntaxError(f"line {lineno}: missing flags")
    flags = 0
    for ch in toks.pop(0):
        if ch not in FLAG_LETTERS:
            raise ScriptSyntaxError(f"line {lineno}: unknown flag {ch!r}")
        flags |= FLAG_LETTERS[ch]
    if not toks:
        raise ScriptSyntaxError(f"line {lineno}: missing sequence numbers start:end(len)")
    sm = _SEQ_RE.match(toks.pop(0))
    if not sm:
        raise ScriptSyntaxError(f"line {lineno}: sequence must be start:end(len)")
    seq, end, length = (None if g == "..." else int(g) for g in sm.groups())
    if seq is not None and end is not None and length is not None and (seq + length) % MOD32 != end % MOD32:
        raise ScriptSyntaxError(f"line {lineno}: {seq}:{end}({length}) is inconsistent")
    if not outbound and None in (seq, length):
        raise ScriptSyntaxError(f"line {lineno}: inbound segments need explicit numbers")
    spec = PacketSpec(ecn, flags, seq, end, length, None, False, None, False, None, None, False)
    while toks:
        k = toks.pop(0)
        if k in ("ack", "win", "urg"):
            if not toks:
                raise ScriptSyntaxError(f"line {lineno}: {k} needs a value")
            v = toks.pop(0)
            if not outbound and v == "...":
                raise ScriptSyntaxError(f"line {lineno}: inbound {k} cannot be '...'")
            val = _opt_num(v, k, lineno)
            if k == "ack":
                spec.ack, spec.ack_given = val, True
            elif k == "win":
                spec.win, spec.win_given = val, True
            else:
                spec.urg = val
        elif k == "badcsum" and not outbound:
            spec.bad_checksum = True
        elif k == "anydata" and outbound:
            spec.payload_check = False
        else:
            raise ScriptSyntaxError(f"line {lineno}: unexpected {k!r}")
    if opts_text is not None:
        spec.options = _parse_options(opts_text, lineno)
        spec.options_given = True
        if not outbound and spec.options is None:
            raise ScriptSyntaxError(f"line {lineno}: inbound options cannot be '<...>'")
    else:
        spec.options = []
    if outbound and flags & TH_ACK and not spec.ack_given:
        raise ScriptSyntaxError(f"line {lineno}: outbound ACK segment needs 'ack N' (or 'ack ...')")
    if not outbound and not spec.win_given:
        raise ScriptSyntaxError(f"line {lineno}: inbound segment needs 'win N'")
    return spec


_STAT_OPS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
}


def _parse_step(lineno: int, text: str) -> Step:
    tok, _, rest = text.partition(" ")
    tm = _TIME_RE.match(tok)
    if not tm:
        raise ScriptSyntaxError(f"line {lineno}: expected a time, got {tok!r}")
    if tm.group(1) == "*":
        t = TimeSpec(0.0, True, any_time=True)
    else:
        t = TimeSpec(float(tm.group(1).lstrip("+")), tm.group(1).startswith("+"),
                     float(tm.group(2)) if tm.group(2) else 0.0)
    rest = rest.strip()
    word, _, args = rest.partition(" ")
    args = args.strip()
    if t.any_time and word != ">":
        raise ScriptSyntaxError(f"line {lineno}: '*' time is only for '>' lines")
    if word == "<":
        return Step(lineno, t, "in", _parse_packet(args, lineno, False), text)
    if word == ">":
        if args == "none":
            return Step(lineno, t, "out_none", None, text)
        return Step(lineno, t, "out", _parse_packet(args, lineno, True), text)
    if word == "app":
        toks = args.split()
        if not toks:
            raise ScriptSyntaxError(f"line {lineno}: app needs a verb")
        verb = toks[0]
        if verb in ("connect", "listen", "send_eof", "abort") and len(toks) == 1:
            return Step(lineno, t, "app", (verb, None, None), text)
        if verb in ("send", "recv"):
            if len(toks) == 2:
                return Step(lineno, t, "app", (verb, _num(toks[1], verb, lineno), None), text)
            if len(toks) == 4 and toks[2] == "->":
                return Step(lineno, t, "app", (verb, _num(toks[1], verb, lineno), _num(toks[3], "result", lineno)), text)
        raise ScriptSyntaxError(f"line {lineno}: bad app action {args!r}")
    if word == "icmp":
        toks = args.split()
        if len(toks) == 3 and toks[0] == "ptb" and toks[1] == "mtu":
            return Step(lineno, t, "icmp", _num(toks[2], "mtu", lineno), text)
        raise ScriptSyntaxError(f"line {lineno}: expected 'icmp ptb mtu N'")
    if word in ("event", "!event"):
        toks = args.split()
        if not toks:
            raise ScriptSyntaxError(f"line {lineno}: event needs a name")
        attrs = {}
        for kv in toks[1:]:
            k, eq, v = kv.partition("=")
            if not eq:
                raise ScriptSyntaxError(f"line {lineno}: event attribute must be key=value")
            attrs[k] = v
        return Step(lineno, t, "event" if word == "event" else "no_event", (toks[0], attrs), text)
    if word == "state":
        if not args or " " in args:
            raise ScriptSyntaxError(f"line {lineno}: state needs one name")
        return Step(lineno, t, "state", args, text)
    if word == "stat":
        toks = args.split()
        if len(toks) != 3 or toks[1] not in _STAT_OPS:
            raise ScriptSyntaxError(f"line {lineno}: expected 'stat NAME OP VALUE'")
        return Step(lineno, t, "stat", (toks[0], toks[1], _config_value(toks[2])), text)
    if word == "timer":
        if args == "none":
            return Step(lineno, t, "timer", None, text)
        m = re.match(r"^\+(\d+(?:\.\d*)?)$", args)
        if not m:
            raise ScriptSyntaxError(f"line {lineno}: expected 'timer none' or 'timer +SECONDS'")
        return Step(lineno, t, "timer", float(m.group(1)), text)
    raise ScriptSyntaxError(f"line {lineno}: unknown action {word!r}")


def parse_script(text: str, path: str = "<script>") -> Script:
    steps: List[Step] = []
    script = Script(steps, path=path)
    comment_lines: List[str] = []
    seen_code = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("//"):
            if not seen_code:
                comment_lines.append(line[2:].strip())
            continue
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        seen_code = True
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word in ("ipv4", "ipv6") and not rest:
            script.family = 4 if word == "ipv4" else 6
        elif word == "config":
            for kv in rest.split():
                k, eq, v = kv.partition("=")
                if not eq:
                    raise ScriptSyntaxError(f"line {lineno}: config entries are key=value")
                script.config[k] = _config_value(v)
        elif word in ("iss", "peer_iss", "ts_offset", "local_port", "remote_port"):
            setattr(script, word, _num(rest, word, lineno) % (MOD32 if "iss" in word or word == "ts_offset" else 65536))
        elif word == "xfail":
            script.xfail = rest or "xfail"
        else:
            steps.append(_parse_step(lineno, line))
    script.comment = " ".join(comment_lines)
    return script


def load_script(path: Union[str, Path]) -> Script:
    p = Path(path)
    return parse_script(p.read_text(), str(p))


# =============================================================================
# Runner
# =============================================================================
LOCAL4, REMOTE4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
LOCAL6 = bytes.fromhex("fd000000000000000000000000000001")
REMOTE6 = bytes.fromhex("fd000000000000000000000000000002")

US = 1_000_000
# How far a "*" line lets virtual time run while waiting for its packet.
ANY_TIME_HORIZON_US = 3600 * US
# A blocked engine whose timer keeps firing at the same instant is a bug, not a
# reason to hang the test run.
_MAX_TIMER_CALLS_PER_INSTANT = 1000


def _us(seconds: float) -> int:
    return int(round(seconds * US))


def _fmt_t(us: int) -> str:
    return f"{us / US:.6f}".rstrip("0").rstrip(".") if us % 1000 else f"{us / US:.3f}"


def config_from_script(entries: Dict[str, Any]):
    """TcpConfig from ``config k=v`` entries; ``scps.NAME=v`` entries build
    ``TcpConfig.scps`` (a ScpsSettings), ``scps=true`` alone gives its defaults."""
    from stackpep.tcp.config import ScpsSettings, TcpConfig

    plain = {k: v for k, v in entries.items() if not k.startswith("scps.")}
    scps = {k[5:]: v for k, v in entries.items() if k.startswith("scps.")}
    on = plain.pop("scps", None)
    if scps or on is True:
        plain["scps"] = ScpsSettings(**scps)
    if isinstance(plain.get("tfo_key"), str):
        plain["tfo_key"] = bytes.fromhex(plain["tfo_key"])   # config tfo_key=<32 hex digits>
    return TcpConfig(**plain)


def default_engine_factory(script: Script, local: bytes, remote: bytes):
    from stackpep._fast.tcp import TcpConnection
    from stackpep.tcp.config import TcpConfig

    cfg = config_from_script(script.config)
    return TcpConnection(cfg, local, script.local_port, remote, script.remote_port,
                         script.iss, ts_offset=script.ts_offset)


class ScriptRunner:
    """Runs one script against one engine; ``run()`` raises ScriptError on mismatch."""

    def __init__(self, script: Script, engine_factory: Optional[Callable] = None):
        self.script = script
        if script.family == 4:
            self.local, self.remote = LOCAL4, REMOTE4
        else:
            self.local, self.remote = LOCAL6, REMOTE6
        self.conn = (engine_factory or default_engine_factory)(script, self.local, self.remote)
        self.now = 0  # µs; script time 0 is engine time 0
        self.script_time = 0  # µs, scripted time of the previous line
        self.out: List[Tuple[int, bytes]] = []  # emitted, not yet matched: (time, packet)
        self.events: List[Tuple[int, Any]] = []
        self.event_pos = 0
        self.sent_bytes = 0  # app bytes accepted by the engine
        self.recv_bytes = 0  # app bytes read from the engine
        self.log: List[str] = []

    # -- helpers ------------------------------------------------------------------
    def fail(self, step: Optional[Step], msg: str) -> None:
        where = f"{self.script.path}:{step.lineno}" if step else self.script.path
        tail = "\n".join("    " + line for line in self.log[-25:])
        line = f"\n  script line: {step.text}" if step else ""
        raise ScriptError(f"{where}: {msg}{line}\n  at t={_fmt_t(self.now)}; recent trace:\n{tail}")

    def _collect(self) -> None:
        for pkt in self.conn.packets_to_send(self.now):
            pkt = bytes(pkt)
            self.out.append((self.now, pkt))
            try:
                seg = parse_segment(pkt)
                desc = format_segment(seg, self.script.iss, self.script.peer_iss)
            except ValueError as exc:
                desc = f"<malformed: {exc}>"
            self.log.append(f"{_fmt_t(self.now)} > {desc}")
        while True:
            ev = self.conn.next_event()
            if ev is None:
                break
            self.events.append((self.now, ev))
            self.log.append(f"{_fmt_t(self.now)} event {ev!r}")

    def _fire_timers_until(self, limit_us: int, stop_on_output: bool = False) -> None:
        """Advance the clock to each timer deadline <= limit_us and fire it."""
        calls_here = 0
        while True:
            if stop_on_output and self.out:
                return
            deadline = self.conn.get_timer()
            if deadline is None or deadline > limit_us:
                return
            if deadline > self.now:
                self.now = deadline
                calls_here = 0
            calls_here += 1
            if calls_here > _MAX_TIMER_CALLS_PER_INSTANT:
                self.fail(None, f"timer keeps firing at t={_fmt_t(self.now)} without moving on")
            self.log.append(f"{_fmt_t(self.now)} (timer)")
            self.conn.handle_timer(self.now)
            self._collect()

    def _advance(self, t_us: int) -> None:
        self._fire_timers_until(t_us)
        if t_us > self.now:
            self.now = t_us

    def _check_no_output(self, step: Step) -> None:
        if self.out:
            t, pkt = self.out[0]
            try:
                desc = format_segment(parse_segment(pkt), self.script.iss, self.script.peer_iss)
            except ValueError as exc:
                desc = f"<malformed: {exc}>"
            self.fail(step, f"unexpected outbound packet at t={_fmt_t(t)}: {desc}")

    # -- main loop ----------------------------------------------------------------
    def run(self) -> "ScriptRunner":
        self._collect()
        for step in self.script.steps:
            ts = step.time
            if ts.any_time:
                t_us = self.script_time
            else:
                t_us = self.script_time + _us(ts.value) if ts.relative else _us(ts.value)
            if t_us < self.script_time:
                self.fail(step, "time goes backwards")
            self.script_time = t_us
            if step.kind == "out":
                self._expect_packet(step, t_us)
                continue
            self._advance(t_us)
            if step.kind == "out_none":
                self._check_no_output(step)
                continue
            self._check_no_output(step)
            getattr(self, "_do_" + step.kind)(step)
            self._collect()
        self._check_no_output(self.script.steps[-1] if self.script.steps else None)
        return self

    # -- step kinds ---------------------------------------------------------------
    def _expect_packet(self, step: Step, t_us: int) -> None:
        tol = _us(step.time.tolerance)
        if step.time.any_time:
            limit = self.now + ANY_TIME_HORIZON_US
        else:
            limit = t_us + tol
        if not self.out:
            self._fire_timers_until(limit, stop_on_output=True)
        if not self.out:
            nt = self.conn.get_timer()
            self.fail(step, f"expected a packet at t={_fmt_t(t_us)} but none was sent"
                      f" (next timer: {'none' if nt is None else 't=' + _fmt_t(nt)})")
        when, pkt = self.out.pop(0)
        if not step.time.any_time and abs(when - t_us) > tol:
            self.fail(step, f"packet sent at t={_fmt_t(when)}, script expects t={_fmt_t(t_us)}"
                      + (f"~{step.time.tolerance}" if tol else ""))
        if when > self.now:
            self.now = when
        if step.time.any_time:
            self.script_time = max(self.script_time, when)
        self._match(step, pkt)

    def _match(self, step: Step, pkt: bytes) -> None:
        spec: PacketSpec = step.args
        try:
            seg = parse_segment(pkt)
        except ValueError as exc:
            self.fail(step, f"malformed outbound packet: {exc}")
        desc = format_segment(seg, self.script.iss, self.script.peer_iss)
        errs = []
        if seg.version != self.script.family:
            errs.append(f"IP version {seg.version}")
        if seg.src != self.local or seg.dst != self.remote:
            errs.append("wrong IP addresses")
        if seg.sport != self.script.local_port or seg.dport != self.script.remote_port:
            errs.append(f"wrong ports {seg.sport}->{seg.dport}")
        if seg.flags != spec.flags:
            errs.append(f"flags {flags_str(seg.flags)} != {flags_str(spec.flags)}")
        rel_seq = (seg.seq - self.script.iss) % MOD32
        if spec.seq is not None and rel_seq != spec.seq % MOD32:
            errs.append(f"seq {rel_seq} != {spec.seq}")
        if spec.length is not None and len(seg.payload) != spec.length:
            errs.append(f"payload length {len(seg.payload)} != {spec.length}")
        if spec.end is not None and (rel_seq + len(seg.payload)) % MOD32 != spec.end % MOD32:
            errs.append(f"end {(rel_seq + len(seg.payload)) % MOD32} != {spec.end}")
        if spec.flags & TH_ACK and spec.ack is not None:
            rel_ack = (seg.ack - self.script.peer_iss) % MOD32
            if rel_ack != spec.ack % MOD32:
                errs.append(f"ack {rel_ack} != {spec.ack}")
        if spec.win is not None and seg.window != spec.win:
            errs.append(f"win {seg.window} != {spec.win}")
        if spec.urg is not None and seg.urg != spec.urg:
            errs.append(f"urg {seg.urg} != {spec.urg}")
        if spec.ecn is not None and seg.ecn != spec.ecn:
            errs.append(f"IP ECN {ECN_NAMES[seg.ecn]} != {ECN_NAMES[spec.ecn]}")
        if spec.options is not None:
            err = self._match_options(spec.options, seg.options)
            if err:
                errs.append(err)
        if spec.payload_check and seg.payload:
            off = rel_seq + (1 if seg.flags & TH_SYN else 0) - 1
            if off < 0 or off + len(seg.payload) > self.sent_bytes:
                errs.append(f"payload at stream offset {off}..{off + len(seg.payload)} was never sent"
                            f" by the application ({self.sent_bytes} bytes sent)")
            elif seg.payload != payload_pattern("out", off, len(seg.payload)):
                errs.append("payload bytes differ from what the application sent")
        if errs:
            self.fail(step, "outbound packet differs: " + "; ".join(errs) + f"\n  actual: {desc}")

    def _match_options(self, want: List[Tuple], got: List[Tuple]) -> Optional[str]:
        # NOP/EOL are layout (the wire layer's concern): compare the meaningful
        # options, each exactly once, in any order.
        got_m = [o for o in got if o[0] not in ("nop", "eol")]
        want_m = [o for o in want if o[0] not in ("nop", "eol")]
        remaining = list(got_m)
        for w in want_m:
            for i, g in enumerate(remaining):
                if self._opt_eq(w, g):
                    del remaining[i]
                    break
            else:
                return f"option {self._fmt_opt(w)} missing (got {self._fmt_opts(got_m)})"
        if remaining:
            return f"unexpected option(s) {self._fmt_opts(remaining)}"
        return None

    def _fmt_opts(self, opts) -> str:
        return format_options(opts, self.script.peer_iss, self.script.peer_iss)

    def _fmt_opt(self, o) -> str:
        return " ".join("..." if x is None else str(x) for x in o)

    def _opt_eq(self, w: Tuple, g: Tuple) -> bool:
        if w[0] != g[0]:
            return False
        if w[0] == "sack":
            base = self.script.peer_iss  # our SACK blocks name the peer's sequence space
            return [((a - base) % MOD32, (b - base) % MOD32) for a, b in g[1]] == [
                (a % MOD32, b % MOD32) for a, b in w[1]]
        if w[0] == "raw":
            return w[1:] == g[1:]
        return all(x is None or x == y for x, y in zip(w[1:], g[1:])) and len(w) == len(g)

    def _do_in(self, step: Step) -> None:
        spec: PacketSpec = step.args
        sc = self.script
        seq = (sc.peer_iss + spec.seq) % MOD32
        ack = (sc.iss + spec.ack) % MOD32 if spec.ack is not None else 0
        opts = []
        for o in spec.options:
            if o[0] == "sack":  # inbound SACK blocks name our (the engine's) sequence space
                o = ("sack", [((sc.iss + a) % MOD32, (sc.iss + b) % MOD32) for a, b in o[1]])
            opts.append(o)
        off = spec.seq + (1 if spec.flags & TH_SYN else 0) - 1
        payload = payload_pattern("in", max(off, 0), spec.length) if spec.length else b""
        seg = Segment(sc.family, self.remote, self.local, sc.remote_port, sc.local_port, seq, ack,
                      spec.flags, spec.win, spec.urg or 0, opts, payload, spec.ecn or 0)
        pkt = build_segment(seg, bad_checksum=spec.bad_checksum)
        self.log.append(f"{_fmt_t(self.now)} < {format_segment(seg, sc.peer_iss, sc.iss)}")
        self.conn.receive_packet(pkt, self.now)

    def _do_app(self, step: Step) -> None:
        verb, n, want = step.args
        if verb == "connect":
            self.conn.connect(self.now)
        elif verb == "listen":
            self.conn.listen()
        elif verb == "send_eof":
            self.conn.send_eof()
        elif verb == "abort":
            self.conn.abort()
        elif verb == "send":
            got = self.conn.send(payload_pattern("out", self.sent_bytes, n))
            expect = n if want is None else want
            if got != expect:
                self.fail(step, f"send({n}) accepted {got} bytes, script expects {expect}")
            self.sent_bytes += got
        elif verb == "recv":
            data = bytes(self.conn.recv(n))
            expect = n if want is None else want
            if len(data) != expect:
                self.fail(step, f"recv({n}) returned {len(data)} bytes, script expects {expect}")
            if data != payload_pattern("in", self.recv_bytes, len(data)):
                self.fail(step, "received bytes differ from what the peer sent")
            self.recv_bytes += len(data)
        self.log.append(f"{_fmt_t(self.now)} app {verb}" + ("" if n is None else f" {n}"))

    def _do_icmp(self, step: Step) -> None:
        self.log.append(f"{_fmt_t(self.now)} icmp ptb mtu {step.args}")
        self.conn.icmp_packet_too_big(step.args, self.now)

    @staticmethod
    def _ev_attr_eq(ev: Any, k: str, v: str) -> bool:
        if not hasattr(ev, k):
            return False
        a = getattr(ev, k)
        if a is None:
            return v.lower() == "none"
        if isinstance(a, bool):
            return str(a).lower() == v.lower()
        if isinstance(a, int):
            try:
                return a == int(v, 0)
            except ValueError:
                return False
        name = getattr(a, "name", None)
        return str(a) == v or (name is not None and str(name).lower() == v.lower()) or str(getattr(a, "value", a)) == v

    def _do_event(self, step: Step) -> None:
        name, attrs = step.args
        for i in range(self.event_pos, len(self.events)):
            ev = self.events[i][1]
            if type(ev).__name__ == name and all(self._ev_attr_eq(ev, k, v) for k, v in attrs.items()):
                self.event_pos = i + 1
                return
        pending = [repr(e) for _, e in self.events[self.event_pos:]]
        self.fail(step, f"no event {name} {attrs or ''} (pending events: {pending})")

    def _do_no_event(self, step: Step) -> None:
        name, attrs = step.args
        for _, ev in self.events[self.event_pos:]:
            if type(ev).__name__ == name and all(self._ev_attr_eq(ev, k, v) for k, v in attrs.items()):
                self.fail(step, f"unexpected event {ev!r}")

    def _do_state(self, step: Step) -> None:
        if self.conn.state != step.args:
            self.fail(step, f"state is {self.conn.state}, script expects {step.args}")

    def _do_stat(self, step: Step) -> None:
        name, op, want = step.args
        obj: Any = self.conn.statistics()
        for part in name.split("."):
            if isinstance(obj, dict):
                if part not in obj:
                    if not self._zero_omitted(name, part):
                        self.fail(step, f"statistics have no {name!r} (keys: {sorted(obj)})")
                    obj = 0
                    break
                obj = obj[part]
            elif hasattr(obj, part):
                obj = getattr(obj, part)
            else:
                self.fail(step, f"statistics have no {name!r}")
        if not _STAT_OPS[op](obj, want):
            self.fail(step, f"stat {name} is {obj!r}, script expects {op} {want!r}")

    @staticmethod
    def _zero_omitted(name: str, key: str) -> bool:
        # statistics().drops omits zero counters: a known reason reads as 0.
        if not name.startswith("drops."):
            return False
        try:
            from stackpep.tcp.statistics import DROP_REASONS
        except ImportError:  # pragma: no cover
            return False
        return key in DROP_REASONS

    def _do_timer(self, step: Step) -> None:
        t = self.conn.get_timer()
        if step.args is None:
            if t is not None:
                self.fail(step, f"timer armed for t={_fmt_t(t)}, script expects none")
        elif t is None or t != self.now + _us(step.args):
            self.fail(step, f"timer is {None if t is None else _fmt_t(t)}, script expects"
                      f" t={_fmt_t(self.now + _us(step.args))}")


def run_script(script: Union[Script, str, Path], engine_factory: Optional[Callable] = None) -> ScriptRunner:
    """Run a script (object, text or path to a .pkt file); raises ScriptError on mismatch."""
    if isinstance(script, Path) or (isinstance(script, str) and script.endswith(".pkt") and "\n" not in script):
        script = load_script(script)
    elif isinstance(script, str):
        script = parse_script(script)
    return ScriptRunner(script, engine_factory).run()


def _main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m stackpep.tcp.script FILE.pkt ...``: run scripts, print PASS/FAIL."""
    import sys

    paths = list(argv if argv is not None else sys.argv[1:])
    if not paths:
        print("usage: python -m stackpep.tcp.script FILE.pkt ...", file=sys.stderr)
        return 2
    failed = 0
    for p in paths:
        try:
            sc = load_script(p)
            run_script(sc)
            print(f"PASS {p}")
        except (ScriptError, ScriptSyntaxError) as exc:
            failed += 1
            print(f"FAIL {exc}\n")
    print(f"{len(paths) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
