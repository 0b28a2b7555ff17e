# SipHash-2-4 (Aumasson & Bernstein 2012, §2): the keyed MAC behind TCP Fast Open
# cookies (tfo.pxi, included by tcp.pyx) and SYN cookies (syncookie.pyx).
# Deterministic and allocation-free; the key is the paper's two little-endian halves.

cdef inline uint64_t _rotl64(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v |= (<uint64_t>p[i]) << (8 * i)
    return v


cdef inline void _sipround(uint64_t* v) noexcept nogil:
    v[0] += v[1]; v[1] = _rotl64(v[1], 13); v[1] ^= v[0]; v[0] = _rotl64(v[0], 32)
    v[2] += v[3]; v[3] = _rotl64(v[3], 16); v[3] ^= v[2]
    v[0] += v[3]; v[3] = _rotl64(v[3], 21); v[3] ^= v[0]
    v[2] += v[1]; v[1] = _rotl64(v[1], 17); v[1] ^= v[2]; v[2] = _rotl64(v[2], 32)


cdef uint64_t siphash24(uint64_t k0, uint64_t k1, const uint8_t* msg, Py_ssize_t n) noexcept nogil:
    """SipHash-2-4 of msg[0:n] under the key (k0, k1)."""
    cdef uint64_t v[4]
    cdef uint64_t m, b = (<uint64_t>n) << 56
    cdef Py_ssize_t off = 0
    cdef int i
    v[0] = k0 ^ 0x736f6d6570736575ULL
    v[1] = k1 ^ 0x646f72616e646f6dULL
    v[2] = k0 ^ 0x6c7967656e657261ULL
    v[3] = k1 ^ 0x7465646279746573ULL
    while off + 8 <= n:
        m = _le64(msg + off)
        v[3] ^= m
        _sipround(v); _sipround(v)
        v[0] ^= m
        off += 8
    for i in range(<int>(n - off)):  # the last bytes, the length in the top byte
        b |= (<uint64_t>msg[off + i]) << (8 * i)
    v[3] ^= b
    _sipround(v); _sipround(v)
    v[0] ^= b
    v[2] ^= 0xff
    _sipround(v); _sipround(v); _sipround(v); _sipround(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]
