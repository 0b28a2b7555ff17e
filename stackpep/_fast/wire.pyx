# cython: language_level=3
"""Wire layer: Ethernet II / 802.1Q, IPv4, IPv6 (extension-header chain), TCP with
every option a PEP meets (SCPS-TP's included), ICMP frag-needed / packet-too-big.

Two levels, as in smoltcp's `wire`:
  * C level (wire.pxd): parse_ip_tcp / emit_ip_tcp fill and write a tcp_seg_t in
    one pass, nogil, without Python objects; parse_eth, parse_icmp_ptb.
  * Python level: zero-copy views (EthernetFrame, Ipv4Packet, Ipv6Packet,
    TcpSegment: one length check, then accessors/setters and fill_checksum) and the
    `Segment` carrier that the validated Reprs in stackpep.wire build on.

Errors: every parser returns a WIRE_* code; the code names one counter
(incremented here, in C) and one exception type -- IntegrityError (the bytes are
unusable) or SanityError (legal bytes, illegal meaning), after PyTCP.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, uint64_t
from libc.string cimport memcpy, memset, memmove
from collections import namedtuple as _namedtuple

from stackpep._fast.checksum cimport csum_add, csum_fold, pseudo_v4, pseudo_v6

cdef extern from *:
    """
    static inline uint16_t wr_be16(const uint8_t *p) { return (uint16_t)(((uint16_t)p[0] << 8) | p[1]); }
    static inline uint32_t wr_be32(const uint8_t *p) {
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
    }
    static inline void wr_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
    static inline void wr_put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
    }
    """
    uint16_t wr_be16(const uint8_t* p) nogil
    uint32_t wr_be32(const uint8_t* p) nogil
    void wr_put16(uint8_t* p, uint16_t v) nogil
    void wr_put32(uint8_t* p, uint32_t v) nogil


# ---- header layouts ------------------------------------------------------------
# Ethernet II (IEEE 802.3 clause 3), optional 802.1Q tag (IEEE 802.1Q §9.3):
#   dst(6) src(6) [0x8100 TCI(2)] ethertype(2)
cdef enum:
    ETH_HDR_LEN = 14
    VLAN_TAG_LEN = 4

# IPv4, RFC 791 §3.1:
#    0                   1                   2                   3
#   |Version|  IHL  |Type of Service|          Total Length         |
#   |         Identification        |Flags|      Fragment Offset    |
#   |  Time to Live |    Protocol   |         Header Checksum       |
#   |                       Source Address                          |
#   |                    Destination Address                        |
cdef enum:
    IP4_VER_IHL = 0
    IP4_TOS = 1
    IP4_TOTAL_LEN = 2
    IP4_IDENT = 4
    IP4_FRAG = 6
    IP4_TTL = 8
    IP4_PROTO = 9
    IP4_CSUM = 10
    IP4_SRC = 12
    IP4_DST = 16
    IP4_MIN_HDR = 20
    IP4_DF = 0x4000
    IP4_MF = 0x2000
    IP4_FRAG_OFF_MASK = 0x1fff

# IPv6, RFC 8200 §3:
#   |Version| Traffic Class |           Flow Label                  |
#   |         Payload Length        |  Next Header  |   Hop Limit   |
#   |                 Source Address (16)                           |
#   |              Destination Address (16)                         |
cdef enum:
    IP6_PLEN = 4
    IP6_NEXT = 6
    IP6_HLIM = 7
    IP6_SRC = 8
    IP6_DST = 24
    IP6_HDR_LEN = 40

# IPv6 extension headers (RFC 8200 §4, RFC 7045 list), AH (RFC 4302 §2.2)
cdef enum:
    NH_HOPOPT = 0
    NH_ICMP = 1
    NH_TCP = 6
    NH_ROUTING = 43
    NH_FRAGMENT = 44
    NH_ESP = 50
    NH_AH = 51
    NH_ICMPV6 = 58
    NH_NONE = 59
    NH_DSTOPTS = 60
    NH_MOBILITY = 135
    NH_HIP = 139
    NH_SHIM6 = 140

# TCP, RFC 9293 §3.1:
#   |          Source Port          |       Destination Port        |
#   |                        Sequence Number                        |
#   |                    Acknowledgment Number                      |
#   |  DOffset|Rsrvd|C|E|U|A|P|R|S|F|           Window              |
#   |           Checksum            |         Urgent Pointer        |
#   |                    Options (0..40 bytes)                      |
cdef enum:
    TCP_SPORT = 0
    TCP_DPORT = 2
    TCP_SEQ = 4
    TCP_ACK = 8
    TCP_DOFF_B = 12
    TCP_FLAGS_B = 13
    TCP_WIN = 14
    TCP_CSUM = 16
    TCP_URG = 18
    TCP_MIN_HDR = 20
    TCP_MAX_HDR = 60

# TCP option kinds: RFC 9293 §3.2 (0, 1, 2), RFC 7323 (3, 8), RFC 2018 (4, 5),
# CCSDS 714.0-B-2 / IANA (20 SCPS capabilities, 21 SNACK, 22 record boundary,
# 23 corruption experienced), RFC 7413 §4.1.1 (34 TCP Fast Open).
cdef enum:
    OPT_EOL = 0
    OPT_NOP = 1
    OPT_MSS = 2
    OPT_WS = 3
    OPT_SACK_PERM = 4
    OPT_SACK = 5
    OPT_TS = 8
    OPT_SCPS = 20
    OPT_SNACK = 21
    OPT_RB = 22
    OPT_CORRUPTION = 23
    OPT_FASTOPEN = 34

# ICMP: RFC 792 (type 3 code 4 "fragmentation needed and DF set", with the
# next-hop MTU in the low 16 bits of the second word per RFC 1191 §4) and
# RFC 4443 §3.2 (type 2 packet too big, MTU in the second word).
cdef enum:
    ICMP4_UNREACH = 3
    ICMP4_FRAG_NEEDED = 4
    ICMP6_PTB = 2
    ICMP_HDR_LEN = 8


# ---- counters --------------------------------------------------------------------
cdef uint64_t _counters[64]
memset(_counters, 0, sizeof(_counters))

cdef void wire_count(int code) noexcept nogil:
    if code < 0 and code >= WIRE_ERR_MIN:
        _counters[-code] += 1

cdef inline int _fail(int code) noexcept nogil:
    _counters[-code] += 1
    return code


# ---- IP layer (shared by TCP and ICMP parsing) ------------------------------------
cdef struct ip_info_t:
    uint8_t version
    uint8_t tos
    uint8_t ttl
    uint8_t df
    uint8_t is_fragment        # 1 unless atomic (no MF, offset 0)
    uint8_t more_frags
    uint16_t frag_offset       # in 8-byte units
    uint32_t frag_ident        # IPv4: 16 bits; IPv6: fragment header's 32 bits
    uint16_t ident
    uint32_t flow_label
    uint8_t proto              # upper-layer protocol (after the extension chain)
    uint32_t upper_off         # offset of the upper-layer header
    uint32_t end               # end of the IP packet (link padding excluded)
    uint16_t hdr_len           # fixed header length (IPv4 IHL*4 / 40)
    uint8_t n_ext
    uint8_t ext_kind[8]
    uint16_t ext_off[8]
    uint16_t ext_len[8]
    const uint8_t* src
    const uint8_t* dst
    const uint8_t* final_dst   # RFC 8200 §8.1: the routing header's final destination, else dst


# RFC 8200 §4.4 routing header: Next Header, Hdr Ext Len, Routing Type, Segments Left, data
cdef enum:
    RH_TYPE_MIP6 = 2           # RFC 6275 §6.4: 4 reserved bytes, then the Home Address (one)
    RH_TYPE_SRH = 4            # RFC 8754 §2: Last Entry, Flags, Tag, Segment List[0..Last Entry]
    RH_ADDRS = 8               # offset of the first address in both


cdef inline int _routing_final_dst(const uint8_t* p, uint32_t hlen, ip_info_t* ip) noexcept nogil:
    """A routing header with Segments Left > 0: where the packet finally goes."""
    cdef uint8_t left = p[3]
    if p[2] == RH_TYPE_MIP6:
        # RFC 6275 §6.4: Hdr Ext Len 2, Segments Left 1, the home address
        if hlen != 24 or left != 1:
            return WIRE_IPV6_ROUTING_MALFORMED
        ip.final_dst = p + RH_ADDRS
        return WIRE_OK
    if p[2] == RH_TYPE_SRH:
        # RFC 8754 §2: the list is in reverse order, Segment List[0] is the last
        # segment; §4.3.1.1: Segments Left > Last Entry + 1 is an error.
        if RH_ADDRS + 16 * (<uint32_t>p[4] + 1) > hlen or left > <uint32_t>p[4] + 1:
            return WIRE_IPV6_ROUTING_MALFORMED
        ip.final_dst = p + RH_ADDRS
        return WIRE_OK
    # Type 0 is deprecated (RFC 5095 §3: processed as an unrecognised type), types 1
    # and 3 (RPL, RFC 6554) are not read: RFC 8200 §4.4 discards an unrecognised
    # type with Segments Left > 0 -- and the pseudo-header could not be built.
    return WIRE_IPV6_ROUTING_TYPE


cdef int _parse_ip(const uint8_t* buf, Py_ssize_t n, ip_info_t* ip, int verify_csum) noexcept nogil:
    """Integrity of the IP header(s); no counters here (callers count)."""
    cdef uint16_t ihl, total, frag, plen
    cdef uint32_t off, end, hlen
    cdef uint8_t nh
    cdef const uint8_t* p
    cdef int rc
    cdef bint rh_unreadable = 0
    if n < 1:
        return WIRE_IP_TRUNCATED
    ip.version = buf[0] >> 4
    ip.n_ext = 0
    ip.is_fragment = 0
    ip.more_frags = 0
    ip.frag_offset = 0
    ip.frag_ident = 0
    if ip.version == 4:
        # RFC 791 §3.1
        if n < IP4_MIN_HDR:
            return WIRE_IP_TRUNCATED
        ihl = (buf[IP4_VER_IHL] & 0x0f) * 4
        if ihl < IP4_MIN_HDR:
            return WIRE_IPV4_IHL
        if ihl > n:
            return WIRE_IPV4_HDR_PAST_END
        total = wr_be16(buf + IP4_TOTAL_LEN)
        if total < ihl or total > n:
            return WIRE_IPV4_TOTAL_LEN
        if verify_csum and csum_fold(csum_add(buf, ihl, 0)) != 0:
            return WIRE_IPV4_CHECKSUM
        frag = wr_be16(buf + IP4_FRAG)
        ip.tos = buf[IP4_TOS]
        ip.ttl = buf[IP4_TTL]
        ip.ident = wr_be16(buf + IP4_IDENT)
        ip.frag_ident = ip.ident
        ip.df = 1 if frag & IP4_DF else 0
        ip.more_frags = 1 if frag & IP4_MF else 0
        ip.frag_offset = frag & IP4_FRAG_OFF_MASK
        # RFC 791 §3.2: MF clear and offset 0 is an unfragmented datagram
        ip.is_fragment = 1 if (ip.more_frags or ip.frag_offset) else 0
        ip.flow_label = 0
        ip.proto = buf[IP4_PROTO]
        ip.hdr_len = ihl
        ip.upper_off = ihl
        ip.end = total
        ip.src = buf + IP4_SRC
        ip.dst = buf + IP4_DST
        ip.final_dst = ip.dst
        # RFC 791 §3.2: the fragment's data ends at offset*8 + its length; past
        # 65535 no datagram can hold it (the "ping of death").
        if ip.is_fragment and (<uint32_t>ip.frag_offset) * 8 + (total - ihl) > 0xffff:
            return WIRE_IP_FRAGMENT_PAST_MAX
        return WIRE_OK
    if ip.version != 6:
        return WIRE_IP_VERSION
    # RFC 8200 §3
    if n < IP6_HDR_LEN:
        return WIRE_IP_TRUNCATED
    plen = wr_be16(buf + IP6_PLEN)
    nh = buf[IP6_NEXT]
    if plen == 0 and nh == NH_HOPOPT:
        return WIRE_IPV6_JUMBO     # RFC 2675 jumbogram: not supported
    if IP6_HDR_LEN + <Py_ssize_t>plen > n:
        return WIRE_IPV6_PAYLOAD_LEN
    ip.tos = ((buf[0] & 0x0f) << 4) | (buf[1] >> 4)
    ip.flow_label = ((<uint32_t>(buf[1] & 0x0f)) << 16) | wr_be16(buf + 2)
    ip.ttl = buf[IP6_HLIM]
    ip.ident = 0
    ip.df = 0
    ip.hdr_len = IP6_HDR_LEN
    ip.src = buf + IP6_SRC
    ip.dst = buf + IP6_DST
    ip.final_dst = ip.dst
    end = IP6_HDR_LEN + plen
    ip.end = end
    off = IP6_HDR_LEN
    # RFC 8200 §4: walk the chain to the upper-layer header, bounded.
    while (nh == NH_HOPOPT or nh == NH_ROUTING or nh == NH_FRAGMENT or nh == NH_DSTOPTS
           or nh == NH_AH or nh == NH_MOBILITY or nh == NH_HIP or nh == NH_SHIM6):
        if nh == NH_HOPOPT and ip.n_ext != 0:
            return WIRE_IPV6_HBH_NOT_FIRST   # RFC 8200 §4.3: only right after the IPv6 header
        if ip.n_ext >= IPV6_MAX_EXT:
            return WIRE_IPV6_EXT_CHAIN
        if end - off < 8:
            return WIRE_IPV6_EXT_TRUNCATED     # every extension header is >= 8 bytes
        p = buf + off
        if nh == NH_FRAGMENT:
            hlen = 8                           # RFC 8200 §4.5
        elif nh == NH_AH:
            hlen = (<uint32_t>p[1] + 2) * 4    # RFC 4302 §2.2: in 32-bit words, minus 2
        else:
            hlen = (<uint32_t>p[1] + 1) * 8    # RFC 8200 §4.3-4.6: 8-octet units, minus 1
        if off + hlen > end:
            return WIRE_IPV6_EXT_PAST_END
        ip.ext_kind[ip.n_ext] = nh
        ip.ext_off[ip.n_ext] = <uint16_t>off
        ip.ext_len[ip.n_ext] = <uint16_t>hlen
        ip.n_ext += 1
        off += hlen
        if nh == NH_ROUTING and p[3] != 0 and ip.final_dst == ip.dst:
            # RFC 8200 §8.1: the first routing header with segments left names the
            # final destination; an unreadable type is reported after the walk, so
            # integrity errors further on come first.
            rc = _routing_final_dst(p, hlen, ip)
            if rc == WIRE_IPV6_ROUTING_MALFORMED:
                return rc
            if rc:
                rh_unreadable = 1
        if nh == NH_FRAGMENT:
            frag = wr_be16(p + 2)
            ip.frag_offset = frag >> 3
            ip.more_frags = frag & 1
            ip.frag_ident = wr_be32(p + 4)
            if ip.frag_offset or ip.more_frags:
                # RFC 8200 §4.5: a real fragment; what follows is not a header
                # (for offset != 0) -- stop walking.  RFC 6946: an atomic
                # fragment (offset 0, M 0) is processed as a whole packet.
                ip.is_fragment = 1
                ip.proto = p[0]
                ip.upper_off = off
                # RFC 8200 §4.5: the reassembled payload (per-fragment headers,
                # offset*8, this fragment's data) must not exceed 65535.
                if (off - 8 - IP6_HDR_LEN) + (<uint32_t>ip.frag_offset) * 8 + (end - off) > 0xffff:
                    return WIRE_IP_FRAGMENT_PAST_MAX
                return WIRE_IPV6_ROUTING_TYPE if rh_unreadable else WIRE_OK
        nh = p[0]
    ip.proto = nh
    ip.upper_off = off
    return WIRE_IPV6_ROUTING_TYPE if rh_unreadable else WIRE_OK


cdef inline bint _is_multicast(const ip_info_t* ip, const uint8_t* a) noexcept nogil:
    if ip.version == 4:
        # 224.0.0.0/4 (RFC 5771) and limited broadcast 255.255.255.255 (RFC 919)
        return (a[0] & 0xf0) == 0xe0 or (a[0] == 255 and a[1] == 255 and a[2] == 255 and a[3] == 255)
    return a[0] == 0xff                            # ff00::/8 (RFC 4291 §2.7)


# ---- TCP ---------------------------------------------------------------------------
cdef int _parse_tcp_opts(const uint8_t* o, Py_ssize_t olen, tcp_opts_t* t) noexcept nogil:
    """RFC 9293 §3.2 option list; a later copy of a known option wins."""
    cdef Py_ssize_t i = 0
    cdef uint8_t kind, l, k, j
    memset(t, 0, sizeof(tcp_opts_t))
    t.wscale = -1
    while i < olen:
        kind = o[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= olen:
            return WIRE_TCP_OPT_PAST_END       # kind byte with no room for its length
        l = o[i + 1]
        if l < 2:
            return WIRE_TCP_OPT_LEN            # RFC 9293 §3.2: "MUST ... handle an illegal option length (e.g., zero)"
        if i + l > olen:
            return WIRE_TCP_OPT_PAST_END
        if kind == OPT_MSS:                    # RFC 9293 §3.7.1, RFC 6691
            if l != 4:
                return WIRE_TCP_OPT_BAD_LEN
            t.mss = wr_be16(o + i + 2)
        elif kind == OPT_WS:                   # RFC 7323 §2.2
            if l != 3:
                return WIRE_TCP_OPT_BAD_LEN
            # a shift above 14 is kept (the engine caps its use at 14, RFC 7323 §2.3);
            # int8_t holds up to 127
            t.wscale = <int8_t>(o[i + 2] if o[i + 2] < 128 else 127)
        elif kind == OPT_SACK_PERM:            # RFC 2018 §2
            if l != 2:
                return WIRE_TCP_OPT_BAD_LEN
            t.sack_perm = 1
        elif kind == OPT_SACK:                 # RFC 2018 §3: 8*n + 2, n = 1..4
            if l < 10 or (l - 2) % 8 != 0 or (l - 2) // 8 > TCP_MAX_SACK:
                return WIRE_TCP_OPT_BAD_LEN
            k = (l - 2) // 8
            t.n_sack = k
            for j in range(k):
                t.sack_left[j] = wr_be32(o + i + 2 + 8 * j)
                t.sack_right[j] = wr_be32(o + i + 6 + 8 * j)
        elif kind == OPT_TS:                   # RFC 7323 §3.2
            if l != 10:
                return WIRE_TCP_OPT_BAD_LEN
            t.has_ts = 1
            t.ts_val = wr_be32(o + i + 2)
            t.ts_ecr = wr_be32(o + i + 6)
        elif kind == OPT_SCPS:
            # CCSDS 714.0-B-2 §3.2.5 (as Wireshark reads it): length 4 is the
            # capabilities option (bitmap, connection id); any other length is
            # the extended-capabilities option that follows it, carrying
            # (binding space id, length-in-16-bit-words << 4, data...) from byte 2.
            if l == 4:
                t.has_scps = 1
                t.scps_bits = o[i + 2]
                t.scps_conn_id = o[i + 3]
            elif l >= 4 and l - 2 <= 12:
                t.scps_ext_len = l - 2
                memcpy(t.scps_ext, o + i + 2, l - 2)
            else:
                return WIRE_TCP_OPT_BAD_LEN
        elif kind == OPT_SNACK:                # CCSDS 714.0-B-2, notes "TCP option kinds (IANA)": hole offset, hole size
            if l != 6:
                return WIRE_TCP_OPT_BAD_LEN
            # one hole an option, several options a segment: keep them all, in
            # order (40 option bytes hold at most TCP_MAX_SNACK of them)
            if t.n_snack >= TCP_MAX_SNACK:     # cannot happen in 40 bytes; bounds kept anyway
                return WIRE_TCP_OPT_BAD_LEN
            t.snack_hole_offset[t.n_snack] = wr_be16(o + i + 2)
            t.snack_hole_size[t.n_snack] = wr_be16(o + i + 4)
            t.n_snack += 1
            if not t.has_snack:
                t.has_snack = 1
                t.snack_offset = t.snack_hole_offset[0]
                t.snack_size = t.snack_hole_size[0]
        elif kind == OPT_RB:                   # record boundary
            if l != 2:
                return WIRE_TCP_OPT_BAD_LEN
            t.has_rb = 1
        elif kind == OPT_CORRUPTION:           # corruption experienced
            if l != 2:
                return WIRE_TCP_OPT_BAD_LEN
            t.has_corruption = 1
        elif kind == OPT_FASTOPEN:             # RFC 7413 §4.1.1: no cookie (a request) or 4..16 bytes
            if l != 2 and not 6 <= l <= 18:
                return WIRE_TCP_OPT_BAD_LEN
            t.has_fo = 1
            t.fo_len = l - 2
            memcpy(t.fo_cookie, o + i + 2, l - 2)
        else:
            # unknown: kept verbatim (kind, len, data) so a rebuild carries it
            if t.raw_len + l <= TCP_MAX_RAW_OPTS:
                memcpy(t.raw + t.raw_len, o + i, l)
                t.raw_len += l
        i += l
    return WIRE_OK


cdef int _parse_tcp(const uint8_t* p, Py_ssize_t seglen, tcp_seg_t* out) noexcept nogil:
    """Integrity of a TCP header and its options (RFC 9293 §3.1/§3.2)."""
    cdef uint16_t doff
    if seglen < TCP_MIN_HDR:
        return WIRE_TCP_TRUNCATED
    doff = (p[TCP_DOFF_B] >> 4) * 4
    if doff < TCP_MIN_HDR:
        return WIRE_TCP_DOFF
    if doff > seglen:
        return WIRE_TCP_DOFF_PAST_END
    out.sport = wr_be16(p + TCP_SPORT)
    out.dport = wr_be16(p + TCP_DPORT)
    out.seq = wr_be32(p + TCP_SEQ)
    out.ack = wr_be32(p + TCP_ACK)
    out.flags = p[TCP_FLAGS_B]
    out.flags_hi = p[TCP_DOFF_B] & 0x0f        # AE + reserved bits: kept, so a rebuild is exact
    out.window = wr_be16(p + TCP_WIN)
    out.urg_ptr = wr_be16(p + TCP_URG)
    out.tcp_hdr_len = doff
    out.payload_len = <uint32_t>(seglen - doff)
    if doff == TCP_MIN_HDR:
        memset(&out.opts, 0, sizeof(tcp_opts_t))
        out.opts.wscale = -1
        return WIRE_OK
    return _parse_tcp_opts(p + TCP_MIN_HDR, doff - TCP_MIN_HDR, &out.opts)


cdef inline int _tcp_sanity(const tcp_seg_t* s) noexcept nogil:
    if s.sport == 0 or s.dport == 0:
        return WIRE_TCP_PORT_ZERO
    if (s.flags & (TH_SYN | TH_FIN)) == (TH_SYN | TH_FIN):
        return WIRE_TCP_SYN_FIN
    if (s.flags & (TH_SYN | TH_RST)) == (TH_SYN | TH_RST):
        return WIRE_TCP_SYN_RST
    return WIRE_OK


cdef inline uint64_t _pseudo(const ip_info_t* ip, uint8_t proto, uint32_t length) noexcept nogil:
    if ip.version == 4:
        return pseudo_v4(ip.src, ip.dst, proto, length)
    return pseudo_v6(ip.src, ip.final_dst, proto, length)      # RFC 8200 §8.1


cdef int _parse_ip_tcp(const uint8_t* buf, Py_ssize_t n, tcp_seg_t* out, int verify_csum) noexcept nogil:
    cdef ip_info_t ip
    cdef int rc = _parse_ip(buf, n, &ip, verify_csum == 1 or verify_csum == 2)
    cdef uint32_t seglen
    if rc:
        return rc
    if ip.proto != NH_TCP:
        return WIRE_NOT_TCP
    if ip.is_fragment:
        return WIRE_FRAGMENT
    seglen = ip.end - ip.upper_off
    rc = _parse_tcp(buf + ip.upper_off, seglen, out)
    if rc:
        return rc
    if verify_csum == 1:
        # RFC 9293 §3.1 (IPv4 pseudo-header), RFC 8200 §8.1 (IPv6)
        if csum_fold(csum_add(buf + ip.upper_off, seglen, _pseudo(&ip, NH_TCP, seglen))) != 0:
            out.csum_status = CSUM_BAD
            return WIRE_TCP_CHECKSUM
        out.csum_status = CSUM_GOOD
    elif verify_csum == 2:
        out.csum_status = CSUM_PARTIAL
    else:
        out.csum_status = CSUM_UNCHECKED
    out.ip_version = ip.version
    out.tos = ip.tos
    out.ttl = ip.ttl
    out.ip_ident = ip.ident
    out.ip_df = ip.df
    out.flow_label = ip.flow_label
    if ip.version == 4:
        memcpy(out.src, ip.src, 4)
        memcpy(out.dst, ip.dst, 4)
    else:
        memcpy(out.src, ip.src, 16)
        memcpy(out.dst, ip.dst, 16)
    out.ip_hdr_len = <uint16_t>ip.upper_off
    out.payload_off = ip.upper_off + out.tcp_hdr_len
    out.has_final_dst = ip.final_dst != ip.dst
    if out.has_final_dst:
        memcpy(out.final_dst, ip.final_dst, 16)
    # sanity: legal bytes, illegal meaning
    if _is_multicast(&ip, ip.src) or _is_multicast(&ip, ip.dst):
        return WIRE_TCP_MULTICAST
    return _tcp_sanity(out)


cdef int parse_ip_tcp(const uint8_t* buf, Py_ssize_t n, tcp_seg_t* out, int verify_csum) noexcept nogil:
    cdef int rc = _parse_ip_tcp(buf, n, out, verify_csum)
    if rc:
        _counters[-rc] += 1
    return rc


cdef int tcp_opts_len(const tcp_opts_t* o) noexcept nogil:
    # Layout and padding as Linux tcp_options_write() so kernel segments rebuild
    # byte for byte; SCPS options after the standard ones.
    cdef int n = 0
    if o.mss:
        n += 4
    if o.has_ts:
        n += 12                                # [SACKOK | NOP NOP] TS
    elif o.sack_perm:
        n += 4                                 # NOP NOP SACKOK
    if o.wscale >= 0:
        n += 4                                 # NOP WS
    if o.n_sack:
        n += 4 + 8 * (o.n_sack if o.n_sack <= TCP_MAX_SACK else TCP_MAX_SACK)
    if o.has_fo:
        n += (2 + o.fo_len + 3) & ~3           # Fast Open, NOP-padded after the cookie (Linux)
    if o.has_scps:
        n += 4
    if o.scps_ext_len:
        n += (2 + o.scps_ext_len + 3) & ~3     # extended capabilities, NOP-padded
    if o.n_snack:
        n += 8 * (o.n_snack if o.n_snack <= TCP_MAX_SNACK else TCP_MAX_SNACK)   # NOP NOP SNACK(6) each
    elif o.has_snack:
        n += 8                                 # set through the first-hole fields only
    if o.has_rb:
        n += 4                                 # NOP NOP RB(2)
    if o.has_corruption:
        n += 4                                 # NOP NOP CE(2)
    n += (o.raw_len + 3) & ~3
    return n


cdef int _write_tcp_opts(uint8_t* w, const tcp_opts_t* o) noexcept nogil:
    cdef uint8_t* start = w
    cdef int j, k, pad
    if o.mss:
        w[0] = OPT_MSS; w[1] = 4; wr_put16(w + 2, o.mss); w += 4
    if o.has_ts:
        if o.sack_perm:
            w[0] = OPT_SACK_PERM; w[1] = 2
        else:
            w[0] = OPT_NOP; w[1] = OPT_NOP
        w[2] = OPT_TS; w[3] = 10
        wr_put32(w + 4, o.ts_val); wr_put32(w + 8, o.ts_ecr); w += 12
    elif o.sack_perm:
        w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_SACK_PERM; w[3] = 2; w += 4
    if o.wscale >= 0:
        w[0] = OPT_NOP; w[1] = OPT_WS; w[2] = 3; w[3] = <uint8_t>o.wscale; w += 4
    if o.n_sack:
        k = o.n_sack if o.n_sack <= TCP_MAX_SACK else TCP_MAX_SACK
        w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_SACK; w[3] = <uint8_t>(2 + 8 * k); w += 4
        for j in range(k):
            wr_put32(w, o.sack_left[j]); wr_put32(w + 4, o.sack_right[j]); w += 8
    if o.has_fo:
        # RFC 7413 §4.1.1: kind 34, length 2 + cookie; Linux pads with NOPs after it
        k = o.fo_len if o.fo_len <= 16 else 16
        w[0] = OPT_FASTOPEN; w[1] = <uint8_t>(2 + k)
        memcpy(w + 2, o.fo_cookie, k)
        w += 2 + k
        pad = (4 - (2 + k) % 4) % 4
        for j in range(pad):
            w[0] = OPT_NOP; w += 1
    if o.has_scps:
        # CCSDS 714.0-B-2 §3.2.3: kind 20, len 4, capability bitmap, connection id
        w[0] = OPT_SCPS; w[1] = 4; w[2] = o.scps_bits; w[3] = o.scps_conn_id; w += 4
    if o.scps_ext_len:
        # extended capabilities (a second kind-20 option), NOP-padded to 4 bytes
        w[0] = OPT_SCPS; w[1] = <uint8_t>(2 + o.scps_ext_len)
        memcpy(w + 2, o.scps_ext, o.scps_ext_len)
        w += 2 + o.scps_ext_len
        pad = (4 - (2 + o.scps_ext_len) % 4) % 4
        for j in range(pad):
            w[0] = OPT_NOP; w += 1
    if o.n_snack:
        k = o.n_snack if o.n_snack <= TCP_MAX_SNACK else TCP_MAX_SNACK
        for j in range(k):
            w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_SNACK; w[3] = 6
            wr_put16(w + 4, o.snack_hole_offset[j]); wr_put16(w + 6, o.snack_hole_size[j]); w += 8
    elif o.has_snack:
        w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_SNACK; w[3] = 6
        wr_put16(w + 4, o.snack_offset); wr_put16(w + 6, o.snack_size); w += 8
    if o.has_rb:
        w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_RB; w[3] = 2; w += 4
    if o.has_corruption:
        w[0] = OPT_NOP; w[1] = OPT_NOP; w[2] = OPT_CORRUPTION; w[3] = 2; w += 4
    if o.raw_len:
        memcpy(w, o.raw, o.raw_len)
        w += o.raw_len
        while (w - start) & 3:
            w[0] = OPT_EOL; w += 1             # RFC 9293 §3.2: pad with zeros after EOL
    return <int>(w - start)


cdef Py_ssize_t _emit_tcp(uint8_t* w, const tcp_seg_t* seg, int olen,
                          const uint8_t* payload, Py_ssize_t plen) noexcept nogil:
    """TCP header + options + payload at w, checksum field zeroed; returns length."""
    cdef int hl = TCP_MIN_HDR + olen
    wr_put16(w + TCP_SPORT, seg.sport)
    wr_put16(w + TCP_DPORT, seg.dport)
    wr_put32(w + TCP_SEQ, seg.seq)
    wr_put32(w + TCP_ACK, seg.ack)
    w[TCP_DOFF_B] = <uint8_t>(((hl // 4) << 4) | (seg.flags_hi & 0x0f))
    w[TCP_FLAGS_B] = seg.flags
    wr_put16(w + TCP_WIN, seg.window)
    w[TCP_CSUM] = 0
    w[TCP_CSUM + 1] = 0
    wr_put16(w + TCP_URG, seg.urg_ptr)
    _write_tcp_opts(w + TCP_MIN_HDR, &seg.opts)
    if plen:
        memmove(w + hl, payload, plen)
    return hl + plen


cdef Py_ssize_t emit_ip_tcp(uint8_t* buf, Py_ssize_t cap, const tcp_seg_t* seg,
                            const uint8_t* payload, Py_ssize_t plen) noexcept nogil:
    """IPv4 (20-byte header, RFC 791 §3.1) or IPv6 (RFC 8200 §3) + TCP.

    Returns the length, -1 if cap is too small, -2 if the options exceed 40 bytes
    or the packet 65535 bytes of IP payload.
    """
    cdef int olen = tcp_opts_len(&seg.opts)
    cdef Py_ssize_t tcplen, iphl, total
    cdef uint8_t* t
    cdef uint64_t acc
    if olen > 40:
        return -2
    tcplen = TCP_MIN_HDR + olen + plen
    iphl = IP4_MIN_HDR if seg.ip_version == 4 else IP6_HDR_LEN
    total = iphl + tcplen
    if (seg.ip_version == 4 and total > 0xffff) or tcplen > 0xffff:
        return -2
    if total > cap:
        return -1
    t = buf + iphl
    # payload first (it may live where the headers go), then headers
    if plen:
        memmove(t + TCP_MIN_HDR + olen, payload, plen)
    _emit_tcp(t, seg, olen, NULL, 0)
    if seg.ip_version == 4:
        buf[IP4_VER_IHL] = 0x45
        buf[IP4_TOS] = seg.tos
        wr_put16(buf + IP4_TOTAL_LEN, <uint16_t>total)
        wr_put16(buf + IP4_IDENT, seg.ip_ident)
        wr_put16(buf + IP4_FRAG, IP4_DF if seg.ip_df else 0)
        buf[IP4_TTL] = seg.ttl
        buf[IP4_PROTO] = NH_TCP
        buf[IP4_CSUM] = 0
        buf[IP4_CSUM + 1] = 0
        memcpy(buf + IP4_SRC, seg.src, 4)
        memcpy(buf + IP4_DST, seg.dst, 4)
        wr_put16(buf + IP4_CSUM, csum_fold(csum_add(buf, IP4_MIN_HDR, 0)))
        acc = pseudo_v4(seg.src, seg.dst, NH_TCP, <uint32_t>tcplen)
    else:
        buf[0] = 0x60 | (seg.tos >> 4)
        buf[1] = <uint8_t>(((seg.tos & 0x0f) << 4) | ((seg.flow_label >> 16) & 0x0f))
        wr_put16(buf + 2, <uint16_t>(seg.flow_label & 0xffff))
        wr_put16(buf + IP6_PLEN, <uint16_t>tcplen)
        buf[IP6_NEXT] = NH_TCP
        buf[IP6_HLIM] = seg.ttl
        memcpy(buf + IP6_SRC, seg.src, 16)
        memcpy(buf + IP6_DST, seg.dst, 16)
        acc = pseudo_v6(seg.src, seg.dst, NH_TCP, <uint32_t>tcplen)
    wr_put16(t + TCP_CSUM, csum_fold(csum_add(t, tcplen, acc)))
    return total


cdef void seg_init(tcp_seg_t* seg) noexcept nogil:
    memset(seg, 0, sizeof(tcp_seg_t))
    seg.opts.wscale = -1


# ---- Ethernet ------------------------------------------------------------------------
cdef int _parse_eth(const uint8_t* buf, Py_ssize_t n, uint16_t* ethertype, int32_t* vlan_tci) noexcept nogil:
    cdef uint16_t et
    if n < ETH_HDR_LEN:
        return WIRE_ETH_TRUNCATED
    et = wr_be16(buf + 12)
    vlan_tci[0] = -1
    if et == ETH_P_8021Q or et == ETH_P_8021AD:
        if n < ETH_HDR_LEN + VLAN_TAG_LEN:
            return WIRE_VLAN_TRUNCATED
        vlan_tci[0] = wr_be16(buf + 14)
        ethertype[0] = wr_be16(buf + 16)
        hl = ETH_HDR_LEN + VLAN_TAG_LEN
    else:
        ethertype[0] = et
        hl = ETH_HDR_LEN
    if ethertype[0] != ETH_P_IP and ethertype[0] != ETH_P_IPV6:
        return WIRE_ETH_NOT_IP
    if n > hl and _version_mismatch(ethertype[0], buf[hl]):
        return WIRE_IP_VERSION_MISMATCH
    return hl


cdef inline bint _version_mismatch(uint16_t ethertype, uint8_t first) noexcept nogil:
    # RFC 1122 §3.2.1.1 (IPv4) and RFC 8200 §3 (IPv6): the version nibble must be
    # the one the ethertype announces.  Only the other IP version is a mismatch;
    # any other nibble is left to the IP parser (ip_version).
    if ethertype == ETH_P_IP:
        return (first >> 4) == 6
    return (first >> 4) == 4


cdef int parse_eth(const uint8_t* buf, Py_ssize_t n, uint16_t* ethertype, int32_t* vlan_tci) noexcept nogil:
    cdef int rc = _parse_eth(buf, n, ethertype, vlan_tci)
    if rc < 0:
        _counters[-rc] += 1
    return rc


# ---- ICMP packet too big -------------------------------------------------------------
cpdef uint32_t plateau_mtu(uint32_t total_length) noexcept nogil:
    """RFC 1191 §5: the largest plateau of the §7 table below `total_length` (the
    quoted datagram's total length); 68 (RFC 791's minimum) when none is below it."""
    # RFC 1191 §7, largest first: 65535 32000 17914 8166 4352 2002 1492 1006 508 296 68
    if total_length > 65535: return 65535
    if total_length > 32000: return 32000
    if total_length > 17914: return 17914
    if total_length > 8166: return 8166
    if total_length > 4352: return 4352
    if total_length > 2002: return 2002
    if total_length > 1492: return 1492
    if total_length > 1006: return 1006
    if total_length > 508: return 508
    if total_length > 296: return 296
    return 68


cdef int _parse_icmp_ptb(const uint8_t* buf, Py_ssize_t n, icmp_ptb_t* info, tcp_seg_t* q, int verify_csum) noexcept nogil:
    cdef ip_info_t ip, qip
    cdef int rc = _parse_ip(buf, n, &ip, verify_csum == 1 or verify_csum == 2)
    cdef const uint8_t* icmp
    cdef const uint8_t* quote
    cdef const uint8_t* th
    cdef uint32_t ilen, qlen, avail
    cdef uint64_t acc
    cdef uint32_t* mtu = &info.mtu_field
    if rc:
        return rc
    if (ip.version == 4 and ip.proto != NH_ICMP) or (ip.version == 6 and ip.proto != NH_ICMPV6):
        return WIRE_NOT_ICMP
    if ip.is_fragment:
        return WIRE_FRAGMENT
    icmp = buf + ip.upper_off
    ilen = ip.end - ip.upper_off
    if ilen < ICMP_HDR_LEN:
        return WIRE_ICMP_TRUNCATED
    if verify_csum == 1:
        # RFC 792: over the ICMP message; RFC 4443 §2.3: plus the IPv6 pseudo-header
        acc = 0 if ip.version == 4 else _pseudo(&ip, NH_ICMPV6, ilen)
        if csum_fold(csum_add(icmp, ilen, acc)) != 0:
            return WIRE_ICMP_CHECKSUM
    if ip.version == 4:
        if icmp[0] != ICMP4_UNREACH or icmp[1] != ICMP4_FRAG_NEEDED:
            return WIRE_ICMP_NOT_PTB
        mtu[0] = wr_be16(icmp + 6)               # RFC 1191 §4: next-hop MTU
    else:
        if icmp[0] != ICMP6_PTB or icmp[1] != 0:
            return WIRE_ICMP_NOT_PTB
        mtu[0] = wr_be32(icmp + 4)               # RFC 4443 §3.2
    quote = icmp + ICMP_HDR_LEN
    qlen = ilen - ICMP_HDR_LEN
    # The quote is cut short by design (RFC 792: IP header + 64 bits; RFC 4443 §3.2:
    # as much as fits in 1280 bytes): walk its headers over the bytes present.
    if qlen < 1:
        return WIRE_ICMP_QUOTE_TRUNCATED
    if (quote[0] >> 4) != ip.version:
        return WIRE_ICMP_QUOTE_TRUNCATED
    if ip.version == 4:
        if qlen < IP4_MIN_HDR or (quote[0] & 0x0f) < 5 or <uint32_t>((quote[0] & 0x0f) * 4 + 8) > qlen:
            return WIRE_ICMP_QUOTE_TRUNCATED
        qip.version = 4
        qip.proto = quote[IP4_PROTO]
        if wr_be16(quote + IP4_FRAG) & IP4_FRAG_OFF_MASK:
            qip.proto = 255                     # a later fragment: no TCP header quoted
        qip.upper_off = (quote[0] & 0x0f) * 4
        qip.src = quote + IP4_SRC
        qip.dst = quote + IP4_DST
        q.tos = quote[IP4_TOS]
        q.ttl = quote[IP4_TTL]
        q.ip_ident = wr_be16(quote + IP4_IDENT)
        q.ip_df = 1 if wr_be16(quote + IP4_FRAG) & IP4_DF else 0
        info.quoted_total_len = wr_be16(quote + IP4_TOTAL_LEN)
    else:
        # reuse the chain walk with a fake payload length = bytes present
        if qlen < IP6_HDR_LEN + 8:
            return WIRE_ICMP_QUOTE_TRUNCATED
        rc = _parse_ip_quoted6(quote, qlen, &qip)
        if rc:
            return rc
        q.tos = qip.tos
        q.ttl = qip.ttl
        q.flow_label = qip.flow_label
        info.quoted_total_len = IP6_HDR_LEN + wr_be16(quote + IP6_PLEN)
        if qip.final_dst != qip.dst:
            q.has_final_dst = 1
            memcpy(q.final_dst, qip.final_dst, 16)
    if qip.proto != NH_TCP:
        return WIRE_ICMP_QUOTE_NOT_TCP
    avail = qlen - qip.upper_off
    if avail < 8:
        return WIRE_ICMP_QUOTE_TRUNCATED
    th = quote + qip.upper_off
    q.ip_version = ip.version
    memcpy(q.src, qip.src, 4 if ip.version == 4 else 16)
    memcpy(q.dst, qip.dst, 4 if ip.version == 4 else 16)
    q.sport = wr_be16(th + TCP_SPORT)
    q.dport = wr_be16(th + TCP_DPORT)
    q.seq = wr_be32(th + TCP_SEQ)
    if avail >= 16:
        q.ack = wr_be32(th + TCP_ACK)
        q.flags = th[TCP_FLAGS_B]
        q.window = wr_be16(th + TCP_WIN)
    q.ip_hdr_len = <uint16_t>qip.upper_off
    q.tcp_hdr_len = <uint16_t>(avail if avail < TCP_MAX_HDR else TCP_MAX_HDR)
    q.csum_status = CSUM_UNCHECKED
    info.mtu = info.mtu_field
    if ip.version == 4 and info.mtu_field == 0:
        # RFC 1191 §5: a router older than RFC 1191 leaves the field 0; estimate
        # from the quoted datagram's total length with the plateau table.
        info.mtu = plateau_mtu(info.quoted_total_len)
        info.mtu_estimated = 1
    # RFC 1191 §4 / RFC 791: no IPv4 link has an MTU below 68.  RFC 8201 §4: an
    # IPv6 one is never below 1280.
    if (ip.version == 4 and info.mtu < 68) or (ip.version == 6 and info.mtu < 1280):
        return WIRE_ICMP_MTU
    return WIRE_OK


cdef int _parse_ip_quoted6(const uint8_t* quote, uint32_t qlen, ip_info_t* qip) noexcept nogil:
    # Copy the 40-byte header into a scratch packet whose payload length claims
    # exactly the bytes present, so _parse_ip's bounded walk applies unchanged.
    cdef uint8_t scratch[1280]
    cdef uint32_t take = qlen if qlen < 1280 else 1280
    cdef int rc
    memcpy(scratch, quote, take)
    wr_put16(scratch + IP6_PLEN, <uint16_t>(take - IP6_HDR_LEN))
    rc = _parse_ip(scratch, take, qip, 0)
    if rc == WIRE_IPV6_JUMBO:
        rc = WIRE_IPV6_EXT_TRUNCATED
    if rc == WIRE_IPV6_ROUTING_TYPE or rc == WIRE_IP_FRAGMENT_PAST_MAX:
        rc = WIRE_OK                            # the walk is complete; the quote still names the flow
    if rc:
        return WIRE_ICMP_QUOTE_TRUNCATED
    if qip.final_dst != qip.dst:
        qip.final_dst = quote + (qip.final_dst - scratch)     # point into the quote, not the scratch
    qip.src = quote + IP6_SRC
    qip.dst = quote + IP6_DST
    if qip.is_fragment and qip.frag_offset:
        qip.proto = 255                         # not a TCP header behind it
    return WIRE_OK


cdef int parse_icmp_ptb_ex(const uint8_t* buf, Py_ssize_t n, icmp_ptb_t* info, tcp_seg_t* quoted, int verify_csum) noexcept nogil:
    seg_init(quoted)
    memset(info, 0, sizeof(icmp_ptb_t))
    cdef int rc = _parse_icmp_ptb(buf, n, info, quoted, verify_csum)
    if rc:
        _counters[-rc] += 1
    return rc


cdef int parse_icmp_ptb(const uint8_t* buf, Py_ssize_t n, uint32_t* mtu, tcp_seg_t* quoted, int verify_csum) noexcept nogil:
    cdef icmp_ptb_t info
    cdef int rc = parse_icmp_ptb_ex(buf, n, &info, quoted, verify_csum)
    mtu[0] = info.mtu if info.mtu else info.mtu_field
    return rc


# =====================================================================================
# Python level
# =====================================================================================

class WireError(ValueError):
    """A packet the wire layer rejects; .code is the WIRE_* code, .counter its counter."""

    def __init__(self, message, code=0, counter=""):
        super().__init__(message)
        self.code = code
        self.counter = counter


class IntegrityError(WireError):
    """The bytes are unusable (truncated, bad length, bad checksum...)."""


class SanityError(WireError):
    """The bytes are legal but their meaning is not (SYN+FIN, port 0, fragment...)."""


# code -> (counter name, condition that failed)
ERRORS = {
    WIRE_ETH_TRUNCATED: ("eth_truncated", "Ethernet frame shorter than 14 bytes"),
    WIRE_VLAN_TRUNCATED: ("vlan_truncated", "802.1Q tag truncated"),
    WIRE_IP_TRUNCATED: ("ip_truncated", "IP packet shorter than its fixed header (20 / 40 bytes)"),
    WIRE_IP_VERSION: ("ip_version", "IP version is neither 4 nor 6"),
    WIRE_IPV4_IHL: ("ipv4_ihl", "IPv4 IHL < 5 (RFC 791 §3.1)"),
    WIRE_IPV4_HDR_PAST_END: ("ipv4_hdr_past_end", "IPv4 IHL*4 exceeds the buffer"),
    WIRE_IPV4_TOTAL_LEN: ("ipv4_total_len", "IPv4 total length < header length or > buffer"),
    WIRE_IPV4_CHECKSUM: ("ipv4_checksum", "IPv4 header checksum wrong (RFC 791 §3.1)"),
    WIRE_IPV6_PAYLOAD_LEN: ("ipv6_payload_len", "IPv6 40 + payload length exceeds the buffer (RFC 8200 §3)"),
    WIRE_IPV6_EXT_TRUNCATED: ("ipv6_ext_truncated", "IPv6 extension header truncated (< 8 bytes left)"),
    WIRE_IPV6_EXT_PAST_END: ("ipv6_ext_past_end", "IPv6 extension header length points past the packet"),
    WIRE_IPV6_EXT_CHAIN: ("ipv6_ext_chain", "IPv6 extension-header chain longer than 8 headers"),
    WIRE_TCP_TRUNCATED: ("tcp_truncated", "TCP segment shorter than 20 bytes"),
    WIRE_TCP_DOFF: ("tcp_doff", "TCP data offset < 5 (RFC 9293 §3.1)"),
    WIRE_TCP_DOFF_PAST_END: ("tcp_doff_past_end", "TCP data offset beyond the segment"),
    WIRE_TCP_OPT_LEN: ("tcp_opt_len", "TCP option length < 2 (RFC 9293 §3.2)"),
    WIRE_TCP_OPT_PAST_END: ("tcp_opt_past_end", "TCP option runs past the header"),
    WIRE_TCP_OPT_BAD_LEN: ("tcp_opt_bad_len", "TCP option length illegal for its kind"),
    WIRE_TCP_CHECKSUM: ("tcp_checksum", "TCP checksum wrong (RFC 9293 §3.1)"),
    WIRE_ICMP_TRUNCATED: ("icmp_truncated", "ICMP message shorter than 8 bytes"),
    WIRE_ICMP_CHECKSUM: ("icmp_checksum", "ICMP checksum wrong (RFC 792 / RFC 4443 §2.3)"),
    WIRE_ICMP_QUOTE_TRUNCATED: ("icmp_quote_truncated", "ICMP quoted packet shorter than its IP header + 8 bytes"),
    WIRE_IP_VERSION_MISMATCH: ("ip_version_mismatch",
                               "IP version disagrees with the ethertype (RFC 1122 §3.2.1.1, RFC 8200 §3)"),
    WIRE_IPV6_ROUTING_MALFORMED: ("ipv6_routing_malformed",
                                  "IPv6 routing header's addresses do not fit its length / segments left "
                                  "(RFC 6275 §6.4, RFC 8754 §4.3.1.1)"),
    WIRE_IP_FRAGMENT_PAST_MAX: ("ip_fragment_past_max",
                                "IP fragment ends beyond 65535 (RFC 791 §3.2, RFC 8200 §4.5)"),
    WIRE_ETH_NOT_IP: ("eth_not_ip", "ethertype is neither IPv4 nor IPv6"),
    WIRE_NOT_TCP: ("not_tcp", "upper-layer protocol is not TCP"),
    WIRE_FRAGMENT: ("ip_fragment", "IP fragment: not reassembled (RFC 791 §3.2 / RFC 8200 §4.5)"),
    WIRE_IPV6_HBH_NOT_FIRST: ("ipv6_hbh_not_first", "IPv6 hop-by-hop header not first (RFC 8200 §4.3)"),
    WIRE_IPV6_JUMBO: ("ipv6_jumbo", "IPv6 payload length 0 with hop-by-hop (jumbogram, RFC 2675): unsupported"),
    WIRE_TCP_PORT_ZERO: ("tcp_port_zero", "TCP source or destination port is 0"),
    WIRE_TCP_SYN_FIN: ("tcp_syn_fin", "TCP SYN and FIN both set"),
    WIRE_TCP_SYN_RST: ("tcp_syn_rst", "TCP SYN and RST both set"),
    WIRE_TCP_MULTICAST: ("tcp_multicast", "TCP from/to a multicast or broadcast address (RFC 9293 §3.10.7.2)"),
    WIRE_NOT_ICMP: ("not_icmp", "upper-layer protocol is not ICMP / ICMPv6"),
    WIRE_ICMP_NOT_PTB: ("icmp_not_ptb", "ICMP is not frag-needed (3/4) / packet-too-big (2/0)"),
    WIRE_ICMP_MTU: ("icmp_mtu", "ICMP reported MTU below 68 (IPv4) / 1280 (IPv6, RFC 8201 §4)"),
    WIRE_ICMP_QUOTE_NOT_TCP: ("icmp_quote_not_tcp", "ICMP quoted packet is not TCP"),
    WIRE_IPV6_ROUTING_TYPE: ("ipv6_routing_type",
                             "IPv6 routing header with segments left of a type not read (0: RFC 5095; "
                             "RFC 8200 §4.4): final destination unknown"),
}

COUNTER_NAMES = tuple(name for _, (name, _) in sorted(ERRORS.items(), reverse=True))
CODES = {name: code for code, (name, _) in ERRORS.items()}    # counter name -> WIRE_* code


def is_integrity(int code):
    return -40 < code < 0


def error_for(int code, detail=None):
    """The exception for a WIRE_* code (not raised, not counted)."""
    name, cond = ERRORS[code]
    msg = cond if detail is None else f"{cond}: {detail}"
    cls = IntegrityError if -40 < code < 0 else SanityError
    return cls(msg, code, name)


def count(int code):
    """Count a rejection found at the Python level (Repr checks)."""
    wire_count(code)


def counter_values():
    """Snapshot {counter name: count} of every wire rejection counter."""
    return {name: _counters[-code] for code, (name, _) in ERRORS.items()}


def reset_counters():
    memset(_counters, 0, sizeof(_counters))


cdef inline int _raise(int code) except -1:
    raise error_for(code)


# ---- buffers ---------------------------------------------------------------------------
cdef inline int _get(object data, Py_buffer* view, int writable) except -1:
    if writable:
        return PyObject_GetBuffer(data, view, PyBUF_WRITABLE)
    return PyObject_GetBuffer(data, view, PyBUF_SIMPLE)


cdef bytes _addr(const uint8_t* p, int version):
    return PyBytes_FromStringAndSize(<const char*>p, 4 if version == 4 else 16)


cdef int _set_addr(uint8_t* dst, object value, int version) except -1:
    cdef const uint8_t[::1] v = value
    cdef Py_ssize_t want = 4 if version == 4 else 16
    if v.shape[0] != want:
        raise ValueError(f"address must be {want} bytes for IPv{version}")
    memcpy(dst, &v[0], want)
    return 0


# ---- Segment: the Python handle on a tcp_seg_t ------------------------------------------
cdef class Segment:
    """One TCP segment with its IP fields: what parse_ip_tcp fills / emit_ip_tcp writes.

    Built empty (`Segment()`), by `parse_packet(buf)`, or by `TcpSegment.parse`.
    Every tcp_seg_t field is a read/write attribute; `to_bytes(payload)` emits.
    """
    cdef tcp_seg_t seg
    cdef object _packet      # the parsed buffer (payload view), or None

    def __cinit__(self):
        seg_init(&self.seg)
        self._packet = None

    # IP
    @property
    def ip_version(self): return self.seg.ip_version
    @ip_version.setter
    def ip_version(self, int v):
        if v != 4 and v != 6:
            raise ValueError("ip_version must be 4 or 6")
        self.seg.ip_version = v
    @property
    def tos(self): return self.seg.tos
    @tos.setter
    def tos(self, v): self.seg.tos = v
    @property
    def dscp(self): return self.seg.tos >> 2
    @property
    def ecn(self): return self.seg.tos & 3
    @property
    def ttl(self): return self.seg.ttl
    @ttl.setter
    def ttl(self, v): self.seg.ttl = v
    @property
    def src(self): return _addr(self.seg.src, self.seg.ip_version)
    @src.setter
    def src(self, v): self._set(self.seg.src, v)
    @property
    def dst(self): return _addr(self.seg.dst, self.seg.ip_version)
    @dst.setter
    def dst(self, v): self._set(self.seg.dst, v)

    cdef int _set(self, uint8_t* field, v) except -1:
        # a 4-byte address makes an unset segment IPv4, a 16-byte one IPv6
        version = self.seg.ip_version or (4 if len(v) == 4 else 6)
        _set_addr(field, v, version)
        self.seg.ip_version = version
        return 0
    @property
    def ip_ident(self): return self.seg.ip_ident
    @ip_ident.setter
    def ip_ident(self, v): self.seg.ip_ident = v
    @property
    def ip_df(self): return bool(self.seg.ip_df)
    @ip_df.setter
    def ip_df(self, v): self.seg.ip_df = 1 if v else 0
    @property
    def flow_label(self): return self.seg.flow_label
    @flow_label.setter
    def flow_label(self, uint32_t v):
        if v > 0xfffff:
            raise ValueError("flow label is 20 bits")
        self.seg.flow_label = v
    # TCP
    @property
    def sport(self): return self.seg.sport
    @sport.setter
    def sport(self, v): self.seg.sport = v
    @property
    def dport(self): return self.seg.dport
    @dport.setter
    def dport(self, v): self.seg.dport = v
    @property
    def seq(self): return self.seg.seq
    @seq.setter
    def seq(self, v): self.seg.seq = v
    @property
    def ack(self): return self.seg.ack
    @ack.setter
    def ack(self, v): self.seg.ack = v
    @property
    def flags(self): return self.seg.flags
    @flags.setter
    def flags(self, v): self.seg.flags = v
    @property
    def flags_hi(self):
        """Low nibble of TCP byte 12: TH_AE (0x01, flag 0x100) and 3 reserved bits."""
        return self.seg.flags_hi
    @flags_hi.setter
    def flags_hi(self, int v):
        if not 0 <= v <= 0x0f:
            raise ValueError("flags_hi is 4 bits (AE + 3 reserved)")
        self.seg.flags_hi = v
    @property
    def ae(self): return bool(self.seg.flags_hi & TH_AE)
    @property
    def final_dst(self):
        """The destination of the TCP pseudo-header (RFC 8200 §8.1): an IPv6 routing
        header's final destination when Segments Left > 0, else dst."""
        return _addr(seg_final_dst(&self.seg), self.seg.ip_version)
    @property
    def has_final_dst(self): return bool(self.seg.has_final_dst)
    @property
    def window(self): return self.seg.window
    @window.setter
    def window(self, v): self.seg.window = v
    @property
    def urg_ptr(self): return self.seg.urg_ptr
    @urg_ptr.setter
    def urg_ptr(self, v): self.seg.urg_ptr = v
    @property
    def csum_status(self): return self.seg.csum_status
    @property
    def ip_hdr_len(self): return self.seg.ip_hdr_len
    @property
    def tcp_hdr_len(self): return self.seg.tcp_hdr_len
    @property
    def payload_off(self): return self.seg.payload_off
    @property
    def payload_len(self): return self.seg.payload_len
    @property
    def payload(self):
        """The payload bytes of the parsed packet (b'' for a built segment)."""
        if self._packet is None:
            return b""
        return bytes(memoryview(self._packet)[self.seg.payload_off:self.seg.payload_off + self.seg.payload_len])
    # options
    @property
    def mss(self): return self.seg.opts.mss if self.seg.opts.mss else None
    @mss.setter
    def mss(self, v): self.seg.opts.mss = 0 if v is None else v
    @property
    def wscale(self): return None if self.seg.opts.wscale < 0 else self.seg.opts.wscale
    @wscale.setter
    def wscale(self, v):
        if v is not None and not 0 <= v <= 127:
            raise ValueError("wscale is 0..127 on the wire (RFC 7323 §2.3 caps use at 14)")
        self.seg.opts.wscale = -1 if v is None else v
    @property
    def sack_perm(self): return bool(self.seg.opts.sack_perm)
    @sack_perm.setter
    def sack_perm(self, v): self.seg.opts.sack_perm = 1 if v else 0
    @property
    def ts(self):
        return (self.seg.opts.ts_val, self.seg.opts.ts_ecr) if self.seg.opts.has_ts else None
    @ts.setter
    def ts(self, v):
        if v is None:
            self.seg.opts.has_ts = 0
            self.seg.opts.ts_val = self.seg.opts.ts_ecr = 0
        else:
            self.seg.opts.has_ts = 1
            self.seg.opts.ts_val, self.seg.opts.ts_ecr = v
    @property
    def sack(self):
        return tuple((self.seg.opts.sack_left[i], self.seg.opts.sack_right[i]) for i in range(self.seg.opts.n_sack))
    @sack.setter
    def sack(self, blocks):
        blocks = tuple(blocks)
        if len(blocks) > TCP_MAX_SACK:
            raise ValueError("at most 4 SACK blocks (RFC 2018 §3)")
        for i, (l, r) in enumerate(blocks):
            self.seg.opts.sack_left[i] = l
            self.seg.opts.sack_right[i] = r
        for i in range(len(blocks), TCP_MAX_SACK):
            self.seg.opts.sack_left[i] = self.seg.opts.sack_right[i] = 0
        self.seg.opts.n_sack = len(blocks)
    @property
    def scps(self):
        """(bitmap, connection id, extended-capabilities bytes) or None.

        bitmap and connection id are None when only the extended option is
        present (no 4-byte capabilities option).  The extended bytes are those
        of a second kind-20 option (length != 4), from its third byte:
        (binding space, length << 4, data) groups."""
        if not self.seg.opts.has_scps and not self.seg.opts.scps_ext_len:
            return None
        ext = PyBytes_FromStringAndSize(<const char*>self.seg.opts.scps_ext, self.seg.opts.scps_ext_len)
        if not self.seg.opts.has_scps:
            return (None, None, ext)
        return (self.seg.opts.scps_bits, self.seg.opts.scps_conn_id, ext)
    @scps.setter
    def scps(self, v):
        cdef const uint8_t[::1] ext
        if v is None:
            self.seg.opts.has_scps = 0
            self.seg.opts.scps_bits = self.seg.opts.scps_conn_id = self.seg.opts.scps_ext_len = 0
            memset(self.seg.opts.scps_ext, 0, 12)
            return
        bits, conn_id, ext_b = v
        ext = bytes(ext_b)
        if ext.shape[0] > 12 or 0 < ext.shape[0] < 3:
            # option length 4 means the plain capabilities option, so an extended
            # one has length 5..14 here (3..12 bytes after kind and length)
            raise ValueError("SCPS extended capabilities must be 3..12 bytes (or none)")
        if (bits is None) != (conn_id is None):
            raise ValueError("SCPS bitmap and connection id are both present or both None")
        if bits is None and not ext.shape[0]:
            raise ValueError("SCPS with neither capabilities nor extended capabilities: use None")
        self.seg.opts.has_scps = 0 if bits is None else 1
        self.seg.opts.scps_bits = 0 if bits is None else bits
        self.seg.opts.scps_conn_id = 0 if conn_id is None else conn_id
        self.seg.opts.scps_ext_len = ext.shape[0]
        memset(self.seg.opts.scps_ext, 0, 12)
        if ext.shape[0]:
            memcpy(self.seg.opts.scps_ext, &ext[0], ext.shape[0])
    @property
    def snack(self):
        """The first (hole offset, hole size) in segments, or None (see snack_holes)."""
        return (self.seg.opts.snack_offset, self.seg.opts.snack_size) if self.seg.opts.has_snack else None
    @snack.setter
    def snack(self, v):
        self.snack_holes = () if v is None else (v,)
    @property
    def snack_holes(self):
        """Every SNACK hole of the segment, in wire order: ((offset, size), ...)."""
        if self.seg.opts.n_snack == 0 and self.seg.opts.has_snack:
            return ((self.seg.opts.snack_offset, self.seg.opts.snack_size),)
        return tuple((self.seg.opts.snack_hole_offset[i], self.seg.opts.snack_hole_size[i])
                     for i in range(self.seg.opts.n_snack))
    @snack_holes.setter
    def snack_holes(self, holes):
        holes = tuple(holes)
        if len(holes) > TCP_MAX_SNACK:
            raise ValueError(f"at most {TCP_MAX_SNACK} SNACK options fit in 40 option bytes")
        for i, (off, size) in enumerate(holes):
            self.seg.opts.snack_hole_offset[i] = off
            self.seg.opts.snack_hole_size[i] = size
        for i in range(len(holes), TCP_MAX_SNACK):
            self.seg.opts.snack_hole_offset[i] = self.seg.opts.snack_hole_size[i] = 0
        self.seg.opts.n_snack = len(holes)
        self.seg.opts.has_snack = 1 if holes else 0
        self.seg.opts.snack_offset = holes[0][0] if holes else 0
        self.seg.opts.snack_size = holes[0][1] if holes else 0
    @property
    def record_boundary(self): return bool(self.seg.opts.has_rb)
    @record_boundary.setter
    def record_boundary(self, v): self.seg.opts.has_rb = 1 if v else 0
    @property
    def corruption_experienced(self): return bool(self.seg.opts.has_corruption)
    @corruption_experienced.setter
    def corruption_experienced(self, v): self.seg.opts.has_corruption = 1 if v else 0
    @property
    def fast_open(self):
        """TCP Fast Open option (kind 34, RFC 7413 §4.1.1): the cookie (bytes; b"" is a
        cookie request), or None when absent."""
        if not self.seg.opts.has_fo:
            return None
        return PyBytes_FromStringAndSize(<const char*>self.seg.opts.fo_cookie, self.seg.opts.fo_len)
    @fast_open.setter
    def fast_open(self, v):
        cdef const uint8_t[::1] c
        memset(self.seg.opts.fo_cookie, 0, 16)
        if v is None:
            self.seg.opts.has_fo = self.seg.opts.fo_len = 0
            return
        c = bytes(v)
        if c.shape[0] != 0 and not 4 <= c.shape[0] <= 16:
            raise ValueError("a Fast Open cookie is 4..16 bytes, or b\"\" for a cookie request (RFC 7413 §4.1.1)")
        self.seg.opts.has_fo = 1
        self.seg.opts.fo_len = c.shape[0]
        if c.shape[0]:
            memcpy(self.seg.opts.fo_cookie, &c[0], c.shape[0])
    @property
    def unknown_options(self):
        """Unknown options verbatim, as ((kind, data), ...)."""
        out = []
        cdef int i = 0
        while i + 1 < self.seg.opts.raw_len:
            l = self.seg.opts.raw[i + 1]
            out.append((self.seg.opts.raw[i],
                        PyBytes_FromStringAndSize(<const char*>self.seg.opts.raw + i + 2, l - 2)))
            i += l
        return tuple(out)
    @unknown_options.setter
    def unknown_options(self, opts):
        cdef bytearray raw = bytearray()
        for kind, data in opts:
            if kind in (0, 1, 2, 3, 4, 5, 8, 20, 21, 22, 23, 34):
                raise ValueError(f"option kind {kind} is not unknown")
            raw += bytes((kind, len(data) + 2)) + bytes(data)
        if len(raw) > TCP_MAX_RAW_OPTS:
            raise ValueError("unknown options exceed 40 bytes")
        memset(self.seg.opts.raw, 0, TCP_MAX_RAW_OPTS)
        for i in range(len(raw)):
            self.seg.opts.raw[i] = raw[i]
        self.seg.opts.raw_len = len(raw)

    def options_len(self):
        """Bytes of options emit would write (padded to 4)."""
        return tcp_opts_len(&self.seg.opts)

    def to_bytes(self, payload=b""):
        """IP + TCP packet with both checksums filled (emit_ip_tcp)."""
        cdef const uint8_t[::1] pl = bytes(payload)
        cdef Py_ssize_t plen = pl.shape[0]
        cdef Py_ssize_t cap, n
        if self.seg.ip_version != 4 and self.seg.ip_version != 6:
            raise ValueError("ip_version must be set to 4 or 6")
        cap = 40 + 60 + plen
        out = PyBytes_FromStringAndSize(NULL, cap)
        n = emit_ip_tcp(<uint8_t*>PyBytes_AS_STRING(out), cap, &self.seg, &pl[0] if plen else NULL, plen)
        if n == -2:
            raise ValueError("options longer than 40 bytes or packet longer than 65535")
        return out[:n]

    def emit_tcp(self, object buf, src, dst, payload=b""):
        """Write only the TCP header + options + payload into buf, checksum filled
        over the pseudo-header of src/dst (4 or 16 bytes).  Returns the length."""
        cdef Py_buffer view
        cdef const uint8_t[::1] pl = bytes(payload)
        cdef const uint8_t[::1] s = bytes(src)
        cdef const uint8_t[::1] d = bytes(dst)
        cdef int olen = tcp_opts_len(&self.seg.opts)
        cdef Py_ssize_t plen = pl.shape[0], need = TCP_MIN_HDR + olen + plen
        cdef uint8_t* w
        cdef uint64_t acc
        if olen > 40:
            raise ValueError("options longer than 40 bytes")
        if s.shape[0] != d.shape[0] or s.shape[0] not in (4, 16):
            raise ValueError("src/dst must both be 4 or 16 bytes")
        _get(buf, &view, 1)
        try:
            if view.len < need:
                raise ValueError(f"buffer of {view.len} bytes, need {need}")
            w = <uint8_t*>view.buf
            _emit_tcp(w, &self.seg, olen, &pl[0] if plen else NULL, plen)
            if s.shape[0] == 4:
                acc = pseudo_v4(&s[0], &d[0], NH_TCP, <uint32_t>need)
            else:
                acc = pseudo_v6(&s[0], &d[0], NH_TCP, <uint32_t>need)
            wr_put16(w + TCP_CSUM, csum_fold(csum_add(w, need, acc)))
        finally:
            PyBuffer_Release(&view)
        return need

    def __repr__(self):
        return (f"Segment(v{self.seg.ip_version} {self.sport}->{self.dport} seq={self.seq} ack={self.ack} "
                f"flags=0x{self.flags:02x} win={self.window} len={self.payload_len})")


