"""One epoll fd over the capture rings and a timerfd (see waitset.pyx)."""

BLOCK_OURS: int
BLOCK_HOST: int
BLOCK_EINTR: int

class WaitSet:
    arms: int
    blocks: int
    def __init__(self) -> None: ...
    def add(self, fd: int) -> None:
        """Wait on fd's readability too (level-triggered)."""
    def fileno(self) -> int:
        """The epoll fd: readable when a ring is or the timer expired."""
    def timer_fileno(self) -> int:
        """The timerfd alone (readable once it expired, until re-armed)."""
    def attach_host(self, host_fd: int) -> None:
        """Let block() wait on the host event loop's fd too."""
    def block(self, rings: bool, timeout_ms: int) -> int:
        """Wait in this thread (GIL released); BLOCK_* bits, 0 on timeout."""
    def arm(self, delay_us: int) -> None:
        """The timer expires delay_us from now (at once if <= 0)."""
    def disarm(self) -> None: ...
    def close(self) -> None: ...
