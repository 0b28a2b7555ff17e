"""Validated Repr values (smoltcp's `Repr`): `parse(buf)`, `buffer_len()`, `emit(buf)`.

For tests and tools, not the per-packet path.  Parsing goes through the same C
parsers as the fast path (stackpep._fast.wire), so integrity and sanity rules,
error types and counters are the same everywhere; `parse(emit(x)) == x` holds
for every Repr (tests/test_wire_props.py).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple, Union

from stackpep._fast import checksum as _cs
from stackpep._fast import wire as _w

# Segment.csum_status values (wire.pxd CSUM_*)
CSUM_UNCHECKED, CSUM_GOOD, CSUM_PARTIAL, CSUM_BAD = 0, 1, 2, 3

# WIRE_* codes used by the checks done at this level (wire.pxd)
_IP_VERSION = -4
_IP_VERSION_MISMATCH = -23

plateau_mtu = _w.plateau_mtu      # RFC 1191 §5/§7 (re-exported for the PEP)


def _version_error(first: int, want: int):
    """The other IP version is a mismatch with what the caller (ethertype) said
    (RFC 1122 §3.2.1.1, RFC 8200 §3), as parse_frame reports it; any other nibble
    is not IP."""
    got = first >> 4
    code = _IP_VERSION_MISMATCH if got in (4, 6) else _IP_VERSION
    return _reject(code, f"version {got}, expected {want}")

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100


def _reject(code: int, detail: Optional[str] = None):
    _w.count(code)
    return _w.error_for(code, detail)


class TcpFlags(enum.IntFlag):
    """RFC 9293 §3.1 control bits (RFC 3168 §6.1 for ECE/CWR)."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80
    AE = 0x100      # RFC 3540 "NS", AccECN "AE": bit 0 of byte 12 (TcpRepr.flags is 12 bits)


# ---- Ethernet -----------------------------------------------------------------------
@dataclass(frozen=True)
class EthernetRepr:
    """Ethernet II header, optional 802.1Q tag (IEEE 802.1Q §9.3)."""

    dst: bytes
    src: bytes
    ethertype: int
    vlan_tci: Optional[int] = None

    @classmethod
    def parse(cls, buf) -> "EthernetRepr":
        f = _w.EthernetFrame(buf)
        return cls(f.dst, f.src, f.ethertype, f.vlan_tci)

    def buffer_len(self) -> int:
        return 14 if self.vlan_tci is None else 18

    def emit(self, buf) -> int:
        mv = memoryview(buf)
        n = self.buffer_len()
        mv[0:6] = self.dst
        mv[6:12] = self.src
        if self.vlan_tci is not None:
            mv[12:14] = ETH_P_8021Q.to_bytes(2, "big")
            mv[14:16] = self.vlan_tci.to_bytes(2, "big")
        mv[n - 2:n] = self.ethertype.to_bytes(2, "big")
        return n


# ---- IPv4 ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Ipv4Repr:
    """IPv4 header (RFC 791 §3.1).  Fragments are recognised (more_frags,
    frag_offset); options are carried verbatim, never interpreted."""

    src: bytes
    dst: bytes
    protocol: int
    payload_len: int
    ttl: int = 64
    dscp: int = 0
    ecn: int = 0
    ident: int = 0
    dont_frag: bool = False
    more_frags: bool = False
    frag_offset: int = 0          # 8-byte units
    options: bytes = b""

    version = 4

    @property
    def is_fragment(self) -> bool:
        return self.more_frags or self.frag_offset != 0

    @classmethod
    def parse(cls, buf, verify_checksum: bool = True) -> "Ipv4Repr":
        mv = memoryview(buf)
        if len(mv) and mv[0] >> 4 != 4:
            raise _version_error(mv[0], 4)
        ip = _w.parse_ip(mv, 1 if verify_checksum else 0)
        return cls(
            src=ip["src"], dst=ip["dst"], protocol=ip["proto"], payload_len=ip["end"] - ip["hdr_len"],
            ttl=ip["ttl"], dscp=ip["tos"] >> 2, ecn=ip["tos"] & 3, ident=ip["ident"], dont_frag=ip["df"],
            more_frags=ip["more_frags"], frag_offset=ip["frag_offset"], options=bytes(mv[20:ip["hdr_len"]]),
        )

    def buffer_len(self) -> int:
        return 20 + len(self.options)

    def emit(self, buf) -> int:
        return _w.emit_ip_header(buf, 4, self.src, self.dst, self.protocol, self.payload_len,
                                 tos=(self.dscp << 2) | self.ecn, ttl=self.ttl, ident=self.ident,
                                 df=self.dont_frag, mf=self.more_frags, frag_offset=self.frag_offset,
                                 options=self.options)