def parse_packet(object packet, int verify_csum=1):
    """parse_ip_tcp over an IP packet (bytes-like, no link header) -> Segment.

    verify_csum: 0 don't check, 1 check, 2 checksum-partial frame (CSUM_PARTIAL).
    Raises IntegrityError / SanityError (counted).
    """
    cdef Segment s = Segment.__new__(Segment)
    cdef Py_buffer view
    cdef int rc
    if type(packet) is bytes:
        rc = parse_ip_tcp(<const uint8_t*>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), &s.seg, verify_csum)
    else:
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
        rc = parse_ip_tcp(<const uint8_t*>view.buf, view.len, &s.seg, verify_csum)
        PyBuffer_Release(&view)
    if rc:
        _raise(rc)
    s._packet = packet
    return s


def check_packet(object packet, int verify_csum=1):
    """parse_ip_tcp without building anything: returns 0 or the (counted) WIRE_* code."""
    cdef tcp_seg_t seg
    cdef Py_buffer view
    cdef int rc
    if type(packet) is bytes:
        return parse_ip_tcp(<const uint8_t*>PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet), &seg, verify_csum)
    PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    rc = parse_ip_tcp(<const uint8_t*>view.buf, view.len, &seg, verify_csum)
    PyBuffer_Release(&view)
    return rc


