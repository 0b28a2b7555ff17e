# C-level contract of the wire layer, cimported by the TCP engine, the capture
# path and the splitter.  Changing a field here changes every user: keep it
# stable, extend by appending.
from libc.stdint cimport uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, uint64_t

# TCP flag bits (RFC 9293 §3.1, RFC 3168 §6.1 for ECE/CWR)
cdef enum:
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PSH = 0x08
    TH_ACK = 0x10
    TH_URG = 0x20
    TH_ECE = 0x40
    TH_CWR = 0x80

# Parse results: 0 is success; negative values are integrity/sanity error codes
# (the wire module maps each to a named counter and an exception type).
cdef enum:
    WIRE_OK = 0

cdef enum:
    TCP_MAX_SACK = 4
    TCP_MAX_RAW_OPTS = 40   # bytes of unknown options kept verbatim
    TCP_MAX_SNACK = 6       # SNACK holes kept: every one 40 option bytes can carry (6 x 6 bytes)
    TH_AE = 0x01            # in tcp_seg_t.flags_hi: the AE bit, 0x100 of the 12-bit flags field
                            # (RFC 3540 "NS", AccECN RFC 9768 "AE")

cdef struct tcp_opts_t:
    uint16_t mss            # 0 = absent (RFC 9293 §3.7.1)
    int8_t wscale           # -1 = absent (RFC 7323 §2)
    uint8_t sack_perm       # RFC 2018 §2
    uint8_t has_ts          # RFC 7323 §3
    uint32_t ts_val
    uint32_t ts_ecr
    uint8_t n_sack          # RFC 2018 §3, 0..4 blocks
    uint32_t sack_left[4]
    uint32_t sack_right[4]
    uint8_t has_scps        # SCPS capabilities, kind 20 (CCSDS 714.0-B-2 §3.2.3)
    uint8_t scps_bits
    uint8_t scps_conn_id
    uint8_t scps_ext_len    # bytes of the extended-capabilities option after its kind/len (0 = none);
                            # a separate kind-20 option of length != 4 (CCSDS 714.0-B-2 §3.2.5)
    uint8_t scps_ext[12]
    uint8_t has_snack       # SNACK, kind 21: 1 if at least one is present
    uint16_t snack_offset   # the first hole (= snack_hole_offset[0])
    uint16_t snack_size
    uint8_t has_rb          # record boundary, kind 22
    uint8_t has_corruption  # corruption experienced, kind 23
    uint8_t raw_len         # unknown options, kept verbatim (kind, len, data ...)
    uint8_t raw[40]
    # ---- appended (issue 8): every SNACK hole of the segment, in wire order
    uint8_t n_snack         # 0..TCP_MAX_SNACK (a header cannot hold more)
    uint16_t snack_hole_offset[6]
    uint16_t snack_hole_size[6]
    # ---- appended (issue 10): TCP Fast Open, kind 34 (RFC 7413 §4.1.1)
    uint8_t has_fo          # 1 = the option is present
    uint8_t fo_len          # cookie bytes: 0 = a cookie request, else 4..16
    uint8_t fo_cookie[16]

cdef struct tcp_seg_t:
    uint8_t ip_version      # 4 or 6
    uint8_t tos             # IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN)
    uint8_t ttl             # IPv4 TTL / IPv6 hop limit
    uint8_t src[16]         # IPv4 uses the first 4 bytes
    uint8_t dst[16]
    uint16_t sport
    uint16_t dport
    uint32_t seq
    uint32_t ack
    uint8_t flags           # TH_* bits
    uint16_t window         # raw (unscaled) window field
    uint16_t urg_ptr
    uint16_t ip_ident       # IPv4 identification (ignored for IPv6)
    uint8_t ip_df           # IPv4 don't-fragment
    uint32_t flow_label     # IPv6
    uint8_t csum_status     # CSUM_* below, filled by parse
    uint16_t ip_hdr_len     # bytes before the TCP header (incl. IPv6 extension headers)
    uint16_t tcp_hdr_len
    uint32_t payload_off    # offset of payload from the start of the IP packet
    uint32_t payload_len
    tcp_opts_t opts
    # ---- appended (issue 8)
    uint8_t flags_hi        # low nibble of TCP byte 12: TH_AE (0x01) and 3 reserved bits, as on the wire
    uint8_t has_final_dst   # IPv6 routing header with Segments Left > 0: final_dst holds the final
    uint8_t final_dst[16]   # destination (RFC 8200 §8.1), used in the TCP pseudo-header; dst stays
                            # the header's address.  0: the final destination is dst.

cdef enum:
    CSUM_UNCHECKED = 0      # not verified (caller asked not to)
    CSUM_GOOD = 1
    CSUM_PARTIAL = 2        # kernel said CHECKSUM_PARTIAL / not yet computed: not corrupt
    CSUM_BAD = 3

