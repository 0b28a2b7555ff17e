"""A Trio ``HalfCloseableStream`` over the sans-IO TCP engine.

``EngineDriver`` is the Trio-side glue for one ``TcpConnection``: it feeds it
packets and the current time, sends what it emits through a ``transmit``
callable, runs its timer (``run()``, started in a nursery) and wakes the tasks
that wait on it.  ``TcpStream`` is the application face: ``send_all`` /
``receive_some`` / ``send_eof`` (a FIN) / ``aclose``.  ``memory_stream_pair``
joins two engines by an in-memory packet pipe (synchronous delivery, no loss)
for tests.

Closing (``aclose``) follows what a socket ``close()`` does: a FIN after the
queued data, or a RST if received data was never read (RFC 9293 §3.10.4,
RFC 2525 §2.17); data arriving after the close is answered with a RST too,
since nobody can read it any more.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple

import trio

from stackpep.tcp.driver import ConnectionDriver
from stackpep.tcp.events import CloseReason, ConnectionClosed, ConnectionProgress, TcpEvent
from stackpep.tcp.states import TcpState

__all__ = ["EngineDriver", "TcpStream", "MemoryPacketPipe", "memory_stream_pair"]

DEFAULT_RECEIVE_SIZE = 65536


def _now_us() -> int:
    return int(trio.current_time() * 1_000_000)


class EngineDriver(ConnectionProgress):
    """Drives one engine connection from Trio: packets in, packets out, timer
    (the loop itself is stackpep.tcp.driver.ConnectionDriver)."""

    def __init__(self, conn: Any, transmit: Callable[[bytes], None]):
        super().__init__()
        self.conn = conn
        self.transmit = transmit
        self._engine = ConnectionDriver(conn, self._on_event, self._transmit_all)
        self._changed = trio.Event()  # set (and replaced) whenever anything may have changed
        self.app_closed = False  # the application called aclose(): unread data is refused
        self.error: Optional[BaseException] = None
        self.refused_bytes = 0  # data that arrived after aclose() (answered by RST)
        self._in_flush = False
        self.pipe: Optional[MemoryPacketPipe] = None  # set when joined by a MemoryPacketPipe

    # -- inputs -----------------------------------------------------------------
    def deliver(self, packet: bytes) -> None:
        """An inbound IP packet for this connection (called synchronously)."""
        self.conn.receive_packet(packet, _now_us())
        self.flush()

    def connect(self) -> None:
        self.conn.connect(_now_us())
        self.flush()

    def listen(self) -> None:
        self.conn.listen()

    def flush(self) -> None:
        """Emit what the engine wants to send, collect its events, wake waiters."""
        if self._in_flush:  # a synchronous pipe may call back into us
            return
        self._in_flush = True
        try:
            conn = self.conn
            engine = self._engine
            while True:
                sent = engine.flush(_now_us())
                engine.drain_events()
                if self.app_closed and not self.reset and not self.closed:
                    junk = conn.recv(1 << 20)
                    if junk:
                        # Nobody will read it: RFC 9293 §3.10.7.4 lets us reset.
                        self.refused_bytes += len(junk)
                        conn.abort()
                        continue
                if not sent:
                    break
        finally:
            self._in_flush = False
        self.wake()

    def _transmit_all(self, pkts) -> None:
        for pkt in pkts:
            self.transmit(pkt)

    def _on_event(self, ev: TcpEvent) -> bool:
        self.apply_event(ev)
        if isinstance(ev, ConnectionClosed) and ev.reason is not CloseReason.NORMAL:
            # A close that was not the graceful end of both directions.
            if not self.eof_received:
                self.reset = True
        return False

    def wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    # -- the timer task -----------------------------------------------------------
    async def run(self) -> None:
        """Fire the engine's timer at its deadlines; run in a nursery for the
        connection's lifetime (returns once the engine is CLOSED)."""
        conn = self.conn
        while True:
            deadline = conn.get_timer()
            if deadline is None and conn.tcp_state is TcpState.CLOSED:
                return
            event = self._changed
            with trio.move_on_at(math.inf if deadline is None else deadline / 1_000_000):
                await event.wait()
            if self._engine.fire_timer(_now_us()):
                self.flush()


class _Conflict:
    def __init__(self, what: str):
        self.what = what
        self.busy = False

    def __enter__(self) -> None:
        if self.busy:
            raise trio.BusyResourceError(f"another task is already {self.what}")
        self.busy = True

    def __exit__(self, *exc) -> None:
        self.busy = False