def parse_many(const uint8_t[::1] data, Py_ssize_t stride, Py_ssize_t count, int verify_csum=1, Py_ssize_t length=-1):
    """Batch parse inside C: `count` packets of `length` bytes (default stride) every
    `stride` bytes of data.  Returns the number that parsed (benchmarks, capture)."""
    cdef Py_ssize_t i, ok = 0
    cdef tcp_seg_t seg
    if length < 0:
        length = stride
    if count and (count - 1) * stride + length > data.shape[0]:
        raise ValueError("data shorter than the packets it should hold")
    with nogil:
        for i in range(count):
            if parse_ip_tcp(&data[i * stride], length, &seg, verify_csum) == WIRE_OK:
                ok += 1
    return ok


def parse_frame(object frame, int verify_csum=1):
    """Ethernet II (+802.1Q) frame carrying IP/TCP -> (vlan_tci or None, Segment)."""
    cdef Py_buffer view
    cdef uint16_t et
    cdef int32_t tci
    cdef int hl, rc = 0
    cdef Segment s = Segment.__new__(Segment)
    PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
    hl = parse_eth(<const uint8_t*>view.buf, view.len, &et, &tci)
    if hl > 0:
        rc = parse_ip_tcp(<const uint8_t*>view.buf + hl, view.len - hl, &s.seg, verify_csum)
    PyBuffer_Release(&view)
    if hl < 0:
        _raise(hl)
    if rc:
        _raise(rc)
    s._packet = memoryview(frame)[hl:]
    return (None if tci < 0 else tci), s