# Parse an IP packet (v4 or v6, no link header) carrying TCP into *out.
# verify_csum: 0 = don't check, 1 = check (sets csum_status; a bad checksum
# returns an error), 2 = the frame is checksum-partial (treat as CSUM_PARTIAL).
# Returns WIRE_OK or a negative error code; never reads past buf[n-1].
cdef int parse_ip_tcp(const uint8_t* buf, Py_ssize_t n, tcp_seg_t* out, int verify_csum) noexcept nogil

# Length of the TCP options a segment with these opts will carry (padded to 4).
cdef int tcp_opts_len(const tcp_opts_t* opts) noexcept nogil

# Write IP header + TCP header (options from seg.opts, in the order Linux uses:
# MSS, SACK-perm/TS, WS, SACK blocks, Fast Open, SCPS caps, SCPS extended caps, SNACK, RB,
# CE, raw) + payload into buf,
# filling IP and TCP checksums.  IPv4 total length / IPv6 payload length are
# computed.  Returns bytes written, -1 if cap is too small, -2 if the options
# exceed 40 bytes (or the IP length 65535).
cdef Py_ssize_t emit_ip_tcp(uint8_t* buf, Py_ssize_t cap, const tcp_seg_t* seg,
                            const uint8_t* payload, Py_ssize_t plen) noexcept nogil

# Initialise *seg to an empty segment (wscale = -1, everything else 0).
cdef void seg_init(tcp_seg_t* seg) noexcept nogil

# ---- parser error codes --------------------------------------------------------
# Error codes returned by the parsers.  Integrity errors (the bytes are
# unusable) are -1..-39, sanity errors (legal bytes, illegal meaning) -40..-63.
# Each code has one named counter (stackpep.wire.counters) incremented by the
# C parser itself, so every caller's rejections are counted.
cdef enum:
    WIRE_ETH_TRUNCATED = -1         # frame shorter than the 14-byte Ethernet II header
    WIRE_VLAN_TRUNCATED = -2        # 802.1Q tag cut short
    WIRE_IP_TRUNCATED = -3          # shorter than the fixed IPv4 (20) / IPv6 (40) header
    WIRE_IP_VERSION = -4            # version nibble neither 4 nor 6
    WIRE_IPV4_IHL = -5              # IHL < 5 (RFC 791 §3.1)
    WIRE_IPV4_HDR_PAST_END = -6     # IHL * 4 beyond the buffer
    WIRE_IPV4_TOTAL_LEN = -7        # total length < header length or > buffer
    WIRE_IPV4_CHECKSUM = -8         # header checksum wrong (RFC 791 §3.1)
    WIRE_IPV6_PAYLOAD_LEN = -9      # 40 + payload length beyond the buffer (RFC 8200 §3)
    WIRE_IPV6_EXT_TRUNCATED = -10   # fewer than 8 bytes left for an extension header
    WIRE_IPV6_EXT_PAST_END = -11    # extension header length points past the packet
    WIRE_IPV6_EXT_CHAIN = -12       # more than IPV6_MAX_EXT extension headers
    WIRE_TCP_TRUNCATED = -13        # TCP segment shorter than 20 bytes
    WIRE_TCP_DOFF = -14             # data offset < 5 (RFC 9293 §3.1)
    WIRE_TCP_DOFF_PAST_END = -15    # data offset * 4 beyond the segment
    WIRE_TCP_OPT_LEN = -16          # option length 0 or 1 (RFC 9293 §3.2)
    WIRE_TCP_OPT_PAST_END = -17     # option (or its length byte) runs past the header
    WIRE_TCP_OPT_BAD_LEN = -18      # length illegal for a known kind (MSS != 4, ...)
    WIRE_TCP_CHECKSUM = -19         # TCP checksum wrong (RFC 9293 §3.1)
    WIRE_ICMP_TRUNCATED = -20       # ICMP message shorter than 8 bytes
    WIRE_ICMP_CHECKSUM = -21        # ICMP checksum wrong (RFC 792, RFC 4443 §2.3)
    WIRE_ICMP_QUOTE_TRUNCATED = -22 # quoted packet shorter than its IP header + 8 bytes
    WIRE_IP_VERSION_MISMATCH = -23  # version nibble disagrees with the ethertype (RFC 1122 §3.2.1.1, RFC 8200 §3)
    WIRE_IPV6_ROUTING_MALFORMED = -24  # routing header's addresses do not fit its length / segments left
    WIRE_IP_FRAGMENT_PAST_MAX = -25 # fragment would end beyond 65535 (RFC 791 §3.2, RFC 8200 §4.5)
    WIRE_ETH_NOT_IP = -40           # ethertype neither IPv4 nor IPv6
    WIRE_NOT_TCP = -41              # upper-layer protocol is not TCP
    WIRE_FRAGMENT = -42             # an IP fragment (RFC 791 §3.2, RFC 8200 §4.5): not reassembled
    WIRE_IPV6_HBH_NOT_FIRST = -43   # hop-by-hop header not right after the IPv6 header (RFC 8200 §4.3)
    WIRE_IPV6_JUMBO = -44           # payload length 0 with hop-by-hop: jumbogram, unsupported (RFC 2675)
    WIRE_TCP_PORT_ZERO = -45        # source or destination port 0
    WIRE_TCP_SYN_FIN = -46          # SYN and FIN together
    WIRE_TCP_SYN_RST = -47          # SYN and RST together
    WIRE_TCP_MULTICAST = -48        # TCP from/to multicast or broadcast (RFC 9293 §3.10.7.2)
    WIRE_NOT_ICMP = -49             # not ICMPv4 / ICMPv6
    WIRE_ICMP_NOT_PTB = -50         # not frag-needed (type 3 code 4) / packet-too-big (type 2)
    WIRE_ICMP_MTU = -51             # reported MTU below 68 (RFC 791) / 1280 (RFC 8200 §5)
    WIRE_ICMP_QUOTE_NOT_TCP = -52   # the quoted packet is not TCP
    WIRE_IPV6_ROUTING_TYPE = -53    # Segments Left > 0 in a routing type we cannot read (0: RFC 5095; 1, 3, ...)
    WIRE_ERR_MIN = -63