class TcpStream(trio.abc.HalfCloseableStream):
    """Trio stream over one engine connection (``send_eof`` sends a FIN)."""

    def __init__(self, driver: EngineDriver, receive_size: int = DEFAULT_RECEIVE_SIZE):
        self.driver = driver
        self.receive_size = receive_size
        self._send_conflict = _Conflict("sending on this stream")
        self._recv_conflict = _Conflict("receiving on this stream")
        self._closed = False
        self._eof_sent = False

    @property
    def conn(self) -> Any:
        return self.driver.conn

    def statistics(self) -> Any:
        return self.conn.statistics()

    async def wait_connected(self) -> None:
        while not self.driver.connected:
            if self.driver.reset or self.driver.closed:
                raise trio.BrokenResourceError(f"connection failed ({self.driver.close_reason})")
            await self.driver.wait_changed()

    # -- sending --------------------------------------------------------------------
    def _check_send(self) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("stream closed for sending")
        if self.driver.reset or self.driver.closed:
            raise trio.BrokenResourceError(f"connection reset ({self.driver.close_reason})")

    async def send_all(self, data) -> None:
        with self._send_conflict:
            await trio.lowlevel.checkpoint()
            self._check_send()
            view = memoryview(data).cast("B")
            off = 0
            while off < len(view):
                n = self.conn.send(view[off:])
                off += n
                if n:
                    self.driver.flush()
                if off < len(view):
                    await self.driver.wait_changed()
                    self._check_send()

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_conflict:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream closed")
                if self.driver.reset or self.driver.closed or self._eof_sent:
                    return
                if self.conn.send_space() > 0:
                    return
                await self.driver.wait_changed()

    async def send_eof(self) -> None:
        with self._send_conflict:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("stream closed")
            if self._eof_sent:
                return
            self._eof_sent = True
            if not (self.driver.reset or self.driver.closed):
                self.conn.send_eof()
                self.driver.flush()

    # -- receiving ------------------------------------------------------------------
    async def receive_some(self, max_bytes: Optional[int] = None) -> bytes:
        if max_bytes is None:
            max_bytes = self.receive_size
        elif not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError("max_bytes must be an integer or None")
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        with self._recv_conflict:
            await trio.lowlevel.checkpoint()
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream closed")
                data = self.conn.recv(max_bytes)
                if data:
                    self.driver.flush()  # the window may have opened: tell the peer
                    return bytes(data)
                if self.conn.at_eof():
                    return b""
                if self.driver.reset or self.driver.closed:
                    raise trio.BrokenResourceError(f"connection reset ({self.driver.close_reason})")
                await self.driver.wait_changed()

    # -- closing --------------------------------------------------------------------
    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            d = self.driver
            d.app_closed = True
            if not (d.reset or d.closed):
                if self.conn.recv(1 << 20):
                    self.conn.abort()  # unread data: RST, as close() does (RFC 2525 §2.17)
                elif not self._eof_sent:
                    self._eof_sent = True
                    self.conn.send_eof()
            d.flush()
            d.wake()
        await trio.lowlevel.checkpoint()


class MemoryPacketPipe:
    """Joins two drivers: each packet one sends is delivered to the other at once.

    Delivery is synchronous but never re-entrant (a queue breaks the recursion
    of A's packet making B send making A send ...).  ``drop`` may be set to a
    predicate ``(direction, packet) -> bool`` to lose packets deliberately.
    """

    def __init__(self) -> None:
        self.ends: list = [None, None]
        self._queue: Deque[Tuple[int, bytes]] = deque()
        self._busy = False
        self.delivered = [0, 0]
        self.drop: Optional[Callable[[int, bytes], bool]] = None

    def transmitter(self, side: int) -> Callable[[bytes], None]:
        def transmit(pkt: bytes) -> None:
            self._queue.append((1 - side, bytes(pkt)))
            self._pump()
        return transmit

    def _pump(self) -> None:
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                to, pkt = self._queue.popleft()
                if self.drop is not None and self.drop(1 - to, pkt):
                    continue
                end = self.ends[to]
                if end is not None:
                    self.delivered[to] += 1
                    end.deliver(pkt)
        finally:
            self._busy = False


A_ADDR4, B_ADDR4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])


async def memory_stream_pair(nursery: trio.Nursery, config_a: Any = None, config_b: Any = None,
                             iss: Tuple[int, int] = (1000, 50000)) -> Tuple[TcpStream, TcpStream]:
    """Two connected streams: A did an active open to B (listening)."""
    from stackpep._fast.tcp import TcpConnection
    from stackpep.tcp.config import TcpConfig

    config_a = config_a if config_a is not None else TcpConfig()
    config_b = config_b if config_b is not None else config_a
    pipe = MemoryPacketPipe()
    ca = TcpConnection(config_a, A_ADDR4, 40000, B_ADDR4, 80, iss[0])
    cb = TcpConnection(config_b, B_ADDR4, 80, A_ADDR4, 40000, iss[1])
    da, db = EngineDriver(ca, pipe.transmitter(0)), EngineDriver(cb, pipe.transmitter(1))
    pipe.ends[:] = [da, db]
    da.pipe = db.pipe = pipe
    db.listen()
    nursery.start_soon(da.run)
    nursery.start_soon(db.run)
    da.connect()
    sa, sb = TcpStream(da), TcpStream(db)
    await sa.wait_connected()
    await sb.wait_connected()
    return sa, sb