PtbInfo = _namedtuple("PtbInfo", "mtu mtu_field mtu_estimated quoted_total_len quoted")
PtbInfo.__doc__ = """parse_icmp_ptb_ex as Python sees it: `mtu` the next-hop MTU to use (the
plateau estimate when the field is 0, RFC 1191 §5), `mtu_field` as sent,
`mtu_estimated`, `quoted_total_len`, and the `quoted` Segment."""


def parse_ptb_ex(object packet, int verify_csum=1):
    """parse_icmp_ptb_ex over an IP packet -> PtbInfo."""
    cdef Py_buffer view
    cdef icmp_ptb_t info
    cdef int rc
    cdef Segment s = Segment.__new__(Segment)
    PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    rc = parse_icmp_ptb_ex(<const uint8_t*>view.buf, view.len, &info, &s.seg, verify_csum)
    PyBuffer_Release(&view)
    if rc:
        _raise(rc)
    return PtbInfo(info.mtu, info.mtu_field, bool(info.mtu_estimated), info.quoted_total_len, s)


def parse_ptb(object packet, int verify_csum=1):
    """parse_icmp_ptb over an IP packet -> (mtu, quoted Segment); mtu is the
    plateau estimate when the field is 0 (see parse_ptb_ex)."""
    cdef Py_buffer view
    cdef uint32_t mtu
    cdef int rc
    cdef Segment s = Segment.__new__(Segment)
    PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    rc = parse_icmp_ptb(<const uint8_t*>view.buf, view.len, &mtu, &s.seg, verify_csum)
    PyBuffer_Release(&view)
    if rc:
        _raise(rc)
    return mtu, s


