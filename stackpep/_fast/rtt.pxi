# RTT estimation and the retransmission timeout (RFC 6298), included by tcp.pyx.
# One rtt_t per connection; the engine calls these functions and reads rtt.rto.
# Times are µs; srtt/rttvar/last/min are -1 before the first sample.

cdef inline void rtt_init(rtt_t* e, int64_t init_rto, int64_t min_rto, int64_t max_rto) noexcept nogil:
    e.srtt = -1
    e.rttvar = -1
    e.last = -1
    e.min = -1
    e.init_rto = init_rto
    e.min_rto = min_rto
    e.max_rto = max_rto
    e.rto = init_rto          # RFC 6298 §2.1
    e.timing = 0
    e.timed_off = 0
    e.timed_at = 0
    e.ts_floor = 0
    e.ts_floor_set = 0


cdef inline void rtt_end_backoff(rtt_t* e) noexcept nogil:
    # RFC 6298 §2.3: RTO = SRTT + max(G, K*RTTVAR), G = 1 ms (the TS clock); §2.4/2.5 clamps
    cdef int64_t v = 4 * e.rttvar
    if v < 1000:
        v = 1000
    v += e.srtt
    if v < e.min_rto:
        v = e.min_rto
    if v > e.max_rto:
        v = e.max_rto
    e.rto = v


cdef inline bint rtt_sample(rtt_t* e, int64_t r) noexcept nogil:
    """One measurement r (µs); False when there is none (r < 0)."""
    if r < 0:
        return 0
    e.last = r
    if e.min < 0 or r < e.min:
        e.min = r
    if e.srtt < 0:
        # RFC 6298 §2.2
        e.srtt = r
        e.rttvar = r // 2
    else:
        # RFC 6298 §2.3, alpha = 1/8, beta = 1/4
        e.rttvar = (3 * e.rttvar + (e.srtt - r if e.srtt > r else r - e.srtt)) // 4
        e.srtt = (7 * e.srtt + r) // 8
    rtt_end_backoff(e)
    return 1


cdef inline void rtt_backoff(rtt_t* e) noexcept nogil:
    # RFC 6298 §5.5: double the RTO, at most max_rto (§2.5)
    e.rto = e.rto * 2 if e.rto * 2 < e.max_rto else e.max_rto


cdef inline void rtt_after_syn_loss(rtt_t* e) noexcept nogil:
    # RFC 6298 §5.7: RTO back to 3 s after a retransmitted SYN when no sample came
    if e.srtt < 0:
        e.rto = 3000000 if e.max_rto >= 3000000 else e.max_rto


cdef inline void rtt_time(rtt_t* e, int64_t off, uint64_t now) noexcept nogil:
    # one timed segment per round trip (RFC 6298 §3), ending at send offset `off`
    e.timing = 1
    e.timed_off = off
    e.timed_at = now


cdef inline void rtt_timeout(rtt_t* e, uint32_t ts_now) noexcept nogil:
    # after an RTO: Karn's rule (RFC 6298 §3) for the timed segment, and no RFC 7323
    # §4 sample from an echo older than this (it belongs to an original transmission)
    e.timing = 0
    e.ts_floor = ts_now
    e.ts_floor_set = 1


cdef inline int64_t rtt_persist_interval(const rtt_t* e, int backoff) noexcept nogil:
    # RFC 1122 §4.2.2.17 / RFC 9293 §3.8.6.1: the RTO doubled per probe sent, within
    # [min_rto, max_rto]
    cdef int64_t t = e.rto
    cdef int i
    for i in range(backoff):
        t *= 2
        if t >= e.max_rto:
            t = e.max_rto
            break
    if t < e.min_rto:
        t = e.min_rto
    return t
