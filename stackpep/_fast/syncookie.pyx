# cython: language_level=3
"""SYN cookies (RFC 4987 §3.6): the client leg answers a SYN with a SYN-ACK whose
ISN carries, authenticated, what the box must remember of the SYN, and keeps no
state until the client's ACK brings the cookie back (ACK - 1).

Sans-IO: the per-box secret (16 bytes, the dispatcher's os.urandom) and `now`
(int µs) come in; nothing here reads a clock or a random source.

Layout of the 32-bit cookie (after Linux's net/ipv4/syncookies.c, which adds a
keyed hash to a counter and the data the same way):

     31      27 26                                           0
    +---------+----------------------------------------------+
    |  t mod  |  (MAC(t) + data) mod 2^27                    |
    |   32    |                                              |
    +---------+----------------------------------------------+

  t     = now // COOKIE_PERIOD_US (64 s): a cookie is accepted while its t is the
          current one or MAX_AGE periods older (RFC 4987 §3.6: "t ... increments
          slowly"), so at most 64..192 s after it was sent.
  MAC(t)= SipHash-2-4 (Aumasson & Bernstein, the keyed PRF Linux also uses) of
          client address, server address, client port, server port, client ISN
          and t, keyed by the secret; its low 27 bits.
  data  = 9 bits: MSS index (3) | window-scale shift (4, 15 = none, RFC 7323 §2.2)
          | SACK-permitted (1, RFC 2018) | timestamps (1, RFC 7323 §3.2).
A forged ACK passes only if its data lands below 2^9 after the subtraction:
2^-18 per guess and per live t.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

#: The MSS values a cookie can carry (index = 3 bits); a SYN's MSS option is
#: rounded down to one of these (the smallest if it is smaller still).
MSS_TABLE = (536, 1220, 1280, 1360, 1400, 1440, 1460, 8960)
cdef int[8] _MSS = [536, 1220, 1280, 1360, 1400, 1440, 1460, 8960]

COOKIE_PERIOD_US = 64_000_000
MAX_AGE = 2  # periods
cdef uint32_t MAC_MASK = (1 << 27) - 1
cdef uint32_t DATA_LIMIT = 1 << 9
cdef int NO_WSCALE = 15


include "siphash.pxi"


def siphash(bytes key, bytes msg):
    """SipHash-2-4 of msg under a 16-byte key (the reference vectors test this)."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    return siphash24(_le64(<const uint8_t*>key), _le64(<const uint8_t*>key + 8), <const uint8_t*>msg, len(msg))


cdef int mss_index(int mss):
    cdef int i = 7
    while i > 0 and _MSS[i] > mss:
        i -= 1
    return i


cdef class SynCookies:
    """Cookie generation and check for one box (one secret)."""

    cdef uint8_t key[16]

    def __init__(self, bytes secret):
        if len(secret) != 16:
            raise ValueError("the SYN-cookie secret must be 16 bytes")
        memcpy(self.key, <const uint8_t*>secret, 16)

    cdef uint32_t _mac(self, bytes caddr, bytes saddr, int cport, int sport, uint32_t cisn, uint32_t t):
        cdef uint8_t msg[48]
        cdef Py_ssize_t n = 0, la = len(caddr)
        if la != len(saddr) or (la != 4 and la != 16):
            raise ValueError("addresses must both be 4 or 16 bytes")
        memcpy(msg, <const uint8_t*>caddr, la)
        n += la
        memcpy(msg + n, <const uint8_t*>saddr, la)
        n += la
        msg[n] = cport >> 8; msg[n + 1] = cport & 0xff
        msg[n + 2] = sport >> 8; msg[n + 3] = sport & 0xff
        msg[n + 4] = cisn >> 24; msg[n + 5] = (cisn >> 16) & 0xff
        msg[n + 6] = (cisn >> 8) & 0xff; msg[n + 7] = cisn & 0xff
        msg[n + 8] = t & 0xff
        n += 9
        return <uint32_t>(siphash24(_le64(self.key), _le64(self.key + 8), msg, n) & MAC_MASK)

    def make(self, bytes caddr, bytes saddr, int cport, int sport, uint32_t client_isn, int mss,
             wscale, bint sack_perm, bint timestamps, long long now):
        """The cookie (our ISN) answering a SYN with these options, at `now` (µs)."""
        cdef uint32_t t = <uint32_t>((now // COOKIE_PERIOD_US) & 31)
        cdef int ws = NO_WSCALE if wscale is None else min(<int>wscale, 14)
        cdef uint32_t data = (<uint32_t>mss_index(mss) << 6) | (<uint32_t>ws << 2) | (sack_perm << 1) | timestamps
        return (t << 27) | ((self._mac(caddr, saddr, cport, sport, client_isn, t) + data) & MAC_MASK)

    def check(self, bytes caddr, bytes saddr, int cport, int sport, uint32_t client_isn, uint32_t cookie,
              long long now):
        """(mss, wscale or None, sack_perm, timestamps) if `cookie` is one this box
        made for this flow and client ISN within MAX_AGE periods of `now`; else
        "expired" or "invalid" (the reason, for the counters)."""
        cdef uint32_t t_now = <uint32_t>((now // COOKIE_PERIOD_US) & 31)
        cdef uint32_t t = cookie >> 27
        if ((t_now - t) & 31) > MAX_AGE:
            return "expired"
        cdef uint32_t data = ((cookie & MAC_MASK) - self._mac(caddr, saddr, cport, sport, client_isn, t)) & MAC_MASK
        if data >= DATA_LIMIT:
            return "invalid"
        cdef int ws = (data >> 2) & 15
        return (_MSS[data >> 6], None if ws == NO_WSCALE else ws, bool(data & 2), bool(data & 1))