def parse_tcp(object segment, src=None, dst=None, int verify_csum=1):
    """A bare TCP segment (header + options + payload) -> Segment with TCP fields.

    The checksum is checked over the pseudo-header of src/dst when verify_csum
    is 1 (both needed).  Integrity, checksum, then sanity (counted)."""
    cdef Py_buffer view
    cdef Segment s = Segment.__new__(Segment)
    cdef int rc
    cdef const uint8_t[::1] sa
    cdef const uint8_t[::1] da
    cdef uint64_t acc
    if verify_csum == 1:
        if src is None or dst is None:
            raise ValueError("checking the TCP checksum needs src and dst")
        sa = bytes(src)
        da = bytes(dst)
        if sa.shape[0] != da.shape[0] or sa.shape[0] not in (4, 16):
            raise ValueError("src/dst must both be 4 or 16 bytes")
    PyObject_GetBuffer(segment, &view, PyBUF_SIMPLE)
    try:
        rc = _parse_tcp(<const uint8_t*>view.buf, view.len, &s.seg)
        if rc == 0:
            if verify_csum == 1:
                if sa.shape[0] == 4:
                    acc = pseudo_v4(&sa[0], &da[0], NH_TCP, <uint32_t>view.len)
                else:
                    acc = pseudo_v6(&sa[0], &da[0], NH_TCP, <uint32_t>view.len)
                if csum_fold(csum_add(<const uint8_t*>view.buf, view.len, acc)) != 0:
                    rc = WIRE_TCP_CHECKSUM
                    s.seg.csum_status = CSUM_BAD
                else:
                    s.seg.csum_status = CSUM_GOOD
            elif verify_csum == 2:
                s.seg.csum_status = CSUM_PARTIAL
            if rc == 0:
                rc = _tcp_sanity(&s.seg)
    finally:
        PyBuffer_Release(&view)
    if rc:
        wire_count(rc)
        _raise(rc)
    if src is not None:
        s.seg.ip_version = 4 if len(src) == 4 else 6
        _set_addr(s.seg.src, src, s.seg.ip_version)
        _set_addr(s.seg.dst, dst, s.seg.ip_version)
    s.seg.payload_off = s.seg.tcp_hdr_len
    s._packet = segment
    return s


