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
    "ScpsNegotiated", "ScpsFallback", "RecordBoundary", "BytesSkipped",
    "OutageEntered", "OutageExited",
    "FastOpenAccepted", "FastOpenResult",
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
class ScpsNegotiated(TcpEvent):
    """The peer's SYN / SYN-ACK carried the SCPS capabilities option (CCSDS 714.0-B-2
    §3.2.3): it is an SCPS-TP peer.  ``features`` = the bits both ends offered (AND),
    ``peer_conn_id`` = the connection id it sent."""
    features: int
    peer_conn_id: int


@dataclass(frozen=True, slots=True)
class ScpsFallback(TcpEvent):
    """Active open: the next SYN goes without option 20.  ``reason`` is "rst" (a RST
    answered the SYN that carried it) or "timeout" (``syn_retries_with_option``
    retransmissions went unanswered).  A caller may remember the destination
    (stackpep.tcp.scps.ScpsRefusals)."""
    reason: str


@dataclass(frozen=True, slots=True)
class RecordBoundary(TcpEvent):
    """A segment from an SCPS peer carried the record-boundary option (kind 22): a record
    ends at receive-stream ``offset`` (bytes from the first data byte)."""
    offset: int


@dataclass(frozen=True, slots=True)
class BytesSkipped(TcpEvent):
    """BETS: ``n`` bytes at receive-stream ``offset`` were never repaired and were
    delivered as zeros (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", best-effort transport service)."""
    n: int
    offset: int


@dataclass(frozen=True, slots=True)
class OutageEntered(TcpEvent):
    """Link outage (CCSDS 714.0-B-2, notes "Loss-type handling"; TcpConfig.outage_rtos): no new data is
    sent, SND.UNA is probed every outage_probe_us until the link answers."""


@dataclass(frozen=True, slots=True)
class OutageExited(TcpEvent):
    """An acceptable ACK ended the outage: sending resumes at the window / rate
    held before it."""


@dataclass(frozen=True, slots=True)
class FastOpenAccepted(TcpEvent):
    """Passive open: the peer's SYN carried ``n`` bytes with a Fast Open cookie that
    verifies (RFC 7413 §4.2.2); they are readable now, before the handshake completes
    (a DataReadable follows), and our SYN-ACK acknowledges them."""
    n: int


@dataclass(frozen=True, slots=True)
class FastOpenResult(TcpEvent):
    """Active open: our SYN carried ``sent`` bytes (RFC 7413 §4.2) and the SYN-ACK
    acknowledged ``acked`` of them; the rest is sent again as ordinary data at once
    (``acked`` 0: the peer is not a Fast Open peer with our key)."""
    sent: int
    acked: int


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
