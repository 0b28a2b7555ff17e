"""The splitter's view of the TCP engine (stackpep._fast.tcp.TcpConnection):
construction from per-leg settings and the four kinds of event it acts on.

Kept in one place so the split-connection logic reads in the field's words
(connected, EOF, reset, closed) whatever the engine's event classes are called.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10

EV_OTHER, EV_CONNECTED, EV_EOF, EV_RESET, EV_CLOSED = range(5)

_KINDS = {
    "Connected": EV_CONNECTED,
    "ConnectionEstablished": EV_CONNECTED,
    "EofReceived": EV_EOF,
    "ConnectionReset": EV_RESET,
    "ConnectionClosed": EV_CLOSED,
}


def classify(ev: Any) -> int:
    return _KINDS.get(type(ev).__name__, EV_OTHER)


def close_reason(ev: Any) -> str:
    """ConnectionClosed.reason as a lower-case string ('normal', 'reset', 'refused',
    'aborted', 'timeout', 'keepalive')."""
    r = getattr(ev, "reason", "normal")
    return str(getattr(r, "value", r)).lower()


def tcp_config(settings: Dict[str, Any], shared_rates: Optional[Dict[Any, Any]] = None):
    """A TcpConfig from a leg's TOML table (already checked by pep.config).  A named
    ``rate_share`` becomes a SharedRate held in ``shared_rates`` (the caller's, by
    (name, rate)), so the box that creates the engines owns the shares."""
    from stackpep.tcp.config import TcpConfig

    name = settings.get("rate_share")
    if isinstance(name, str) and name and settings.get("rate_bps"):
        from stackpep._fast.tcp import SharedRate

        key = (name, settings["rate_bps"])
        rates = shared_rates if shared_rates is not None else {}
        if key not in rates:
            rates[key] = SharedRate(settings["rate_bps"])
        settings = dict(settings, rate_share=rates[key])
    return TcpConfig(**settings)


def new_connection(config, local_addr: bytes, local_port: int, remote_addr: bytes, remote_port: int, iss: int):
    from stackpep._fast.tcp import TcpConnection

    return TcpConnection(config, local_addr, local_port, remote_addr, remote_port, iss)


SENDING_STATES = frozenset({"ESTABLISHED", "CLOSE-WAIT", "SYN-SENT", "SYN-RECEIVED"})


def can_send(conn) -> bool:
    """May data be queued on conn (it is sent once the connection is open)?"""
    return conn.state in SENDING_STATES