# ---- IPv6 ---------------------------------------------------------------------------
_EXT_HEADERS = {0, 43, 44, 51, 60, 135, 139, 140}


@dataclass(frozen=True)
class Ipv6ExtHeader:
    """One extension header (RFC 8200 §4): `kind` is the next-header value that
    names it, `data` its bytes after the next-header and length octets (for a
    fragment header, after next-header and reserved: offset/flags, ident)."""

    kind: int
    data: bytes

    def __post_init__(self):
        if self.kind not in _EXT_HEADERS:
            raise ValueError(f"{self.kind} is not an extension header")
        n = len(self.data) + 2
        if self.kind == 44 and n != 8:
            raise ValueError("fragment header is 8 bytes (RFC 8200 §4.5)")
        if self.kind == 51 and (n % 4 or n < 8 or n > 1024):
            raise ValueError("AH length must be a multiple of 4 bytes (RFC 4302 §2.2)")
        if self.kind not in (44, 51) and (n % 8 or n > 2048):
            raise ValueError("extension header length must be a multiple of 8 bytes (RFC 8200 §4)")

    def buffer_len(self) -> int:
        return len(self.data) + 2

    def length_octet(self) -> int:
        n = self.buffer_len()
        if self.kind == 44:
            return 0
        if self.kind == 51:
            return n // 4 - 2
        return n // 8 - 1


@dataclass(frozen=True)
class Ipv6Repr:
    """IPv6 header (RFC 8200 §3) and its extension-header chain.  `next_header`
    is the upper-layer protocol (after the chain), `payload_len` the upper-layer
    length (extension headers excluded)."""

    src: bytes
    dst: bytes
    next_header: int
    payload_len: int
    hop_limit: int = 64
    traffic_class: int = 0
    flow_label: int = 0
    ext_headers: Tuple[Ipv6ExtHeader, ...] = ()

    version = 6

    @property
    def dscp(self) -> int:
        return self.traffic_class >> 2

    @property
    def ecn(self) -> int:
        return self.traffic_class & 3

    @property
    def fragment(self) -> Optional[Tuple[int, bool, int]]:
        """(offset in 8-byte units, more fragments, ident) from a fragment header."""
        for h in self.ext_headers:
            if h.kind == 44:
                v = int.from_bytes(h.data[0:2], "big")
                return v >> 3, bool(v & 1), int.from_bytes(h.data[2:6], "big")
        return None

    @property
    def is_fragment(self) -> bool:
        f = self.fragment
        return f is not None and (f[0] != 0 or f[1])

    @property
    def final_dst(self) -> bytes:
        """The destination of the upper-layer pseudo-header (RFC 8200 §8.1): the
        first routing header with Segments Left > 0 names it -- type 2 its home
        address (RFC 6275 §6.4), type 4 Segment List[0] (RFC 8754 §2) -- else dst.
        (Other types with segments left are refused by the parser.)"""
        for h in self.ext_headers:
            if h.kind == 43 and len(h.data) >= 22 and h.data[1] != 0 and h.data[0] in (2, 4):
                return bytes(h.data[6:22])
        return self.dst

    @classmethod
    def parse(cls, buf) -> "Ipv6Repr":
        mv = memoryview(buf)
        if len(mv) and mv[0] >> 4 != 6:
            raise _version_error(mv[0], 6)
        ip = _w.parse_ip(mv, 0)
        exts = []
        for kind, off, length in ip["ext"]:
            body = bytes(mv[off:off + length])
            exts.append(Ipv6ExtHeader(kind, body[2:]))
        return cls(
            src=ip["src"], dst=ip["dst"], next_header=ip["proto"], payload_len=ip["end"] - ip["upper_off"],
            hop_limit=ip["ttl"], traffic_class=ip["tos"], flow_label=ip["flow_label"], ext_headers=tuple(exts),
        )

    def buffer_len(self) -> int:
        return 40 + sum(h.buffer_len() for h in self.ext_headers)

    def emit(self, buf) -> int:
        ext_len = sum(h.buffer_len() for h in self.ext_headers)
        first = self.ext_headers[0].kind if self.ext_headers else self.next_header
        n = _w.emit_ip_header(buf, 6, self.src, self.dst, first, ext_len + self.payload_len,
                              tos=self.traffic_class, ttl=self.hop_limit, flow_label=self.flow_label)
        mv = memoryview(buf)
        for i, h in enumerate(self.ext_headers):
            nxt = self.ext_headers[i + 1].kind if i + 1 < len(self.ext_headers) else self.next_header
            mv[n] = nxt
            mv[n + 1] = h.length_octet()
            mv[n + 2:n + h.buffer_len()] = h.data
            n += h.buffer_len()
        return n


