# The connection's timers (smoltcp's Timer, one struct), included by tcp.pyx.
# Absolute µs deadlines, 0 = not armed; the keep-alive deadline is derived from
# the idle time instead (TcpConnection._keepalive_deadline).

cdef inline uint64_t u64min_nz(uint64_t a, uint64_t b) noexcept nogil:
    # the earlier of two deadlines, 0 meaning "not armed"
    if a == 0:
        return b
    if b == 0:
        return a
    return a if a < b else b


cdef inline void timers_clear(timers_t* t) noexcept nogil:
    t.rtx = 0
    t.persist = 0
    t.delack = 0
    t.time_wait = 0
    t.fin_wait2 = 0
    t.pace = 0


cdef inline uint64_t timers_next(const timers_t* t) noexcept nogil:
    """The earliest armed deadline (0 = none)."""
    cdef uint64_t n = u64min_nz(t.rtx, t.persist)
    n = u64min_nz(n, t.delack)
    n = u64min_nz(n, t.time_wait)
    n = u64min_nz(n, t.fin_wait2)
    return u64min_nz(n, t.pace)


cdef inline bint timer_due(uint64_t* deadline, uint64_t now) noexcept nogil:
    """True (and disarms it) if the deadline is armed and reached."""
    if deadline[0] and now >= deadline[0]:
        deadline[0] = 0
        return 1
    return 0
