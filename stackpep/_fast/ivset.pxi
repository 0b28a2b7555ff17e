# Interval sets, included by tcp.pyx: one sorted array of disjoint, non-adjacent
# half-open intervals [l, r) of 64-bit sequence offsets (aioquic's rangeset.py, in C).
# Used for the receiver's out-of-order queue (RFC 9293 §3.10.7.4 seventh check;
# the SACK blocks it reports, RFC 2018 §4, by ``age``) and the sender's SACK
# scoreboard (RFC 6675 §3).  Capacity IVSET_MAX; no allocation, no Python objects.

cdef inline void ivset_clear(ivset_t* s) noexcept nogil:
    s.n = 0


cdef int ivset_add(ivset_t* s, int64_t l, int64_t r) noexcept nogil:
    """Add [l, r), merging every interval it overlaps or touches; the result is
    the most recently changed (``age``).  Returns 0 when a new interval would be
    needed and the set is full (nothing changed), 1 otherwise."""
    cdef int i = 0, j, k
    s.clock += 1
    while i < s.n and s.r[i] < l:
        i += 1
    j = i
    while j < s.n and s.l[j] <= r:
        if s.l[j] < l:
            l = s.l[j]
        if s.r[j] > r:
            r = s.r[j]
        j += 1
    if j == i:
        if s.n >= IVSET_MAX:
            return 0
        for k in range(s.n, i, -1):
            s.l[k] = s.l[k - 1]
            s.r[k] = s.r[k - 1]
            s.age[k] = s.age[k - 1]
        s.n += 1
    elif j > i + 1:
        for k in range(j, s.n):
            s.l[k - (j - i - 1)] = s.l[k]
            s.r[k - (j - i - 1)] = s.r[k]
            s.age[k - (j - i - 1)] = s.age[k]
        s.n -= j - i - 1
    s.l[i] = l
    s.r[i] = r
    s.age[i] = s.clock
    return 1


cdef inline void _ivset_pop_front(ivset_t* s, int k) noexcept nogil:
    cdef int i
    if k <= 0:
        return
    for i in range(k, s.n):
        s.l[i - k] = s.l[i]
        s.r[i - k] = s.r[i]
        s.age[i - k] = s.age[i]
    s.n -= k


cdef bint ivset_merge_front(ivset_t* s, int64_t* edge) noexcept nogil:
    """Remove the intervals starting at or below ``*edge``, moving ``*edge`` to the
    highest end among them (RCV.NXT swallowing queued segments).  True if any."""
    cdef int k = 0
    while k < s.n and s.l[k] <= edge[0]:
        if s.r[k] > edge[0]:
            edge[0] = s.r[k]
        k += 1
    _ivset_pop_front(s, k)
    return k > 0


cdef int64_t ivset_trim_below(ivset_t* s, int64_t edge) noexcept nogil:
    """Forget everything below ``edge`` (SND.UNA passing SACKed data); returns the
    number of offsets removed."""
    cdef int k = 0
    cdef int64_t removed = 0
    while k < s.n and s.r[k] <= edge:
        removed += s.r[k] - s.l[k]
        k += 1
    _ivset_pop_front(s, k)
    if s.n and s.l[0] < edge:
        removed += edge - s.l[0]
        s.l[0] = edge
    return removed


cdef int64_t ivset_total(const ivset_t* s) noexcept nogil:
    cdef int i
    cdef int64_t t = 0
    for i in range(s.n):
        t += s.r[i] - s.l[i]
    return t


cdef int64_t ivset_covered(const ivset_t* s, int64_t a, int64_t b) noexcept nogil:
    """How many offsets of [a, b) the set holds."""
    cdef int i
    cdef int64_t n = 0, l, r
    for i in range(s.n):
        l = s.l[i] if s.l[i] > a else a
        r = s.r[i] if s.r[i] < b else b
        if r > l:
            n += r - l
    return n


cdef int64_t ivset_skip(const ivset_t* s, int64_t off) noexcept nogil:
    """The end of the interval holding ``off``, or ``off`` if none does."""
    cdef int i
    for i in range(s.n):
        if s.l[i] <= off < s.r[i]:
            return s.r[i]
        if s.l[i] > off:
            break
    return off


cdef int64_t ivset_next_start(const ivset_t* s, int64_t off) noexcept nogil:
    """The first interval start above ``off`` (1 << 62 when none)."""
    cdef int i
    for i in range(s.n):
        if s.l[i] > off:
            return s.l[i]
    return 1 << 62


cdef class _IntervalSet:
    """Test-only face of ivset_t (tests/test_tcp_ivset.py): no engine uses it."""
    cdef ivset_t s
    CAPACITY = IVSET_MAX

    def add(self, int64_t l, int64_t r):
        return bool(ivset_add(&self.s, l, r))

    def merge_front(self, int64_t edge):
        cdef bint any_ = ivset_merge_front(&self.s, &edge)
        return any_, edge

    def trim_below(self, int64_t edge):
        return ivset_trim_below(&self.s, edge)

    def total(self):
        return ivset_total(&self.s)

    def covered(self, int64_t a, int64_t b):
        return ivset_covered(&self.s, a, b)

    def skip(self, int64_t off):
        return ivset_skip(&self.s, off)

    def next_start(self, int64_t off):
        return ivset_next_start(&self.s, off)

    def items(self):
        return [(self.s.l[i], self.s.r[i]) for i in range(self.s.n)]

    def ages(self):
        return [self.s.age[i] for i in range(self.s.n)]

    def __len__(self):
        return self.s.n
