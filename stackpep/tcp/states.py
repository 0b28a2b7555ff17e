"""The TCP connection states (RFC 9293 §3.3.2) and the one table of legal
transitions between them.

The engine (``stackpep._fast.tcp``) compiles ``TRANSITIONS`` into a bit table at
import and checks every state change against it in ``TcpConnection._set_state``,
the only place the state is written.  An illegal transition is a bug in the
engine: it is refused and counted (``statistics().illegal_transitions``), and
raises when strict checking is on (``stackpep._fast.tcp.set_strict_transitions``,
or ``STACKPEP_TCP_STRICT=1`` in the environment).

The state table in docs/tcp-engine.md is generated from ``TRANSITIONS``
(``python -m stackpep.tcp.states``); tests/test_tcp_states.py checks that it is.
This module imports without the compiled extension.
"""
from __future__ import annotations

import enum
from typing import Dict, FrozenSet, Tuple

__all__ = ["TcpState", "TRANSITIONS", "legal_transitions", "transition_table_markdown"]


class TcpState(enum.IntEnum):
    """RFC 9293 §3.3.2 states; the values are the engine's C codes (tcp.pxd)."""
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10

    @property
    def rfc_name(self) -> str:
        """The state as RFC 9293 spells it (``SYN-RECEIVED``), as ``conn.state`` returns."""
        return self.name.replace("_", "-")

    def __str__(self) -> str:
        return self.rfc_name


S = TcpState

#: Every legal state change: (from, to, what causes it, where the RFC says so).
#: The engine refuses any other.  (Staying in a state is not a transition.)
TRANSITIONS: Tuple[Tuple[TcpState, TcpState, str, str], ...] = (
    (S.CLOSED, S.SYN_SENT, "connect() (SYN)", "RFC 9293 §3.10.1"),
    (S.CLOSED, S.LISTEN, "listen()", "RFC 9293 §3.10.1"),
    (S.LISTEN, S.SYN_RECEIVED, "SYN (SYN-ACK)", "RFC 9293 §3.10.7.2"),
    (S.LISTEN, S.CLOSED, "send_eof() / abort()", "RFC 9293 §3.10.4, §3.10.5"),
    (S.SYN_SENT, S.ESTABLISHED, "SYN-ACK (ACK)", "RFC 9293 §3.10.7.3"),
    (S.SYN_SENT, S.SYN_RECEIVED, "SYN: simultaneous open", "RFC 9293 §3.5 figure 8"),
    (S.SYN_SENT, S.CLOSED, "RST+ACK (refused); SYN retries exhausted; send_eof() / abort()",
     "RFC 9293 §3.10.7.3, §3.8.3"),
    (S.SYN_RECEIVED, S.ESTABLISHED, "acceptable ACK", "RFC 9293 §3.10.7.4 fifth check"),
    (S.SYN_RECEIVED, S.FIN_WAIT_1, "send_eof() with nothing queued", "RFC 9293 §3.10.4"),
    (S.SYN_RECEIVED, S.LISTEN, "RST (passive open)", "RFC 9293 §3.10.7.4 second check"),
    (S.SYN_RECEIVED, S.CLOSED, "RST (active open); SYN-ACK retries exhausted; abort()",
     "RFC 9293 §3.10.7.4, §3.10.5"),
    (S.ESTABLISHED, S.FIN_WAIT_1, "send_eof() (FIN)", "RFC 9293 §3.10.4"),
    (S.ESTABLISHED, S.CLOSE_WAIT, "FIN", "RFC 9293 §3.10.7.4 eighth check"),
    (S.ESTABLISHED, S.CLOSED, "RST; retransmissions or keep-alive exhausted; abort()",
     "RFC 9293 §3.10.7.4, §3.8.3, §3.8.4"),
    (S.FIN_WAIT_1, S.FIN_WAIT_2, "our FIN acked", "RFC 9293 §3.10.7.4 fifth check"),
    (S.FIN_WAIT_1, S.CLOSING, "FIN", "RFC 9293 §3.10.7.4 eighth check"),
    (S.FIN_WAIT_1, S.TIME_WAIT, "FIN that also acks our FIN", "RFC 9293 §3.10.7.4 eighth check"),
    (S.FIN_WAIT_1, S.CLOSED, "RST; retransmissions exhausted; abort()", "RFC 9293 §3.10.7.4, §3.8.3"),
    (S.FIN_WAIT_2, S.TIME_WAIT, "FIN", "RFC 9293 §3.10.7.4 eighth check"),
    (S.FIN_WAIT_2, S.CLOSED, "RST; fin_wait2_timeout_us; abort()", "RFC 9293 §3.10.7.4 (Linux tcp_fin_timeout)"),
    (S.CLOSE_WAIT, S.LAST_ACK, "send_eof() (FIN)", "RFC 9293 §3.10.4"),
    (S.CLOSE_WAIT, S.CLOSED, "RST; retransmissions or keep-alive exhausted; abort()",
     "RFC 9293 §3.10.7.4, §3.8.3, §3.8.4"),
    (S.CLOSING, S.TIME_WAIT, "our FIN acked", "RFC 9293 §3.10.7.4 fifth check"),
    (S.CLOSING, S.CLOSED, "RST; retransmissions exhausted", "RFC 9293 §3.10.7.4, §3.8.3"),
    (S.LAST_ACK, S.CLOSED, "our FIN acked (normal); RST; retransmissions exhausted",
     "RFC 9293 §3.10.7.4 fifth check"),
    (S.TIME_WAIT, S.CLOSED, "time_wait_us (2 MSL) expires; RST", "RFC 9293 §3.6, RFC 1337"),
)


def legal_transitions() -> Dict[TcpState, FrozenSet[TcpState]]:
    """``{from: {to, ...}}`` for every state (empty set: a state nothing leaves)."""
    out: Dict[TcpState, set] = {s: set() for s in TcpState}
    for frm, to, _, _ in TRANSITIONS:
        out[frm].add(to)
    return {s: frozenset(v) for s, v in out.items()}


def transition_table_markdown() -> str:
    """The transition table of docs/tcp-engine.md, generated from ``TRANSITIONS``."""
    lines = ["| from | to | cause | source |", "|---|---|---|---|"]
    for frm, to, why, src in TRANSITIONS:
        lines.append(f"| {frm.rfc_name} | {to.rfc_name} | {why} | {src} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - doc generator
    print(transition_table_markdown(), end="")
