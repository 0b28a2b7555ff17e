# cython: language_level=3
"""SCPS-TP header compression (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)"): IP protocol 105.

When both ends of a connection offered capability bit 0x10 in option 20, the
TCP header of each segment may travel as a compressed header instead: the IP
header stays (protocol / next header 105), the TCP header and its options are
replaced by

    +--------+--------+--------+-----------------------------+-----+--------+
    | conn id| ctl 1  |[ctl 2] | fields present, in order    |[pad]|checksum|
    +--------+--------+--------+-----------------------------+-----+--------+

ctl 1 (bit positions as the reference implementation's compressor, the public
CCSDS reference code; the notes' "SYN" and "ACK" bits are the sequence-number
and acknowledgment-number fields):

    0x80 MORE   ctl 2 follows          0x08 SNACK  SNACK option (offset, size)
    0x40 TS1    timestamp TSval        0x04 PUSH   PSH flag
    0x20 TS2    timestamp TSecr        0x02 S      sequence number (32 bits)
    0x10 RB     record boundary        0x01 A      window (16) + ack number (32)

ctl 2:  0x80 OPTS (length byte + other options as they are)   0x40 PAD (one zero
byte before the checksum)   0x20 URG (+ urgent pointer, 16 bits)   0x10 ACKR (the
ACK flag is clear)   0x04 RST   0x01 FIN   (0x08, 0x02 unused).

Fields, each present only when its bit is set, in this order: urgent pointer,
window + ack, sequence, TSval, TSecr, SNACK (offset:16 size:16), OPTS.  All are
absolute values, never deltas, so a lost packet costs nothing to the next: this
compressor always sends S and A (the expander also takes packets without them,
as a reference peer sends, from the context's last values).  The header is
padded to an even length (PAD, or an all-zero ctl 2) so the data that follows
starts at an even offset of the checksummed bytes.

Checksum (the last two bytes of the compressed header): the Internet checksum
(RFC 1071) over the pseudo-header of the IP header (RFC 9293 §3.1 / RFC 8200
§8.1 with protocol 105 and the compressed segment's length), the compressed
header with the checksum field zero, and the data: what the TCP checksum covers,
for the compressed form.  The TCP checksum itself is not carried; expansion
recomputes it.

Options: a timestamp option written `NOP NOP TS` first, a SNACK written
`NOP NOP SNACK` and a record boundary `NOP NOP RB` last (as the engine's wire
layer writes them) go into TS1/TS2, SNACK and RB; everything between goes
verbatim under OPTS.  Expansion writes them back in that order (TS, OPTS bytes,
SNACK, RB, NOP padding to 4 bytes), so expand(compress(p)) == p byte for byte.

Not compressed (compress() returns None and the segment goes as plain TCP):
SYN segments (option 20 travels in them), CWR/ECE/reserved bits set, an urgent
pointer without URG, IP fragments, IPv6 extension headers, and a segment whose
IPv4 header or TCP checksum is wrong (expansion could not rebuild it).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, memcmp

from stackpep._fast.checksum cimport csum_add, csum_fold, pseudo_v4, pseudo_v6

#: IP protocol number of a compressed SCPS-TP header (IANA: "SCPS")
IPPROTO_SCPS = 105
#: at most this many bytes longer is an expanded packet than its compressed form
HC_GROWTH = 64

cdef enum:
    IPPROTO_TCP = 6
    PROTO_HC = 105
    GROWTH = 64
    # ctl 1
    C_MORE = 0x8000
    C_TS1 = 0x4000
    C_TS2 = 0x2000
    C_RB = 0x1000
    C_SNACK = 0x0800
    C_PUSH = 0x0400
    C_S = 0x0200
    C_A = 0x0100
    # ctl 2
    C_OPTS = 0x0080
    C_PAD = 0x0040
    C_URG = 0x0020
    C_ACKR = 0x0010
    C_RST = 0x0004
    C_FIN = 0x0001
    C_UNUSED = 0x000A
    # TCP flags (RFC 9293 §3.1)
    F_FIN = 0x01
    F_SYN = 0x02
    F_RST = 0x04
    F_PSH = 0x08
    F_ACK = 0x10
    F_URG = 0x20
    F_ECE = 0x40
    F_CWR = 0x80
    # what a context has learnt
    HAVE_SEQ = 1
    HAVE_ACK = 2
    HAVE_TSVAL = 4
    HAVE_TSECR = 8
    # compress() refusals
    HC_NOT_IP_TCP = -10
    HC_FRAGMENT = -11
    HC_IPV6_EXT = -12
    HC_FLAGS = -13
    HC_BAD_CHECKSUM = -14
    HC_NO_ROOM = -15

_REFUSALS = {
    HC_NOT_IP_TCP: "not_ip_tcp", HC_FRAGMENT: "fragment", HC_IPV6_EXT: "ipv6_ext_header",
    HC_FLAGS: "flags", HC_BAD_CHECKSUM: "bad_checksum",
}


cdef inline uint16_t _be16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xff


cdef inline void _put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff


cdef inline uint64_t _sum16(uint64_t acc) noexcept nogil:
    # fold a host-order accumulator to 16 bits without complementing it
    acc = (acc & 0xffffffffu) + (acc >> 32)
    acc = (acc & 0xffffu) + (acc >> 16)
    acc = (acc & 0xffffu) + (acc >> 16)
    return acc


cdef inline uint64_t _pseudo(const uint8_t* ip, bint v6, uint8_t proto, uint32_t length) noexcept nogil:
    if v6:
        return pseudo_v6(ip + 8, ip + 24, proto, length)
    return pseudo_v4(ip + 12, ip + 16, proto, length)


cdef inline void _ipv4_fix(uint8_t* ip, Py_ssize_t ihl, uint8_t proto, Py_ssize_t total) noexcept nogil:
    # RFC 791 §3.1: protocol, total length, header checksum
    cdef uint16_t c
    ip[9] = proto
    _put16(ip + 2, <uint16_t>total)
    ip[10] = 0
    ip[11] = 0
    c = csum_fold(csum_add(ip, ihl, 0))
    _put16(ip + 10, c)


cdef Py_ssize_t _ip_l4(const uint8_t* ip, Py_ssize_t n, uint8_t proto, Py_ssize_t* total) noexcept nogil:
    """Offset of the upper-layer header of an IPv4 / IPv6 packet whose protocol
    (IPv6: first next header) is `proto`; *total = the IP packet's length.
    HC_NOT_IP_TCP, HC_FRAGMENT, HC_IPV6_EXT or HC_BAD_CHECKSUM otherwise."""
    cdef Py_ssize_t ihl, tot
    if n < 20:
        return HC_NOT_IP_TCP
    if (ip[0] >> 4) == 4:
        ihl = (ip[0] & 15) * 4
        tot = _be16(ip + 2)
        if ihl < 20 or tot < ihl or tot > n:
            return HC_NOT_IP_TCP
        if ip[9] != proto:
            return HC_NOT_IP_TCP
        if _be16(ip + 6) & 0x3fff:              # RFC 791 §3.2: MF or an offset
            return HC_FRAGMENT
        if csum_fold(csum_add(ip, ihl, 0)) != 0:
            return HC_BAD_CHECKSUM
        total[0] = tot
        return ihl
    if (ip[0] >> 4) == 6:
        if n < 40:
            return HC_NOT_IP_TCP
        tot = 40 + <Py_ssize_t>_be16(ip + 4)
        if tot > n:
            return HC_NOT_IP_TCP
        if ip[6] != proto:
            return HC_IPV6_EXT if ip[6] in (0, 43, 44, 51, 60) else HC_NOT_IP_TCP
        total[0] = tot
        return 40
    return HC_NOT_IP_TCP


cdef Py_ssize_t hc_compress(const uint8_t* ip, Py_ssize_t n, uint8_t cid, uint8_t* out,
                            Py_ssize_t cap) noexcept nogil:
    """Compress one IP/TCP packet into out; the compressed packet's length or a
    refusal (< 0: send the segment uncompressed)."""
    cdef Py_ssize_t tot = 0, l4, seglen, doff, dlen, olen, i, s, e, raw_len, chl, w
    cdef const uint8_t* th
    cdef const uint8_t* opt
    cdef uint8_t fl
    cdef bint v6, ts = False, snack = False, rb = False, more
    cdef uint64_t starts = 0, dsum, acc
    cdef uint32_t ctl = 0
    cdef uint8_t* h
    l4 = _ip_l4(ip, n, IPPROTO_TCP, &tot)
    if l4 < 0:
        return l4
    v6 = (ip[0] >> 4) == 6
    seglen = tot - l4
    if seglen < 20:
        return HC_NOT_IP_TCP
    th = ip + l4
    doff = (th[12] >> 4) * 4
    if doff < 20 or doff > seglen:
        return HC_NOT_IP_TCP
    fl = th[13]
    # SYN carries option 20 and is never compressed; CWR/ECE/reserved have no bit
    if (th[12] & 0x0f) or (fl & (F_SYN | F_ECE | F_CWR)):
        return HC_FLAGS
    if not (fl & F_URG) and _be16(th + 18) != 0:
        return HC_FLAGS
    dlen = seglen - doff
    dsum = _sum16(csum_add(th + doff, dlen, 0))
    # the TCP checksum must verify: expansion recomputes it
    if csum_fold(csum_add(th, doff, _pseudo(ip, v6, IPPROTO_TCP, <uint32_t>seglen)) + dsum) != 0:
        return HC_BAD_CHECKSUM

    # Options: walk them (RFC 9293 §3.2) to know where each one starts; a
    # malformed list goes verbatim under OPTS.
    opt = th + 20
    olen = doff - 20
    i = 0
    while i < olen:
        starts |= (<uint64_t>1) << i
        if opt[i] == 0:                           # EOL: the rest is padding
            break
        if opt[i] == 1:
            i += 1
            continue
        if i + 1 >= olen or opt[i + 1] < 2 or i + opt[i + 1] > olen:
            starts = 0
            break
        i += opt[i + 1]
    s = 0
    e = olen
    if starts:
        if (olen >= 12 and opt[0] == 1 and opt[1] == 1 and opt[2] == 8 and opt[3] == 10
                and (starts >> 2) & 1):
            ts = True
            s = 12
        if (e - s >= 4 and opt[e - 4] == 1 and opt[e - 3] == 1 and opt[e - 2] == 22
                and opt[e - 1] == 2 and (starts >> (e - 2)) & 1):
            rb = True
            e -= 4
        if (e - s >= 8 and opt[e - 8] == 1 and opt[e - 7] == 1 and opt[e - 6] == 21
                and opt[e - 5] == 6 and (starts >> (e - 6)) & 1):
            snack = True
            e -= 8
    raw_len = e - s

    ctl = C_S | C_A
    chl = 2 + 6 + 4 + 2                          # cid, ctl 1, A, S, checksum
    if fl & F_URG:
        ctl |= C_URG
        chl += 2
    if ts:
        ctl |= C_TS1 | C_TS2
        chl += 8
    if snack:
        ctl |= C_SNACK
        chl += 4
    if rb:
        ctl |= C_RB
    if raw_len:
        ctl |= C_OPTS
        chl += 1 + raw_len
    if fl & F_PSH:
        ctl |= C_PUSH
    if not (fl & F_ACK):
        ctl |= C_ACKR
    if fl & F_RST:
        ctl |= C_RST
    if fl & F_FIN:
        ctl |= C_FIN
    more = (ctl & 0xff) != 0
    if more:
        chl += 1
    if chl & 1:                                  # even length: data at an even offset
        if more:
            ctl |= C_PAD
        else:
            more = True
        chl += 1
    if more:
        ctl |= C_MORE
    if l4 + chl + dlen > cap:
        return HC_NO_ROOM

    memcpy(out, ip, l4)
    h = out + l4
    h[0] = cid
    h[1] = <uint8_t>(ctl >> 8)
    w = 2
    if more:
        h[2] = <uint8_t>(ctl & 0xff)
        w = 3
    if fl & F_URG:
        memcpy(h + w, th + 18, 2); w += 2
    memcpy(h + w, th + 14, 2)                    # window
    memcpy(h + w + 2, th + 8, 4)                 # acknowledgment number
    w += 6
    memcpy(h + w, th + 4, 4); w += 4             # sequence number
    if ts:
        memcpy(h + w, opt + 4, 8); w += 8        # TSval, TSecr
    if snack:
        memcpy(h + w, opt + e + 4, 4); w += 4    # hole offset, hole size
    if raw_len:
        h[w] = <uint8_t>raw_len
        memcpy(h + w + 1, opt + s, raw_len)
        w += 1 + raw_len
    if ctl & C_PAD:
        h[w] = 0; w += 1
    h[w] = 0
    h[w + 1] = 0
    memcpy(h + chl, th + doff, dlen)
    acc = _pseudo(out, v6, PROTO_HC, <uint32_t>(chl + dlen))
    _put16(h + w, csum_fold(csum_add(h, chl, acc) + dsum))
    if v6:
        out[6] = PROTO_HC
        _put16(out + 4, <uint16_t>(chl + dlen))
    else:
        _ipv4_fix(out, l4, PROTO_HC, l4 + chl + dlen)
    return l4 + chl + dlen


cdef inline uint32_t _hash(uint8_t v6, const uint8_t* src, const uint8_t* dst, uint8_t cid) noexcept nogil:
    # FNV-1a over the addresses and the connection id
    cdef uint32_t hv = 2166136261u
    cdef int i, alen = 16 if v6 else 4
    for i in range(alen):
        hv = (hv ^ src[i]) * 16777619u
    for i in range(alen):
        hv = (hv ^ dst[i]) * 16777619u
    hv = (hv ^ cid) * 16777619u
    return (hv ^ v6) * 16777619u


cdef class HcTable:
    """The receive contexts of header compression, one per (source address,
    destination address, connection id) of the packets that arrive compressed:
    what the compressed header leaves out (the ports) and the last values of the
    fields a reference peer may omit.  expand() needs no Python per packet.

    Counters: hc_expanded, hc_drop_no_context (no context for the packet, or it
    relies on a field the context has not learnt), hc_drop_checksum,
    hc_drop_malformed."""

    def __cinit__(self, Py_ssize_t capacity=256):
        self.nslots = 16
        while self.nslots < 2 * capacity:
            self.nslots *= 2
        self.slots = <hc_ctx_t*>PyMem_Calloc(self.nslots, sizeof(hc_ctx_t))
        if self.slots == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.slots)

    def __len__(self):
        return self.used

    cdef hc_ctx_t* _find(self, uint8_t v6, const uint8_t* src, const uint8_t* dst, uint8_t cid) noexcept nogil:
        cdef Py_ssize_t mask = self.nslots - 1, i = _hash(v6, src, dst, cid) & mask, k
        cdef int alen = 16 if v6 else 4
        cdef hc_ctx_t* c
        for k in range(self.nslots):
            c = &self.slots[i]
            if c.state == 0:
                return NULL
            if (c.state == 1 and c.cid == cid and c.v6 == v6 and memcmp(c.src, src, alen) == 0
                    and memcmp(c.dst, dst, alen) == 0):
                return c
            i = (i + 1) & mask
        return NULL

    cdef _grow(self):
        cdef hc_ctx_t* old = self.slots
        cdef Py_ssize_t n = self.nslots, i, j, mask
        cdef Py_ssize_t size = n * 2 if self.used * 2 >= n else n
        self.slots = <hc_ctx_t*>PyMem_Calloc(size, sizeof(hc_ctx_t))
        if self.slots == NULL:
            self.slots = old
            raise MemoryError()
        self.nslots = size
        self.deleted = 0
        mask = size - 1
        for i in range(n):
            if old[i].state == 1:
                j = _hash(old[i].v6, old[i].src, old[i].dst, old[i].cid) & mask
                while self.slots[j].state:
                    j = (j + 1) & mask
                self.slots[j] = old[i]
        PyMem_Free(old)

    def add(self, bytes src not None, bytes dst not None, int sport, int dport, int conn_id):
        """Make (or reset) the context for packets from src to dst with this
        connection id: TCP ports sport -> dport.  src/dst: 4- or 16-byte addresses."""
        cdef uint8_t v6
        cdef hc_ctx_t* c
        cdef Py_ssize_t mask, i
        v6 = _addr_pair(src, dst)
        if not 0 <= conn_id <= 255 or not 0 <= sport <= 65535 or not 0 <= dport <= 65535:
            raise ValueError("conn_id 0..255, ports 0..65535")
        c = self._find(v6, <const uint8_t*>PyBytes_AS_STRING(src), <const uint8_t*>PyBytes_AS_STRING(dst),
                       <uint8_t>conn_id)
        if c == NULL:
            if (self.used + self.deleted + 1) * 2 > self.nslots:
                self._grow()
            mask = self.nslots - 1
            i = _hash(v6, <const uint8_t*>PyBytes_AS_STRING(src), <const uint8_t*>PyBytes_AS_STRING(dst),
                      <uint8_t>conn_id) & mask
            while self.slots[i].state == 1:
                i = (i + 1) & mask
            if self.slots[i].state == 2:
                self.deleted -= 1
            c = &self.slots[i]
            self.used += 1
        memset(c, 0, sizeof(hc_ctx_t))
        c.state = 1
        c.v6 = v6
        c.cid = <uint8_t>conn_id
        memcpy(c.src, PyBytes_AS_STRING(src), len(src))
        memcpy(c.dst, PyBytes_AS_STRING(dst), len(dst))
        c.sport = <uint16_t>sport
        c.dport = <uint16_t>dport

    def remove(self, bytes src not None, bytes dst not None, int conn_id):
        """Forget a context; returns whether there was one."""
        cdef uint8_t v6 = _addr_pair(src, dst)
        cdef hc_ctx_t* c
        if not 0 <= conn_id <= 255:
            return False
        c = self._find(v6, <const uint8_t*>PyBytes_AS_STRING(src), <const uint8_t*>PyBytes_AS_STRING(dst),
                       <uint8_t>conn_id)
        if c == NULL:
            return False
        c.state = 2
        self.used -= 1
        self.deleted += 1
        return True

    cdef Py_ssize_t expand_into(self, const uint8_t* ip, Py_ssize_t n, uint8_t* out,
                                Py_ssize_t cap) noexcept nogil:
        cdef Py_ssize_t r = _expand(self, ip, n, out, cap)
        if r >= 0:
            self.expanded += 1
        elif r == HC_DROP_CHECKSUM:
            self.drop_checksum += 1
        elif r == HC_DROP_NO_CONTEXT:
            self.drop_no_context += 1
        elif r == HC_DROP_MALFORMED:
            self.drop_malformed += 1
        return r

    def expand(self, bytes packet not None):
        """The IP/TCP packet a compressed IP packet (protocol 105) stands for, or
        None (dropped and counted)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet), r
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n + GROWTH)
        r = self.expand_into(<const uint8_t*>PyBytes_AS_STRING(packet), n,
                             <uint8_t*>PyBytes_AS_STRING(out), n + GROWTH)
        if r < 0:
            return None
        return out[:r]

    def statistics(self):
        """Counters as a snapshot (dict)."""
        return {"hc_expanded": self.expanded, "hc_drop_no_context": self.drop_no_context,
                "hc_drop_checksum": self.drop_checksum, "hc_drop_malformed": self.drop_malformed,
                "hc_contexts": self.used}


