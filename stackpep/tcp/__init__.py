"""The sans-IO TCP engine's Python face.

``TcpConnection`` lives in the compiled module ``stackpep._fast.tcp`` (see
docs/ARCHITECTURE.md for the API); configuration, events and statistics are
plain Python here.
"""
from stackpep.tcp.config import CONGESTION_CONTROLS, LOSS_RESPONSES, ScpsSettings, TcpConfig
from stackpep.tcp.events import (
    CloseReason, Connected, ConnectionClosed, ConnectionReset, DataReadable, EofReceived,
    SendSpace, TcpEvent, ScpsNegotiated, ScpsFallback, RecordBoundary, BytesSkipped,
    OutageEntered, OutageExited,
    FastOpenAccepted, FastOpenResult,
)
from stackpep.tcp.scps import ScpsRefusals
from stackpep.tcp.states import TRANSITIONS, TcpState
from stackpep.tcp.statistics import DROP_REASONS, TcpStatistics

__all__ = [
    "TcpConfig", "ScpsSettings", "ScpsRefusals", "ScpsNegotiated", "ScpsFallback",
    "RecordBoundary", "BytesSkipped", "CONGESTION_CONTROLS", "LOSS_RESPONSES", "TcpEvent", "CloseReason",
    "Connected", "DataReadable", "SendSpace", "EofReceived", "ConnectionReset",
    "ConnectionClosed", "OutageEntered", "OutageExited", "TcpStatistics", "DROP_REASONS", "TcpConnection", "TcpState", "TRANSITIONS",
    "ConnectionClosed", "TcpStatistics", "DROP_REASONS", "TcpConnection", "TcpState", "TRANSITIONS",
    "FastOpenAccepted", "FastOpenResult",
]


def __getattr__(name: str):
    # the compiled engine is imported on first use so that this package (and
    # the script runner) import without a built extension
    if name == "TcpConnection":
        from stackpep._fast.tcp import TcpConnection
        return TcpConnection
    raise AttributeError(name)
