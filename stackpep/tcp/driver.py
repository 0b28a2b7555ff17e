"""The one loop that drives a sans-IO ``TcpConnection``: due timer, events,
packets out.

Every adapter -- the Trio stream (``stackpep.tcp.stream.EngineDriver``), the
TUN endpoint (``stackpep.tcp.tun.TunTcpEndpoint``) and each leg of a split
connection (``stackpep.pep.splitter.Leg``) -- owns one ``ConnectionDriver``
and calls it with its own clock; the driver holds no clock, socket or task
(aioquic's ``handle_timer`` / ``next_event`` / ``datagrams_to_send`` contract).

    driver = ConnectionDriver(conn, on_event, transmit)
    driver.fire_timer(now)     # handle_timer() if get_timer() is due
    driver.drain_events()      # next_event() into on_event until empty (or it says stop)
    driver.flush(now)          # packets_to_send() into transmit
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from stackpep.tcp.events import TcpEvent

__all__ = ["ConnectionDriver", "TIMER_SLACK_US"]

#: A deadline this close (µs) counts as due: a float-seconds clock converted to
#: int µs may land one tick below the deadline it was woken for.  The engine is
#: then called with the deadline itself, so it never sees a time before it.
TIMER_SLACK_US = 1


def _ignore(ev: TcpEvent) -> bool:
    return False


def _discard(pkts: List[bytes]) -> None:
    pass


class ConnectionDriver:
    """Timer, events and output of one engine connection.

    ``on_event(ev)`` gets every event in order; a true return stops the drain
    (the rest stay queued for the next one).  ``transmit(packets)`` gets each
    non-empty batch ``packets_to_send`` returns.
    """

    __slots__ = ("conn", "on_event", "transmit")

    def __init__(self, conn: Any, on_event: Optional[Callable[[TcpEvent], Any]] = None,
                 transmit: Optional[Callable[[List[bytes]], None]] = None) -> None:
        self.conn = conn
        self.on_event = on_event if on_event is not None else _ignore
        self.transmit = transmit if transmit is not None else _discard

    def deadline(self) -> Optional[int]:
        """The engine's next deadline (µs) or None."""
        return self.conn.get_timer()

    def fire_timer(self, now: int) -> bool:
        """Run the engine's timers if due at ``now`` (within TIMER_SLACK_US)."""
        conn = self.conn
        t = conn.get_timer()
        if t is not None and t <= now + TIMER_SLACK_US:
            conn.handle_timer(now if now > t else t)
            return True
        return False

    def drain_events(self) -> bool:
        """Hand every queued event to on_event; True if it asked to stop early."""
        conn = self.conn
        on_event = self.on_event
        while True:
            ev = conn.next_event()
            if ev is None:
                return False
            if on_event(ev):
                return True

    def flush(self, now: int) -> int:
        """Hand what the engine wants to send now to transmit; returns how many packets."""
        pkts = self.conn.packets_to_send(now)
        if pkts:
            self.transmit(pkts)
        return len(pkts)

    def service(self, now: int) -> None:
        """One full turn: due timer, output, events."""
        self.fire_timer(now)
        self.flush(now)
        self.drain_events()