# ---- TCP ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScpsCapabilities:
    """SCPS capabilities option, kind 20 (CCSDS 714.0-B-2 §3.2.3; facts in docs/scps-tp-notes)."""

    bitmap: Optional[int] = 0            # None: the 4-byte capabilities option is absent
    connection_id: Optional[int] = 0
    # extended-capabilities option (a second kind-20 option, CCSDS 714.0-B-2
    # §3.2.5): its bytes after kind and length -- (binding space id,
    # length-in-16-bit-words << 4, data) groups; empty or 3..12 bytes.
    binding_space: bytes = b""

    BETS, SNACK1, SNACK2, COMPRESS, NL_TIMESTAMPS = 0x80, 0x40, 0x20, 0x10, 0x08

    @property
    def has_capabilities(self) -> bool:
        """The 4-byte capabilities option is present (else only the extended one)."""
        return self.bitmap is not None

    @property
    def bets(self) -> bool:
        return bool((self.bitmap or 0) & self.BETS)

    @property
    def snack1(self) -> bool:
        return bool((self.bitmap or 0) & self.SNACK1)

    @property
    def snack2(self) -> bool:
        return bool((self.bitmap or 0) & self.SNACK2)

    @property
    def compress(self) -> bool:
        return bool((self.bitmap or 0) & self.COMPRESS)

    @property
    def nl_timestamps(self) -> bool:
        return bool((self.bitmap or 0) & self.NL_TIMESTAMPS)