def parse_ip(object packet, int verify_csum=1):
    """Integrity of an IPv4/IPv6 header and IPv6 extension chain (counted on error).

    Returns a dict of the fields (addresses as bytes, ext headers as
    ((kind, offset, length), ...)); fragments are reported, not rejected."""
    cdef Py_buffer view
    cdef ip_info_t ip
    cdef int rc
    PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
    try:
        rc = _parse_ip(<const uint8_t*>view.buf, view.len, &ip, verify_csum)
        if rc == 0:
            res = dict(
                version=ip.version, tos=ip.tos, ttl=ip.ttl, ident=ip.ident, df=bool(ip.df),
                more_frags=bool(ip.more_frags), frag_offset=ip.frag_offset, frag_ident=ip.frag_ident,
                is_fragment=bool(ip.is_fragment), flow_label=ip.flow_label, proto=ip.proto,
                upper_off=ip.upper_off, end=ip.end, hdr_len=ip.hdr_len,
                src=_addr(ip.src, ip.version), dst=_addr(ip.dst, ip.version),
                final_dst=_addr(ip.final_dst, ip.version),
                ext=tuple((ip.ext_kind[i], ip.ext_off[i], ip.ext_len[i]) for i in range(ip.n_ext)),
            )
    finally:
        PyBuffer_Release(&view)
    if rc:
        wire_count(rc)
        _raise(rc)
    return res


