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
"""
from libc.errno cimport errno
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
    int EPOLL_CTL_ADD
    int EPOLL_CTL_DEL
    int EPOLLIN
    int EPOLL_CLOEXEC


cdef class WaitSet:
    """Ring fds and one timer behind one epoll fd (`fileno`)."""

    cdef int epfd
    cdef int tfd
    cdef readonly unsigned long long arms  # timerfd_settime calls (a statistic)

    def __cinit__(self):
        self.epfd = -1
        self.tfd = -1

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
        if self.tfd >= 0:
            close(self.tfd)
            self.tfd = -1
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def __dealloc__(self):
        if self.tfd >= 0:
            close(self.tfd)
        if self.epfd >= 0:
            close(self.epfd)
