"""Events a ``TcpConnection`` reports through ``next_event()``.

Frozen, slotted, few.  Data events are coalesced: one ``DataReadable`` stands
for "recv() now returns something" until the application reads; one
``SendSpace`` follows a ``send()`` that could not take everything, once at
least half of the send buffer is free again.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "CloseReason", "TcpEvent", "Connected", "DataReadable", "SendSpace",
    "EofReceived", "ConnectionReset", "ConnectionClosed", "ConnectionProgress",
    "OutageEntered", "OutageExited",
]


class CloseReason(str, enum.Enum):
    NORMAL = "normal"        # both FINs exchanged and acknowledged (after TIME-WAIT if we closed first)
    RESET = "reset"          # the peer sent an acceptable RST (RFC 9293 §3.10.7.4)
    REFUSED = "refused"      # RST answered our SYN (RFC 9293 §3.10.7.3)
    ABORTED = "aborted"      # the application called abort(); we sent RST
    TIMEOUT = "timeout"      # retransmissions / user timeout / SYN retries exhausted (RFC 9293 §3.8.3)
    KEEPALIVE = "keepalive"  # keep-alive probes unanswered (RFC 9293 §3.8.4)


class TcpEvent:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Connected(TcpEvent):
    """The three-way handshake completed (ESTABLISHED)."""


@dataclass(frozen=True, slots=True)
class DataReadable(TcpEvent):
    """In-order data is waiting in the receive buffer."""


@dataclass(frozen=True, slots=True)
class SendSpace(TcpEvent):
    """The send buffer has room again after a short send()."""


@dataclass(frozen=True, slots=True)
class EofReceived(TcpEvent):
    """The peer's FIN arrived in order: after the buffered data, recv() returns b''."""


@dataclass(frozen=True, slots=True)
class ConnectionReset(TcpEvent):
    """The peer reset the connection (followed by ConnectionClosed(RESET/REFUSED))."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed(TcpEvent):
    """The connection reached CLOSED; the engine sends nothing more."""
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class OutageEntered(TcpEvent):
    """Link outage (CCSDS 714.0-B-2 §3.2; TcpConfig.outage_rtos): no new data is
    sent, SND.UNA is probed every outage_probe_us until the link answers."""


@dataclass(frozen=True, slots=True)
class OutageExited(TcpEvent):
    """An acceptable ACK ended the outage: sending resumes at the window / rate
    held before it."""


class ConnectionProgress:
    """What the events have said so far, as flags, for adapters that poll them
    (the trio stream's driver, the TUN endpoint)."""

    def __init__(self) -> None:
        self.connected = False
        self.eof_received = False
        self.reset = False
        self.closed = False  # the engine reported the connection closed
        self.close_reason: "CloseReason | None" = None

    def apply_event(self, ev: TcpEvent) -> None:
        if isinstance(ev, Connected):
            self.connected = True
        elif isinstance(ev, EofReceived):
            self.eof_received = True
        elif isinstance(ev, ConnectionReset):
            self.reset = True
        elif isinstance(ev, ConnectionClosed):
            self.closed = True
            self.close_reason = ev.reason
