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
    uint8_t has_scps        # SCPS capabilities, kind 20 (CCSDS 714.0-B-2)
    uint8_t scps_bits
    uint8_t scps_conn_id
    uint8_t scps_ext_len    # bytes of the extended binding-space part (0 = plain 4-byte form)
    uint8_t scps_ext[12]
    uint8_t has_snack       # SNACK, kind 21
    uint16_t snack_offset
    uint16_t snack_size
    uint8_t has_rb          # record boundary, kind 22
    uint8_t has_corruption  # corruption experienced, kind 23
    uint8_t raw_len         # unknown options, kept verbatim (kind, len, data ...)
    uint8_t raw[40]

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
# MSS, SACK-perm/TS, WS, SACK blocks, SCPS, SNACK, RB, raw) + payload into buf,
# filling IP and TCP checksums.  IPv4 total length / IPv6 payload length are
# computed.  Returns bytes written, or -1 if cap is too small.
cdef Py_ssize_t emit_ip_tcp(uint8_t* buf, Py_ssize_t cap, const tcp_seg_t* seg,
                            const uint8_t* payload, Py_ssize_t plen) noexcept nogil

# Initialise *seg to an empty segment (wscale = -1, everything else 0).
cdef void seg_init(tcp_seg_t* seg) noexcept nogil