@dataclass(frozen=True)
class TcpOptions:
    """Every TCP option a PEP meets.  Unknown kinds are kept verbatim as
    ((kind, data), ...) and re-emitted.  MSS 0 cannot be told from "absent".

    `layout` is None when the options sit in the canonical (Linux) layout that
    emit writes; otherwise it holds the option bytes as parsed (order, NOP and EOL
    placement, bytes after EOL, repeated options), and emit writes them verbatim
    as long as they still encode exactly these fields -- change a field and the
    canonical layout is written instead.  So parse then emit gives the same bytes.
    """

    mss: Optional[int] = None                          # RFC 9293 §3.7.1, RFC 6691
    window_scale: Optional[int] = None                 # RFC 7323 §2
    sack_permitted: bool = False                       # RFC 2018 §2
    timestamps: Optional[Tuple[int, int]] = None       # RFC 7323 §3 (TSval, TSecr)
    sack_blocks: Tuple[Tuple[int, int], ...] = ()      # RFC 2018 §3, up to 4
    scps: Optional[ScpsCapabilities] = None            # kind 20
    snack: Tuple[Tuple[int, int], ...] = ()            # kind 21: every (hole offset, hole size), in order
    record_boundary: bool = False                      # kind 22
    corruption_experienced: bool = False               # kind 23
    fast_open: Optional[bytes] = None                  # kind 34, RFC 7413: the cookie, b"" = a request
    unknown: Tuple[Tuple[int, bytes], ...] = ()
    layout: Optional[bytes] = None

    @classmethod
    def _from_segment(cls, s, wire: Optional[bytes] = None) -> "TcpOptions":
        """The fields of a parsed Segment; `wire` (its option bytes) is kept as the
        layout when it is not the canonical one."""
        scps = s.scps
        o = cls(
            mss=s.mss, window_scale=s.wscale, sack_permitted=s.sack_perm, timestamps=s.ts, sack_blocks=s.sack,
            scps=None if scps is None else ScpsCapabilities(*scps), snack=s.snack_holes,
            record_boundary=s.record_boundary, corruption_experienced=s.corruption_experienced,
            fast_open=s.fast_open, unknown=s.unknown_options,
        )
        if wire is not None and o._canonical() != wire:
            o = replace(o, layout=bytes(wire))
        return o

    def _canonical(self) -> Optional[bytes]:
        """The canonical (Linux layout) option bytes, None if they exceed 40."""
        s = _w.Segment()
        self._to_segment(s)
        n = s.options_len()
        if n > 40:
            return None
        buf = bytearray(20 + n)
        s.emit_tcp(buf, b"\0" * 4, b"\0" * 4)
        return bytes(buf[20:])

    def wire_bytes(self) -> bytes:
        """The option bytes emit writes: the layout while it still encodes exactly
        these fields, else the canonical layout."""
        if self.layout is not None and self._layout_holds():
            return self.layout
        c = self._canonical()
        if c is None:
            raise ValueError("options longer than 40 bytes in the canonical layout")
        return c

    def _layout_holds(self) -> bool:
        lay = self.layout
        if len(lay) % 4 or len(lay) > 40:
            return False
        hdr = bytearray(20) + lay
        hdr[0:4] = b"\0\1\0\1"                      # ports 1 -> 1 (sanity needs non-zero)
        hdr[12] = (len(hdr) // 4) << 4
        try:
            s = _w.parse_tcp(bytes(hdr), None, None, 0)
        except _w.WireError:
            return False
        return TcpOptions._from_segment(s) == replace(self, layout=None)

    def _to_segment(self, s) -> None:
        s.mss = self.mss
        s.wscale = self.window_scale
        s.sack_perm = self.sack_permitted
        s.ts = self.timestamps
        s.sack = self.sack_blocks
        s.scps = None if self.scps is None else (self.scps.bitmap, self.scps.connection_id, self.scps.binding_space)
        s.snack_holes = self.snack
        s.record_boundary = self.record_boundary
        s.corruption_experienced = self.corruption_experienced
        s.fast_open = self.fast_open
        s.unknown_options = self.unknown

    def buffer_len(self) -> int:
        if self.layout is not None and self._layout_holds():
            return len(self.layout)
        s = _w.Segment()
        self._to_segment(s)
        return s.options_len()


@dataclass(frozen=True)
class TcpRepr:
    """A TCP segment (RFC 9293 §3.1): header fields, options, payload.  `flags`
    is the 12-bit field: TcpFlags, AE (0x100) and the 3 reserved bits above it,
    kept as received so that emit reproduces the bytes."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes = b""

    @classmethod
    def parse(cls, buf, src: Optional[bytes] = None, dst: Optional[bytes] = None,
              verify_checksum: bool = True) -> "TcpRepr":
        """Integrity, checksum (over the src/dst pseudo-header), then sanity."""
        s = _w.parse_tcp(buf, src, dst, 1 if verify_checksum else 0)
        return cls._from_segment(s, memoryview(buf))

    @classmethod
    def _from_segment(cls, s, tcp_bytes=None) -> "TcpRepr":
        """tcp_bytes: the segment's bytes (from its TCP header), for the option layout."""
        wire = None if tcp_bytes is None else bytes(tcp_bytes[20:s.tcp_hdr_len])
        return cls(s.sport, s.dport, s.seq, s.ack, s.flags | (s.flags_hi << 8), s.window, s.urg_ptr,
                   TcpOptions._from_segment(s, wire), s.payload)

    def _segment(self):
        s = _w.Segment()
        s.sport, s.dport, s.seq, s.ack = self.src_port, self.dst_port, self.seq, self.ack
        f = int(self.flags)
        if not 0 <= f <= 0xFFF:
            raise ValueError("TCP flags are 12 bits")
        s.flags, s.flags_hi, s.window, s.urg_ptr = f & 0xFF, f >> 8, self.window, self.urgent
        self.options._to_segment(s)
        return s

    def header_len(self) -> int:
        return 20 + self.options.buffer_len()

    def buffer_len(self) -> int:
        return self.header_len() + len(self.payload)

    def emit(self, buf, src: bytes, dst: bytes) -> int:
        """Write header, options and payload into buf; checksum over src/dst (for
        IPv6 with a routing header: Ipv6Repr.final_dst, RFC 8200 §8.1)."""
        opts = self.options.wire_bytes()
        if self.options.layout is None or opts is not self.options.layout:
            return self._segment().emit_tcp(buf, src, dst, self.payload)
        bare = replace(self, options=TcpOptions())._segment()
        n = 20 + len(opts) + len(self.payload)
        mv = memoryview(buf)
        if len(mv) < n:
            raise ValueError(f"buffer of {len(mv)} bytes, need {n}")
        bare.emit_tcp(mv[:20], src, dst)
        mv[12] = ((20 + len(opts)) // 4) << 4 | (mv[12] & 0x0F)
        mv[20:20 + len(opts)] = opts
        mv[20 + len(opts):n] = self.payload
        _w.TcpSegment(mv[:n]).fill_checksum(src, dst)
        return n


def parse_ip_tcp_repr(packet, verify_checksum: bool = True) -> Tuple[Union[Ipv4Repr, Ipv6Repr], TcpRepr]:
    """An IP packet carrying TCP -> (ip Repr, TcpRepr) through the fast-path parser."""
    s = _w.parse_packet(packet, 1 if verify_checksum else 0)
    mv = memoryview(packet)
    ip = Ipv4Repr.parse(mv, verify_checksum) if s.ip_version == 4 else Ipv6Repr.parse(mv)
    return ip, TcpRepr._from_segment(s, mv[s.ip_hdr_len:])


def parse_frame_repr(frame, verify_checksum: bool = True
                     ) -> Tuple[EthernetRepr, Union[Ipv4Repr, Ipv6Repr], TcpRepr]:
    """An Ethernet II frame carrying IP/TCP -> (EthernetRepr, ip Repr, TcpRepr),
    through parse_frame: the same checks (version vs ethertype included)."""
    _tci, _s = _w.parse_frame(frame, 1 if verify_checksum else 0)
    eth = EthernetRepr.parse(frame)
    ip, tcp = parse_ip_tcp_repr(memoryview(frame)[eth.buffer_len():], verify_checksum)
    return eth, ip, tcp


# ---- ICMP packet too big ------------------------------------------------------------
@dataclass(frozen=True)
class IcmpPtbRepr:
    """ICMPv4 frag-needed (RFC 792, RFC 1191 §4) or ICMPv6 packet-too-big
    (RFC 4443 §3.2) in an IP packet; `quote` is the quoted original packet.
    `mtu` is the field as sent; `next_hop_mtu` the MTU to use (RFC 1191 §5:
    the plateau estimate when an old router sent 0, then `mtu_estimated`)."""

    version: int
    src: bytes
    dst: bytes
    mtu: int
    quote: bytes
    ttl: int = 64
    tos: int = 0           # IPv4 TOS / IPv6 traffic class
    ident: int = 0         # IPv4 only
    flow_label: int = 0    # IPv6 only

    @classmethod
    def parse(cls, buf, verify_checksum: bool = True) -> "IcmpPtbRepr":
        """A frag-needed / packet-too-big without IPv4 options or IPv6 extension headers."""
        mv = memoryview(buf)
        mtu = _w.parse_ptb_ex(mv, 1 if verify_checksum else 0).mtu_field
        ip = _w.parse_ip(mv, 0)
        return cls(ip["version"], ip["src"], ip["dst"], mtu, bytes(mv[ip["upper_off"] + 8:ip["end"]]), ip["ttl"],
                   ip["tos"], ip["ident"], ip["flow_label"])

    @property
    def mtu_estimated(self) -> bool:
        """An IPv4 frag-needed with MTU 0 (RFC 1191 §5): next_hop_mtu is estimated."""
        return self.version == 4 and self.mtu == 0

    @property
    def quoted_total_len(self) -> int:
        """The quoted datagram's IPv4 total length / IPv6 40 + payload length."""
        q = self.quote
        return int.from_bytes(q[2:4], "big") if self.version == 4 else 40 + int.from_bytes(q[4:6], "big")

    @property
    def next_hop_mtu(self) -> int:
        """The MTU to use: the field, or plateau_mtu(quoted total length) when it is 0."""
        return plateau_mtu(self.quoted_total_len) if self.mtu_estimated else self.mtu

    @property
    def quoted(self):
        """The quoted segment's (src, dst, sport, dport, seq, ...) as a Segment."""
        return self._quoted_segment()

    def _quoted_segment(self):
        buf = bytearray(self.buffer_len())
        self.emit(buf)
        return _w.parse_ptb(buf, 0)[1]

    def buffer_len(self) -> int:
        return (20 if self.version == 4 else 40) + 8 + len(self.quote)

    def emit(self, buf) -> int:
        mv = memoryview(buf)
        ilen = 8 + len(self.quote)
        proto = 1 if self.version == 4 else 58
        n = _w.emit_ip_header(buf, self.version, self.src, self.dst, proto, ilen, ttl=self.ttl, tos=self.tos,
                              ident=self.ident, flow_label=self.flow_label)
        icmp = mv[n:n + ilen]
        if self.version == 4:
            icmp[0:4] = bytes((3, 4, 0, 0))
            icmp[4:8] = (self.mtu & 0xffff).to_bytes(4, "big")
            init = 0
        else:
            icmp[0:4] = bytes((2, 0, 0, 0))
            icmp[4:8] = self.mtu.to_bytes(4, "big")
            init = _cs.pseudo_header_sum(self.src, self.dst, 58, ilen)
        icmp[8:] = self.quote
        icmp[2:4] = _cs.internet_checksum(bytes(icmp), init).to_bytes(2, "big")
        return n + ilen

