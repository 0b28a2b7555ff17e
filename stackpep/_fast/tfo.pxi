# TCP Fast Open cookies (RFC 7413 §4.1.2) that two boxes derive from a shared key, so
# the cookie is valid on the very first connection.  Cookie = SipHash-2-4 (Aumasson &
# Bernstein 2012) keyed with TcpConfig.tfo_key over (client address || server address);
# 8 bytes, within RFC 7413 §4.1.1's 4..16.  Deterministic: no randomness, no clock.

cdef enum:
    TFO_COOKIE_LEN = 8

# siphash24(): siphash.pxi (tcp.pyx includes it first)

cdef void tfo_cookie(uint64_t k0, uint64_t k1, const uint8_t* client, const uint8_t* server, int alen,
                     uint8_t* out) noexcept nogil:
    """The cookie of (client, server) addresses of alen (4 / 16) bytes into out[0:8]."""
    cdef uint8_t msg[32]
    cdef uint64_t h
    cdef int i
    memcpy(msg, client, alen)
    memcpy(msg + alen, server, alen)
    h = siphash24(k0, k1, msg, 2 * alen)
    for i in range(8):
        out[i] = <uint8_t>(h >> (8 * i))


def siphash_2_4(bytes key not None, bytes msg not None):
    """SipHash-2-4 of msg under a 16-byte key, as the reference implementation's 8
    output bytes (little-endian).  Exposed for tests and tools."""
    if len(key) != 16:
        raise ValueError("SipHash key is 16 bytes")
    cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(key)
    cdef uint64_t h = siphash24(_le64(k), _le64(k + 8), <const uint8_t*>PyBytes_AS_STRING(msg), len(msg))
    return bytes([(h >> (8 * i)) & 0xFF for i in range(8)])


def fast_open_cookie(bytes key not None, bytes client_addr not None, bytes server_addr not None):
    """The TFO cookie the engine sends (active) and accepts (passive) for these addresses
    (4 or 16 bytes each) under TcpConfig.tfo_key."""
    cdef uint8_t out[8]
    if len(key) != 16:
        raise ValueError("tfo_key is 16 bytes")
    if len(client_addr) not in (4, 16) or len(server_addr) != len(client_addr):
        raise ValueError("addresses must both be 4 or 16 bytes")
    cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(key)
    tfo_cookie(_le64(k), _le64(k + 8), <const uint8_t*>PyBytes_AS_STRING(client_addr),
               <const uint8_t*>PyBytes_AS_STRING(server_addr), len(client_addr), out)
    return PyBytes_FromStringAndSize(<char*>out, 8)