cdef uint8_t _addr_pair(bytes src, bytes dst) except 255:
    if len(src) == 4 and len(dst) == 4:
        return 0
    if len(src) == 16 and len(dst) == 16:
        return 1
    raise ValueError("addresses must both be 4 (IPv4) or 16 (IPv6) bytes")


cdef Py_ssize_t _expand(HcTable table, const uint8_t* ip, Py_ssize_t n, uint8_t* out,
                        Py_ssize_t cap) noexcept nogil:
    cdef Py_ssize_t tot = 0, l4, seglen, p, rl = 0, chl, optlen, optpad, dlen, hl, w
    cdef const uint8_t* seg
    cdef const uint8_t* raw = NULL
    cdef const uint8_t* snack = NULL
    cdef bint v6
    cdef uint32_t ctl
    cdef uint64_t segsum, hsum, dsum
    cdef uint16_t urg = 0, win = 0
    cdef uint32_t ack = 0, seq = 0, tsval = 0, tsecr = 0
    cdef hc_ctx_t* c
    cdef uint8_t* th
    cdef uint8_t fl
    l4 = _ip_l4(ip, n, PROTO_HC, &tot)
    if l4 < 0:
        return HC_DROP_MALFORMED
    v6 = (ip[0] >> 4) == 6
    seg = ip + l4
    seglen = tot - l4
    if seglen < 4:
        return HC_DROP_MALFORMED
    # integrity first: the checksum covers the pseudo-header, header and data
    segsum = csum_add(seg, seglen, 0)
    if csum_fold(segsum + _pseudo(ip, v6, PROTO_HC, <uint32_t>seglen)) != 0:
        return HC_DROP_CHECKSUM
    ctl = <uint32_t>seg[1] << 8
    p = 2
    if ctl & C_MORE:
        ctl |= seg[2]
        p = 3
    # every field must end before the two checksum bytes
    if ctl & C_URG:
        if p + 2 + 2 > seglen:
            return HC_DROP_MALFORMED
        urg = _be16(seg + p); p += 2
    if ctl & C_A:
        if p + 6 + 2 > seglen:
            return HC_DROP_MALFORMED
        win = _be16(seg + p); ack = _be32(seg + p + 2); p += 6
    if ctl & C_S:
        if p + 4 + 2 > seglen:
            return HC_DROP_MALFORMED
        seq = _be32(seg + p); p += 4
    if ctl & C_TS1:
        if p + 4 + 2 > seglen:
            return HC_DROP_MALFORMED
        tsval = _be32(seg + p); p += 4
    if ctl & C_TS2:
        if p + 4 + 2 > seglen:
            return HC_DROP_MALFORMED
        tsecr = _be32(seg + p); p += 4
    if ctl & C_SNACK:
        if p + 4 + 2 > seglen:
            return HC_DROP_MALFORMED
        snack = seg + p; p += 4
    if ctl & C_OPTS:
        if p + 1 + 2 > seglen:
            return HC_DROP_MALFORMED
        rl = seg[p]
        raw = seg + p + 1
        p += 1 + rl
    if ctl & C_PAD:
        p += 1
    chl = p + 2
    if chl > seglen or chl & 1:
        return HC_DROP_MALFORMED
    optlen = rl + (12 if ctl & (C_TS1 | C_TS2) else 0) + (8 if snack != NULL else 0) + (4 if ctl & C_RB else 0)
    optpad = (optlen + 3) & ~3
    if optpad > 40:                              # RFC 9293 §3.1: at most 40 bytes of options
        return HC_DROP_MALFORMED
    c = table._find(v6, ip + (8 if v6 else 12), ip + (24 if v6 else 16), seg[0])
    if c == NULL:
        return HC_DROP_NO_CONTEXT
    # fields left out come from the context (a reference peer omits unchanged ones)
    if not (ctl & C_S):
        if not (c.have & HAVE_SEQ):
            return HC_DROP_NO_CONTEXT
        seq = c.seq
    if not (ctl & C_A):
        if not (c.have & HAVE_ACK):
            return HC_DROP_NO_CONTEXT
        win = c.win
        ack = c.ack
    if (ctl & C_TS2) and not (ctl & C_TS1):
        if not (c.have & HAVE_TSVAL):
            return HC_DROP_NO_CONTEXT
        tsval = c.tsval
    if (ctl & C_TS1) and not (ctl & C_TS2):
        if not (c.have & HAVE_TSECR):
            return HC_DROP_NO_CONTEXT
        tsecr = c.tsecr
    dlen = seglen - chl
    hl = 20 + optpad
    if l4 + hl + dlen > cap:
        return HC_DROP_NO_ROOM

    memcpy(out, ip, l4)
    th = out + l4
    _put16(th, c.sport)
    _put16(th + 2, c.dport)
    _put32(th + 4, seq)
    _put32(th + 8, ack)
    th[12] = <uint8_t>((hl // 4) << 4)
    fl = 0 if ctl & C_ACKR else F_ACK
    if ctl & C_PUSH:
        fl |= F_PSH
    if ctl & C_RST:
        fl |= F_RST
    if ctl & C_FIN:
        fl |= F_FIN
    if ctl & C_URG:
        fl |= F_URG
    th[13] = fl
    _put16(th + 14, win)
    th[16] = 0
    th[17] = 0
    _put16(th + 18, urg)
    w = 20
    if ctl & (C_TS1 | C_TS2):
        th[w] = 1; th[w + 1] = 1; th[w + 2] = 8; th[w + 3] = 10
        _put32(th + w + 4, tsval)
        _put32(th + w + 8, tsecr)
        w += 12
    if rl:
        memcpy(th + w, raw, rl)
        w += rl
    if snack != NULL:
        th[w] = 1; th[w + 1] = 1; th[w + 2] = 21; th[w + 3] = 6
        memcpy(th + w + 4, snack, 4)
        w += 8
    if ctl & C_RB:
        th[w] = 1; th[w + 1] = 1; th[w + 2] = 22; th[w + 3] = 2
        w += 4
    while w < hl:
        th[w] = 1                                # NOP padding to 32 bits
        w += 1
    memcpy(th + hl, seg + chl, dlen)
    # data sum = segment sum - header sum (ones' complement, RFC 1624): one pass
    hsum = _sum16(csum_add(seg, chl, 0))
    dsum = segsum + (~hsum & 0xffff)
    _put16(th + 16, csum_fold(csum_add(th, hl, _pseudo(out, v6, IPPROTO_TCP, <uint32_t>(hl + dlen))) + dsum))
    if v6:
        out[6] = IPPROTO_TCP
        _put16(out + 4, <uint16_t>(hl + dlen))
    else:
        _ipv4_fix(out, l4, IPPROTO_TCP, l4 + hl + dlen)
    c.seq = seq
    c.ack = ack
    c.win = win
    c.have |= HAVE_SEQ | HAVE_ACK
    if ctl & (C_TS1 | C_TS2):
        c.tsval = tsval
        c.tsecr = tsecr
        c.have |= HAVE_TSVAL | HAVE_TSECR
    return l4 + hl + dlen


def compress(bytes packet not None, int conn_id):
    """The compressed form (IP protocol 105) of an IPv4/IPv6 TCP packet under
    this connection id, or None when the segment cannot be compressed (send it
    as it is; why_not_compressed() says why)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(packet), r
    cdef bytes out
    if not 0 <= conn_id <= 255:
        raise ValueError("conn_id 0..255")
    out = PyBytes_FromStringAndSize(NULL, n)
    r = hc_compress(<const uint8_t*>PyBytes_AS_STRING(packet), n, <uint8_t>conn_id,
                    <uint8_t*>PyBytes_AS_STRING(out), n)
    if r < 0:
        return None
    return out[:r]


def why_not_compressed(bytes packet not None):
    """None if compress() takes the packet, else the reason's name (not_ip_tcp,
    fragment, ipv6_ext_header, flags, bad_checksum)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(packet), r
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    r = hc_compress(<const uint8_t*>PyBytes_AS_STRING(packet), n, 0, <uint8_t*>PyBytes_AS_STRING(out), n)
    return None if r >= 0 else _REFUSALS.get(r, "unknown")


cdef class HeaderCompressor:
    """Header compression for one connection whose ends both offered bit 0x10
    (CCSDS 714.0-B-2 option 20): compress() the segments this end sends (they
    carry our connection id), expand() those that arrive compressed (the peer's
    connection id; the context lives in `table`, which a capture ring may share).

    src, dst, sport, dport: the addresses and ports of the packets this end
    sends; the receive context is the reverse direction.
    """
    cdef readonly HcTable table
    cdef readonly bytes src, dst
    cdef readonly int sport, dport, local_conn_id, peer_conn_id
    cdef uint8_t v6
    cdef public uint64_t compressed, uncompressed, bytes_saved
    cdef bint closed

    def __init__(self, bytes src not None, bytes dst not None, int sport, int dport,
                 int local_conn_id, int peer_conn_id, HcTable table=None):
        if not 0 <= local_conn_id <= 255 or not 0 <= peer_conn_id <= 255:
            raise ValueError("connection ids are 0..255")
        self.v6 = _addr_pair(src, dst)
        self.table = table if table is not None else HcTable(4)
        self.src, self.dst, self.sport, self.dport = src, dst, sport, dport
        self.local_conn_id, self.peer_conn_id = local_conn_id, peer_conn_id
        self.table.add(dst, src, dport, sport, peer_conn_id)

    def compress(self, bytes packet not None):
        """The compressed form of a segment of this connection, or None (send
        it uncompressed; counted as `uncompressed`)."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(packet), r
        cdef const uint8_t* ip = <const uint8_t*>PyBytes_AS_STRING(packet)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
        r = hc_compress(ip, n, <uint8_t>self.local_conn_id, <uint8_t*>PyBytes_AS_STRING(out), n)
        if r < 0:
            self.uncompressed += 1
            return None
        if not self._ours(ip):
            raise ValueError("the packet is not of this connection (addresses or ports)")
        self.compressed += 1
        self.bytes_saved += n - r
        return out[:r]

    cdef bint _ours(self, const uint8_t* ip):
        cdef int alen = 16 if self.v6 else 4
        cdef const uint8_t* th = ip + (40 if self.v6 else (ip[0] & 15) * 4)
        if ((ip[0] >> 4) == 6) != self.v6:
            return False
        if memcmp(ip + (8 if self.v6 else 12), PyBytes_AS_STRING(self.src), alen) != 0:
            return False
        if memcmp(ip + (24 if self.v6 else 16), PyBytes_AS_STRING(self.dst), alen) != 0:
            return False
        return _be16(th) == self.sport and _be16(th + 2) == self.dport

    def expand(self, bytes packet not None):
        """The TCP packet a compressed one stands for (via `table`), or None (counted there)."""
        return self.table.expand(packet)

    def close(self):
        """Forget the receive context (the connection is gone)."""
        if not self.closed:
            self.closed = True
            self.table.remove(self.dst, self.src, self.peer_conn_id)

    def statistics(self):
        return {"hc_compressed": self.compressed, "hc_uncompressed": self.uncompressed,
                "hc_bytes_saved": self.bytes_saved}
