# cython: language_level=3
"""Internet checksum (RFC 1071), pseudo-headers (RFC 791/9293 §3.1, RFC 8200 §8.1)
and incremental update (RFC 1624 eqn. 3).

The sum is accumulated in 64 bits over 8-byte loads; byte order does not matter for
the ones'-complement sum (RFC 1071 §2(B)) as long as the fold is done in the same
order as the loads, so we sum native words and convert once at the end.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE

cdef extern from *:
    """
    #include <endian.h>
    static inline uint64_t sp_load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline uint32_t sp_load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
    static inline uint16_t sp_load16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
    #if __BYTE_ORDER == __LITTLE_ENDIAN
    #define SP_NATIVE_LE 1
    #else
    #define SP_NATIVE_LE 0
    #endif
    """
    uint64_t sp_load64(const uint8_t* p) nogil
    uint32_t sp_load32(const uint8_t* p) nogil
    uint16_t sp_load16(const uint8_t* p) nogil
    int SP_NATIVE_LE


cdef inline uint64_t _native_sum(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # Returns a 64-bit accumulator of native-order 16-bit words (carries kept in the
    # high bits; folded later).  Four independent accumulators keep the adder busy.
    cdef uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, v
    cdef uint8_t tail[2]
    while n >= 32:
        v = sp_load64(p); a0 += (v & 0xffffffffu) + (v >> 32)
        v = sp_load64(p + 8); a1 += (v & 0xffffffffu) + (v >> 32)
        v = sp_load64(p + 16); a2 += (v & 0xffffffffu) + (v >> 32)
        v = sp_load64(p + 24); a3 += (v & 0xffffffffu) + (v >> 32)
        p += 32
        n -= 32
    while n >= 4:
        a0 += sp_load32(p)
        p += 4
        n -= 4
    if n >= 2:
        a1 += sp_load16(p)
        p += 2
        n -= 2
    if n:
        tail[0] = p[0]
        tail[1] = 0
        a2 += sp_load16(tail)
    return a0 + a1 + a2 + a3


cdef inline uint16_t _fold_native(uint64_t acc) noexcept nogil:
    acc = (acc & 0xffffffffu) + (acc >> 32)
    acc = (acc & 0xffffffffu) + (acc >> 32)
    acc = (acc & 0xffffu) + (acc >> 16)
    acc = (acc & 0xffffu) + (acc >> 16)
    return <uint16_t>acc


cdef inline uint16_t _to_host(uint16_t native) noexcept nogil:
    if SP_NATIVE_LE:
        return <uint16_t>((native >> 8) | (native << 8))
    return native


cdef uint64_t csum_add(const uint8_t* p, Py_ssize_t n, uint64_t acc) noexcept nogil:
    """Add n bytes at p (starting at an even offset of the summed data) to acc.

    acc is a *host-order* running sum: call csum_fold() on the result.
    """
    return acc + _to_host(_fold_native(_native_sum(p, n)))


cdef uint16_t csum_fold(uint64_t acc) noexcept nogil:
    """Fold a host-order accumulator and complement it: the value to store."""
    acc = (acc & 0xffffffffu) + (acc >> 32)
    acc = (acc & 0xffffffffu) + (acc >> 32)
    acc = (acc & 0xffffu) + (acc >> 16)
    acc = (acc & 0xffffu) + (acc >> 16)
    return <uint16_t>(~acc & 0xffff)


cdef uint64_t pseudo_v4(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t length) noexcept nogil:
    # RFC 9293 §3.1: src(4) dst(4) zero(1) proto(1) TCP length(2)
    cdef uint64_t acc = 0
    acc = csum_add(src, 4, acc)
    acc = csum_add(dst, 4, acc)
    return acc + proto + (length & 0xffff)


cdef uint64_t pseudo_v6(const uint8_t* src, const uint8_t* dst, uint8_t proto, uint32_t length) noexcept nogil:
    # RFC 8200 §8.1: src(16) dst(16) upper-layer length(4) zero(3) next header(1)
    cdef uint64_t acc = 0
    acc = csum_add(src, 16, acc)
    acc = csum_add(dst, 16, acc)
    return acc + (length >> 16) + (length & 0xffff) + proto


cdef uint16_t csum_update16(uint16_t old_csum, uint16_t old_val, uint16_t new_val) noexcept nogil:
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
    cdef uint32_t s = (<uint16_t>~old_csum) + (<uint16_t>~old_val) + <uint32_t>new_val
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return <uint16_t>(~s & 0xffff)


cdef uint16_t csum_update32(uint16_t old_csum, uint32_t old_val, uint32_t new_val) noexcept nogil:
    cdef uint16_t c = csum_update16(old_csum, <uint16_t>(old_val >> 16), <uint16_t>(new_val >> 16))
    return csum_update16(c, <uint16_t>(old_val & 0xffff), <uint16_t>(new_val & 0xffff))


# ---- Python API -------------------------------------------------------------

def internet_checksum(object data, unsigned int initial=0):
    """Return the RFC 1071 checksum of data (the value to store in a header).

    data is any bytes-like object; initial is a host-order partial sum to start
    from (e.g. a pseudo-header sum).
    """
    cdef Py_buffer view
    cdef uint64_t acc
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    with nogil:
        acc = csum_add(<const uint8_t*>view.buf, view.len, initial)
    PyBuffer_Release(&view)
    return csum_fold(acc)


def pseudo_header_sum(const uint8_t[::1] src, const uint8_t[::1] dst, int proto, unsigned int length):
    """Host-order partial sum of the IPv4 (4-byte addresses) or IPv6 (16-byte) pseudo-header."""
    if src.shape[0] == 4 and dst.shape[0] == 4:
        return pseudo_v4(&src[0], &dst[0], proto, length)
    if src.shape[0] == 16 and dst.shape[0] == 16:
        return pseudo_v6(&src[0], &dst[0], proto, length)
    raise ValueError("addresses must both be 4 (IPv4) or 16 (IPv6) bytes")


def transport_checksum(const uint8_t[::1] src, const uint8_t[::1] dst, int proto, const uint8_t[::1] segment):
    """Checksum of a TCP/UDP segment (checksum field included as it stands) with its pseudo-header.

    A segment whose stored checksum is right yields 0 here.
    """
    cdef uint64_t acc = pseudo_header_sum(src, dst, proto, segment.shape[0])
    with nogil:
        acc = csum_add(&segment[0] if segment.shape[0] else NULL, segment.shape[0], acc)
    return csum_fold(acc)


def update16(unsigned int old_csum, unsigned int old_val, unsigned int new_val):
    """RFC 1624 incremental update of a checksum when a 16-bit field changes."""
    return csum_update16(old_csum, old_val, new_val)


def update32(unsigned int old_csum, unsigned int old_val, unsigned int new_val):
    """RFC 1624 incremental update of a checksum when a 32-bit field changes."""
    return csum_update32(old_csum, old_val, new_val)


def checksum_many(const uint8_t[::1] data, Py_ssize_t chunk, Py_ssize_t count):
    """Benchmark helper: checksum `count` consecutive chunks inside C; returns the xor of results."""
    cdef Py_ssize_t i
    cdef uint16_t x = 0
    if chunk * count > data.shape[0]:
        raise ValueError("data shorter than chunk*count")
    with nogil:
        for i in range(count):
            x ^= csum_fold(csum_add(&data[i * chunk], chunk, 0))
    return x


cdef void csum_complete_partial(uint8_t* buf, Py_ssize_t n, Py_ssize_t csum_start, Py_ssize_t csum_offset) noexcept nogil:
    # Linux skb_checksum_help(): with CHECKSUM_PARTIAL the kernel left the folded
    # pseudo-header sum (not complemented) in the checksum field; the ones'-complement
    # sum from csum_start to the end, complemented, is the final checksum.
    cdef uint16_t c
    cdef uint8_t* f = buf + csum_start + csum_offset
    c = csum_fold(csum_add(buf + csum_start, n - csum_start, 0))
    if c == 0:
        c = 0xffff if csum_offset == 6 else 0   # UDP (offset 6) sends 0 as all ones (RFC 768)
    f[0] = <uint8_t>(c >> 8)
    f[1] = <uint8_t>c


def complete_partial(buf, Py_ssize_t csum_start, Py_ssize_t csum_offset):
    """Finish the checksum of a checksum-partial frame in place (writable buffer).

    csum_start: offset of the transport header in buf; csum_offset: of the checksum
    field within it (16 for TCP).  AF_PACKET reports both in tpacket's vnet header
    or, for TCP, they follow from the headers.
    """
    cdef uint8_t[::1] b = buf
    if csum_start < 0 or csum_offset < 0 or csum_start + csum_offset + 2 > b.shape[0]:
        raise ValueError("checksum field outside the buffer")
    with nogil:
        csum_complete_partial(&b[0], b.shape[0], csum_start, csum_offset)
