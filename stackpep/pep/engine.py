"""How the proxy makes its engines (stackpep._fast.tcp.TcpConnection): a
TcpConfig from a leg's TOML table, a connection from it, and the TCP flag bits
the dispatcher looks at (RFC 9293 §3.1).

Events are the classes of stackpep.tcp.events and states stackpep.tcp.states.TcpState;
the split connection uses them (and conn.may_send()) directly.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


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
