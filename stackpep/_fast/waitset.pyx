# cython: language_level=3
"""One fd for the dispatcher's loop to wait on (stackpep.pep.dispatcher._serve):
an epoll set (epoll(7)) holding every capture ring's fd and a timerfd
(timerfd_create(2), CLOCK_MONOTONIC) armed for the loop's next deadline.

trio awaits the epoll fd like any other (`trio.lowlevel.wait_readable`): it
polls readable when a ring has a retired block or the timer expired, and the
loop is rescheduled normally -- a timed wait without a cancel scope, so no
`Cancelled` raised and caught per wake-up (trio's timed sleeps were ~15 % of a
box's busy samples at 50 Mbit/s: docs/BENCHMARKS-cpu.md).  Re-arming the timer
(timerfd_settime) also resets its expiry count, so the timer never needs a
read: the loop arms it for every wait whose deadline differs from the last.

`block()` waits in this thread instead, with the GIL released, on the same
fds *and the event loop's own epoll fd* (`attach_host`): the loop uses it
only when trio has no task to run, for no longer than trio's next deadline,
so it returns whenever trio would have had something to do (an fd of trio's
ready -- I/O, a signal, a thread's result via trio's wake-up socket -- or its
deadline) and the loop then yields to trio.  What it saves is trio's own turn
around every wake-up of the box (its run loop, the epoll registration of the
fd, the task switch): ~20-30 us of CPU per wake-up here, 250 wake-ups a
second at the 4 ms grid (docs/BENCHMARKS-cpu.md, "The wait outside trio").
"""
from libc.errno cimport errno, EINTR
from libc.stdint cimport int64_t, uint32_t

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int CLOCK_MONOTONIC

cdef extern from "<sys/timerfd.h>" nogil:
    struct itimerspec:
        timespec it_interval
        timespec it_value
    int timerfd_create(int clockid, int flags)
    int timerfd_settime(int fd, int flags, const itimerspec* new_value, itimerspec* old_value)
    int TFD_NONBLOCK
    int TFD_CLOEXEC

cdef extern from "<sys/epoll.h>" nogil:
    union epoll_data_t:
        int fd
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN
    int EPOLL_CLOEXEC

cdef enum:
    _OURS = 1
    _HOST = 2
    _EINTR = 4

#: block()'s result bits
BLOCK_OURS = _OURS
BLOCK_HOST = _HOST
BLOCK_EINTR = _EINTR


cdef class WaitSet:
    """Ring fds and one timer behind one epoll fd (`fileno`)."""

    cdef int epfd
    cdef int tfd
    cdef int host_all  # epoll of {epfd, the host loop's fd} (attach_host), else -1
    cdef int host_timer  # epoll of {tfd, the host loop's fd}
    cdef int host_fd
    cdef readonly unsigned long long arms  # timerfd_settime calls (a statistic)
    cdef readonly unsigned long long blocks  # block() calls (a statistic)

    def __cinit__(self):
        self.epfd = -1
        self.tfd = -1
        self.host_all = -1
        self.host_timer = -1
        self.host_fd = -1

    def __init__(self):
        cdef epoll_event ev
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")
        self.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.tfd < 0:
            e = errno
            self.close()
            raise OSError(e, "timerfd_create")
        self.add(self.tfd)

    def add(self, int fd):
        """Wait on fd's readability too (level-triggered: readable until read)."""
        cdef epoll_event ev
        ev.events = EPOLLIN
        ev.data.fd = fd
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            raise OSError(errno, "epoll_ctl")

    def fileno(self):
        return self.epfd

    def attach_host(self, int host_fd):
        """Let `block()` wait on the host event loop's fd `host_fd` (trio's epoll)
        beside ours: two epoll sets, {ours, host} and {timer, host}.  (Nesting:
        the host's epoll may itself hold our fd -- trio's `wait_readable` -- and
        never the other way round, so no loop; epoll(7).)"""
        if self.host_all >= 0:
            raise ValueError("a host fd is attached already")
        self.host_all = self._pair(self.epfd, host_fd)
        try:
            self.host_timer = self._pair(self.tfd, host_fd)
        except OSError:
            close(self.host_all)
            self.host_all = -1
            raise
        self.host_fd = host_fd

    cdef int _pair(self, int ours, int host) except -1:
        cdef epoll_event ev
        cdef int fd, e
        cdef int ep = epoll_create1(EPOLL_CLOEXEC)
        if ep < 0:
            raise OSError(errno, "epoll_create1")
        ev.events = EPOLLIN
        for fd in (ours, host):
            ev.data.fd = fd
            if epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0:
                e = errno
                close(ep)
                raise OSError(e, "epoll_ctl")
        return ep

    def block(self, bint rings, int timeout_ms):
        """Wait in this thread (GIL released) until a ring is readable (only if
        `rings`), the timer expired, the host's fd is readable, or `timeout_ms`
        passed (-1: no limit).  Returns a bit set: BLOCK_OURS (a ring or the
        timer), BLOCK_HOST (the host's fd), BLOCK_EINTR (a signal came; the
        caller lets the host loop run); 0 when the time ran out."""
        cdef epoll_event evs[2]
        cdef int ep = self.host_all if rings else self.host_timer
        cdef int n, i, r = 0
        if ep < 0:
            raise ValueError("no host fd attached (attach_host)")
        self.blocks += 1
        with nogil:
            n = epoll_wait(ep, evs, 2, timeout_ms)
        if n < 0:
            if errno == EINTR:
                return _EINTR
            raise OSError(errno, "epoll_wait")
        for i in range(n):
            r |= _HOST if evs[i].data.fd == self.host_fd else _OURS
        return r

    def timer_fileno(self):
        """The timerfd alone: waited on instead while the rings are held (the grid)."""
        return self.tfd

    def arm(self, int64_t delay_us):
        """The timer expires `delay_us` from now (at once if <= 0)."""
        cdef itimerspec its
        if delay_us <= 0:
            its.it_value.tv_sec = 0
            its.it_value.tv_nsec = 1  # (0 would disarm it)
        else:
            its.it_value.tv_sec = delay_us // 1000000
            its.it_value.tv_nsec = (delay_us % 1000000) * 1000
        its.it_interval.tv_sec = 0
        its.it_interval.tv_nsec = 0
        if timerfd_settime(self.tfd, 0, &its, NULL) < 0:
            raise OSError(errno, "timerfd_settime")
        self.arms += 1

    def disarm(self):
        """No deadline: the timer stays quiet (and no longer polls readable)."""
        cdef itimerspec its
        its.it_value.tv_sec = 0
        its.it_value.tv_nsec = 0
        its.it_interval.tv_sec = 0
        its.it_interval.tv_nsec = 0
        if timerfd_settime(self.tfd, 0, &its, NULL) < 0:
            raise OSError(errno, "timerfd_settime")

    def close(self):
        self._close_fds()

    cdef void _close_fds(self) noexcept:
        # every fd of ours (the host's is not ours), each once
        if self.host_all >= 0:
            close(self.host_all)
            self.host_all = -1
        if self.host_timer >= 0:
            close(self.host_timer)
            self.host_timer = -1
        if self.tfd >= 0:
            close(self.tfd)
            self.tfd = -1
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def __dealloc__(self):
        self._close_fds()