cdef enum:
    IPV6_MAX_EXT = 8        # bound on the extension-header chain (RFC 8200 §4.1 order has 6 + AH)
    ETH_P_IP = 0x0800
    ETH_P_IPV6 = 0x86DD
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88A8

# Ethernet II header with at most one 802.1Q/802.1ad tag.  Returns the link
# header length (14 or 18) and sets *ethertype (of the payload) and *vlan_tci
# (-1 when untagged), or a negative WIRE_* code.
cdef int parse_eth(const uint8_t* buf, Py_ssize_t n, uint16_t* ethertype, int32_t* vlan_tci) noexcept nogil

# An ICMPv4 destination-unreachable/fragmentation-needed (RFC 792, RFC 1191 §4)
# or ICMPv6 packet-too-big (RFC 4443 §3.2, RFC 8201 §4) in an IP packet (no link
# header).  On success sets *mtu (the next-hop MTU; for an IPv4 field of 0 the RFC 1191 §5
# plateau estimate, see parse_icmp_ptb_ex) and fills *quoted with what the quoted original
# header gives: ip_version, src, dst, tos, ttl, sport, dport, seq (the first 8
# TCP bytes, all RFC 792 guarantees); quoted.tcp_hdr_len = quoted TCP bytes
# present (capped at 60), and ack/flags/window too when 16+ bytes are quoted.
# verify_csum as for parse_ip_tcp (checks the ICMP checksum, not the quote's).
cdef int parse_icmp_ptb(const uint8_t* buf, Py_ssize_t n, uint32_t* mtu, tcp_seg_t* quoted, int verify_csum) noexcept nogil

# ---- appended (issue 8) -----------------------------------------------------
# What a frag-needed / packet-too-big tells, for parse_icmp_ptb_ex.
cdef struct icmp_ptb_t:
    uint32_t mtu            # next-hop MTU to use: the field, or the RFC 1191 §5 plateau estimate when it is 0
    uint32_t mtu_field      # the MTU field as sent (IPv4: 16 bits, IPv6: 32 bits)
    uint8_t mtu_estimated   # 1: the field was 0 (a pre-RFC 1191 router), mtu is plateau_mtu(quoted_total_len)
    uint32_t quoted_total_len  # quoted IPv4 total length / IPv6 40 + payload length, as the quote says

# As parse_icmp_ptb, with the whole MTU story in *info.  parse_icmp_ptb sets
# *mtu = info.mtu (the estimate for a 0 field).
cdef int parse_icmp_ptb_ex(const uint8_t* buf, Py_ssize_t n, icmp_ptb_t* info, tcp_seg_t* quoted, int verify_csum) noexcept nogil

# RFC 1191 §5/§7: the largest plateau (65535, 32000, 17914, 8166, 4352, 2002,
# 1492, 1006, 508, 296, 68) below the quoted datagram's total length; 68 (the
# IPv4 minimum, RFC 791) when none is below it.  cimport it (nogil) or import it.
cpdef uint32_t plateau_mtu(uint32_t total_length) noexcept nogil

# The destination to use in the TCP pseudo-header and as the flow's far end:
# the routing header's final destination when one is pending, else dst.
cdef inline const uint8_t* seg_final_dst(const tcp_seg_t* seg) noexcept nogil:
    if seg.has_final_dst:
        return &seg.final_dst[0]
    return &seg.dst[0]

# Counter of rejections per error code (index -code); read through
# stackpep.wire.counters.  Incremented by every parser above.
cdef void wire_count(int code) noexcept nogil