def emit_ip_header(object buf, int version, src, dst, int proto, Py_ssize_t payload_len, int tos=0, int ttl=64,
                   int ident=0, bint df=False, bint mf=False, int frag_offset=0, uint32_t flow_label=0,
                   options=b""):
    """Write a fixed IPv4 (RFC 791 §3.1, checksum filled, options verbatim) or IPv6
    (RFC 8200 §3; `proto` is the first next-header) header.  Returns its length."""
    cdef Py_buffer view
    cdef uint8_t* w
    cdef Py_ssize_t hl
    cdef bytes ob = bytes(options)
    if version == 4:
        if len(ob) % 4 or len(ob) > 40:
            raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
        hl = IP4_MIN_HDR + len(ob)
        if hl + payload_len > 0xffff:
            raise ValueError("IPv4 total length above 65535")
    elif version == 6:
        if ob:
            raise ValueError("IPv6 has no header options (use extension headers)")
        hl = IP6_HDR_LEN
        if payload_len > 0xffff:
            raise ValueError("IPv6 payload length above 65535 (jumbograms unsupported)")
    else:
        raise ValueError("version must be 4 or 6")
    _get(buf, &view, 1)
    try:
        if view.len < hl:
            raise ValueError(f"buffer of {view.len} bytes, need {hl}")
        w = <uint8_t*>view.buf
        if version == 4:
            w[0] = 0x40 | (hl // 4)
            w[IP4_TOS] = tos
            wr_put16(w + IP4_TOTAL_LEN, <uint16_t>(hl + payload_len))
            wr_put16(w + IP4_IDENT, ident)
            wr_put16(w + IP4_FRAG, (IP4_DF if df else 0) | (IP4_MF if mf else 0) | (frag_offset & IP4_FRAG_OFF_MASK))
            w[IP4_TTL] = ttl
            w[IP4_PROTO] = proto
            w[IP4_CSUM] = 0
            w[IP4_CSUM + 1] = 0
            _set_addr(w + IP4_SRC, src, 4)
            _set_addr(w + IP4_DST, dst, 4)
            if ob:
                memcpy(w + IP4_MIN_HDR, PyBytes_AS_STRING(ob), len(ob))
            wr_put16(w + IP4_CSUM, csum_fold(csum_add(w, hl, 0)))
        else:
            w[0] = 0x60 | (tos >> 4)
            w[1] = ((tos & 0x0f) << 4) | ((flow_label >> 16) & 0x0f)
            wr_put16(w + 2, flow_label & 0xffff)
            wr_put16(w + IP6_PLEN, <uint16_t>payload_len)
            w[IP6_NEXT] = proto
            w[IP6_HLIM] = ttl
            _set_addr(w + IP6_SRC, src, 6)
            _set_addr(w + IP6_DST, dst, 6)
    finally:
        PyBuffer_Release(&view)
    return hl


# ---- zero-copy views ---------------------------------------------------------------------
cdef class _View:
    """A buffer held for the view's lifetime; setters need a writable buffer."""
    cdef Py_buffer view
    cdef uint8_t* p
    cdef Py_ssize_t n
    cdef bint writable
    cdef object obj

    def __cinit__(self, object buf, *args, **kw):
        try:
            PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
            self.writable = True
        except BufferError:
            PyObject_GetBuffer(buf, &self.view, PyBUF_SIMPLE)
            self.writable = False
        self.obj = buf
        self.p = <uint8_t*>self.view.buf
        self.n = self.view.len

    def __dealloc__(self):
        if self.obj is not None:
            PyBuffer_Release(&self.view)

    cdef inline int _w(self) except -1:
        if not self.writable:
            raise TypeError("view over a read-only buffer")
        return 0

    @property
    def buffer(self):
        return self.obj


cdef class EthernetFrame(_View):
    """Ethernet II frame view with an optional 802.1Q/802.1ad tag.  check_len:
    14 bytes (18 when tagged)."""
    cdef int hl
    cdef int32_t tci
    cdef uint16_t et

    def __init__(self, object buf):
        self.et = wr_be16(self.p + 12) if self.n >= ETH_HDR_LEN else 0
        self.tci = -1
        self.hl = ETH_HDR_LEN
        if self.n < ETH_HDR_LEN:
            wire_count(WIRE_ETH_TRUNCATED)
            _raise(WIRE_ETH_TRUNCATED)
        if self.et == ETH_P_8021Q or self.et == ETH_P_8021AD:
            if self.n < ETH_HDR_LEN + VLAN_TAG_LEN:
                wire_count(WIRE_VLAN_TRUNCATED)
                _raise(WIRE_VLAN_TRUNCATED)
            self.tci = wr_be16(self.p + 14)
            self.et = wr_be16(self.p + 16)
            self.hl += VLAN_TAG_LEN
        if ((self.et == ETH_P_IP or self.et == ETH_P_IPV6) and self.n > self.hl
                and _version_mismatch(self.et, self.p[self.hl])):
            wire_count(WIRE_IP_VERSION_MISMATCH)
            _raise(WIRE_IP_VERSION_MISMATCH)

    @property
    def dst(self): return PyBytes_FromStringAndSize(<const char*>self.p, 6)
    @dst.setter
    def dst(self, v):
        cdef const uint8_t[::1] b = bytes(v)
        self._w()
        if b.shape[0] != 6:
            raise ValueError("MAC is 6 bytes")
        memcpy(self.p, &b[0], 6)
    @property
    def src(self): return PyBytes_FromStringAndSize(<const char*>self.p + 6, 6)
    @src.setter
    def src(self, v):
        cdef const uint8_t[::1] b = bytes(v)
        self._w()
        if b.shape[0] != 6:
            raise ValueError("MAC is 6 bytes")
        memcpy(self.p + 6, &b[0], 6)
    @property
    def ethertype(self): return self.et
    @property
    def vlan_tci(self): return None if self.tci < 0 else self.tci
    @property
    def vlan_id(self): return None if self.tci < 0 else self.tci & 0x0fff
    @property
    def header_len(self): return self.hl
    @property
    def payload(self): return memoryview(self.obj)[self.hl:]


cdef class Ipv4Packet(_View):
    """IPv4 header view (RFC 791 §3.1).  check_len once at construction: the buffer
    holds the header (IHL*4 >= 20) and total_len bytes."""

    def __init__(self, object buf):
        cdef int rc = WIRE_OK
        if self.n < IP4_MIN_HDR:
            rc = WIRE_IP_TRUNCATED
        elif self.p[0] >> 4 != 4:
            rc = WIRE_IP_VERSION
        elif (self.p[0] & 0x0f) < 5:
            rc = WIRE_IPV4_IHL
        elif (self.p[0] & 0x0f) * 4 > self.n:
            rc = WIRE_IPV4_HDR_PAST_END
        elif wr_be16(self.p + IP4_TOTAL_LEN) < (self.p[0] & 0x0f) * 4 or wr_be16(self.p + IP4_TOTAL_LEN) > self.n:
            rc = WIRE_IPV4_TOTAL_LEN
        if rc:
            wire_count(rc)
            _raise(rc)

    @property
    def version(self): return 4
    @property
    def header_len(self): return (self.p[0] & 0x0f) * 4
    @property
    def dscp(self): return self.p[IP4_TOS] >> 2
    @dscp.setter
    def dscp(self, int v):
        self._w(); self.p[IP4_TOS] = ((v & 0x3f) << 2) | (self.p[IP4_TOS] & 3)
    @property
    def ecn(self): return self.p[IP4_TOS] & 3
    @ecn.setter
    def ecn(self, int v):
        self._w(); self.p[IP4_TOS] = (self.p[IP4_TOS] & 0xfc) | (v & 3)
    @property
    def total_len(self): return wr_be16(self.p + IP4_TOTAL_LEN)
    @total_len.setter
    def total_len(self, int v):
        self._w(); wr_put16(self.p + IP4_TOTAL_LEN, v)
    @property
    def ident(self): return wr_be16(self.p + IP4_IDENT)
    @ident.setter
    def ident(self, int v):
        self._w(); wr_put16(self.p + IP4_IDENT, v)
    @property
    def dont_frag(self): return bool(wr_be16(self.p + IP4_FRAG) & IP4_DF)
    @dont_frag.setter
    def dont_frag(self, v):
        self._w(); wr_put16(self.p + IP4_FRAG, (wr_be16(self.p + IP4_FRAG) & ~IP4_DF) | (IP4_DF if v else 0))
    @property
    def more_frags(self): return bool(wr_be16(self.p + IP4_FRAG) & IP4_MF)
    @property
    def frag_offset(self): return wr_be16(self.p + IP4_FRAG) & IP4_FRAG_OFF_MASK
    @property
    def is_fragment(self): return bool(wr_be16(self.p + IP4_FRAG) & (IP4_MF | IP4_FRAG_OFF_MASK))
    @property
    def ttl(self): return self.p[IP4_TTL]
    @ttl.setter
    def ttl(self, int v):
        self._w(); self.p[IP4_TTL] = v
    @property
    def protocol(self): return self.p[IP4_PROTO]
    @property
    def checksum(self): return wr_be16(self.p + IP4_CSUM)
    @property
    def src_addr(self): return PyBytes_FromStringAndSize(<const char*>self.p + IP4_SRC, 4)
    @src_addr.setter
    def src_addr(self, v):
        self._w(); _set_addr(self.p + IP4_SRC, v, 4)
    @property
    def dst_addr(self): return PyBytes_FromStringAndSize(<const char*>self.p + IP4_DST, 4)
    @dst_addr.setter
    def dst_addr(self, v):
        self._w(); _set_addr(self.p + IP4_DST, v, 4)
    @property
    def payload(self):
        return memoryview(self.obj)[(self.p[0] & 0x0f) * 4:wr_be16(self.p + IP4_TOTAL_LEN)]

    def verify_checksum(self):
        return csum_fold(csum_add(self.p, (self.p[0] & 0x0f) * 4, 0)) == 0

    def fill_checksum(self):
        self._w()
        self.p[IP4_CSUM] = 0
        self.p[IP4_CSUM + 1] = 0
        wr_put16(self.p + IP4_CSUM, csum_fold(csum_add(self.p, (self.p[0] & 0x0f) * 4, 0)))


cdef class Ipv6Packet(_View):
    """IPv6 fixed-header view (RFC 8200 §3).  check_len: 40 + payload length fits."""

    def __init__(self, object buf):
        cdef int rc = WIRE_OK
        if self.n < IP6_HDR_LEN:
            rc = WIRE_IP_TRUNCATED
        elif self.p[0] >> 4 != 6:
            rc = WIRE_IP_VERSION
        elif IP6_HDR_LEN + wr_be16(self.p + IP6_PLEN) > self.n:
            rc = WIRE_IPV6_PAYLOAD_LEN
        if rc:
            wire_count(rc)
            _raise(rc)

    @property
    def version(self): return 6
    @property
    def traffic_class(self): return ((self.p[0] & 0x0f) << 4) | (self.p[1] >> 4)
    @traffic_class.setter
    def traffic_class(self, int v):
        self._w()
        self.p[0] = 0x60 | ((v >> 4) & 0x0f)
        self.p[1] = ((v & 0x0f) << 4) | (self.p[1] & 0x0f)
    @property
    def dscp(self): return self.traffic_class >> 2
    @property
    def ecn(self): return self.traffic_class & 3
    @property
    def flow_label(self): return ((<uint32_t>(self.p[1] & 0x0f)) << 16) | wr_be16(self.p + 2)
    @flow_label.setter
    def flow_label(self, uint32_t v):
        self._w()
        self.p[1] = (self.p[1] & 0xf0) | ((v >> 16) & 0x0f)
        wr_put16(self.p + 2, v & 0xffff)
    @property
    def payload_len(self): return wr_be16(self.p + IP6_PLEN)
    @payload_len.setter
    def payload_len(self, int v):
        self._w(); wr_put16(self.p + IP6_PLEN, v)
    @property
    def next_header(self): return self.p[IP6_NEXT]
    @property
    def hop_limit(self): return self.p[IP6_HLIM]
    @hop_limit.setter
    def hop_limit(self, int v):
        self._w(); self.p[IP6_HLIM] = v
    @property
    def src_addr(self): return PyBytes_FromStringAndSize(<const char*>self.p + IP6_SRC, 16)
    @src_addr.setter
    def src_addr(self, v):
        self._w(); _set_addr(self.p + IP6_SRC, v, 6)
    @property
    def dst_addr(self): return PyBytes_FromStringAndSize(<const char*>self.p + IP6_DST, 16)
    @dst_addr.setter
    def dst_addr(self, v):
        self._w(); _set_addr(self.p + IP6_DST, v, 6)
    @property
    def payload(self): return memoryview(self.obj)[IP6_HDR_LEN:IP6_HDR_LEN + wr_be16(self.p + IP6_PLEN)]


cdef class TcpSegment(_View):
    """TCP header view over a bare segment (RFC 9293 §3.1).  check_len: 20 <=
    data offset*4 <= buffer.  Options are not parsed here (see parse_tcp)."""

    def __init__(self, object buf):
        cdef int rc = WIRE_OK
        if self.n < TCP_MIN_HDR:
            rc = WIRE_TCP_TRUNCATED
        elif (self.p[TCP_DOFF_B] >> 4) < 5:
            rc = WIRE_TCP_DOFF
        elif (self.p[TCP_DOFF_B] >> 4) * 4 > self.n:
            rc = WIRE_TCP_DOFF_PAST_END
        if rc:
            wire_count(rc)
            _raise(rc)

    @property
    def src_port(self): return wr_be16(self.p + TCP_SPORT)
    @src_port.setter
    def src_port(self, int v):
        self._w(); wr_put16(self.p + TCP_SPORT, v)
    @property
    def dst_port(self): return wr_be16(self.p + TCP_DPORT)
    @dst_port.setter
    def dst_port(self, int v):
        self._w(); wr_put16(self.p + TCP_DPORT, v)
    @property
    def seq_number(self): return wr_be32(self.p + TCP_SEQ)
    @seq_number.setter
    def seq_number(self, uint32_t v):
        self._w(); wr_put32(self.p + TCP_SEQ, v)
    @property
    def ack_number(self): return wr_be32(self.p + TCP_ACK)
    @ack_number.setter
    def ack_number(self, uint32_t v):
        self._w(); wr_put32(self.p + TCP_ACK, v)
    @property
    def header_len(self): return (self.p[TCP_DOFF_B] >> 4) * 4
    @property
    def flags(self): return self.p[TCP_FLAGS_B]
    @flags.setter
    def flags(self, int v):
        self._w(); self.p[TCP_FLAGS_B] = v
    @property
    def syn(self): return bool(self.p[TCP_FLAGS_B] & TH_SYN)
    @property
    def fin(self): return bool(self.p[TCP_FLAGS_B] & TH_FIN)
    @property
    def rst(self): return bool(self.p[TCP_FLAGS_B] & TH_RST)
    @property
    def ack(self): return bool(self.p[TCP_FLAGS_B] & TH_ACK)
    @property
    def window_len(self): return wr_be16(self.p + TCP_WIN)
    @window_len.setter
    def window_len(self, int v):
        self._w(); wr_put16(self.p + TCP_WIN, v)
    @property
    def checksum(self): return wr_be16(self.p + TCP_CSUM)
    @property
    def urgent_at(self): return wr_be16(self.p + TCP_URG)
    @property
    def options(self): return memoryview(self.obj)[TCP_MIN_HDR:(self.p[TCP_DOFF_B] >> 4) * 4]
    @property
    def payload(self): return memoryview(self.obj)[(self.p[TCP_DOFF_B] >> 4) * 4:]

    cdef uint64_t _acc(self, src, dst) except? 0xffffffffffffffff:
        cdef const uint8_t[::1] s = bytes(src)
        cdef const uint8_t[::1] d = bytes(dst)
        if s.shape[0] == 4 and d.shape[0] == 4:
            return pseudo_v4(&s[0], &d[0], NH_TCP, <uint32_t>self.n)
        if s.shape[0] == 16 and d.shape[0] == 16:
            return pseudo_v6(&s[0], &d[0], NH_TCP, <uint32_t>self.n)
        raise ValueError("src/dst must both be 4 or 16 bytes")

    def verify_checksum(self, src, dst):
        """True if the stored checksum is right for this pseudo-header (whole buffer = segment)."""
        return csum_fold(csum_add(self.p, self.n, self._acc(src, dst))) == 0

    def fill_checksum(self, src, dst):
        cdef uint64_t acc = self._acc(src, dst)
        self._w()
        self.p[TCP_CSUM] = 0
        self.p[TCP_CSUM + 1] = 0
        wr_put16(self.p + TCP_CSUM, csum_fold(csum_add(self.p, self.n, acc)))

    def fill_checksum_partial(self, src, dst):
        """Store the folded pseudo-header sum only, as a CHECKSUM_PARTIAL frame carries
        it (the device completes it); see checksum.complete_partial."""
        cdef uint64_t acc = self._acc(src, dst)
        cdef uint16_t c = csum_fold(acc)
        self._w()
        wr_put16(self.p + TCP_CSUM, <uint16_t>(~c & 0xffff))
