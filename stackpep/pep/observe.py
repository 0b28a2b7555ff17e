"""What a running box shows: the statistics snapshot (`stackpep stats`, the
control socket, the Prometheus endpoint) and the one log line per connection end.

Everything here reads the dispatcher and the connections; nothing changes them.
Per-leg figures come from each engine's `statistics()` (stackpep.tcp.statistics).
"""
from __future__ import annotations

import ipaddress
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from stackpep.pep.splitter import CLIENT, LEG_NAMES, SERVER, SplitConnection, now_us

if TYPE_CHECKING:  # pragma: no cover
    from stackpep.pep.dispatcher import Dispatcher

# A running stackpep.pep.api.Pep; not imported, even for type checking: api imports
# this module (tests/test_imports.py).
Pep = Any

conn_log = logging.getLogger("stackpep.connections")

#: the engine figures a connection's snapshot carries per leg
LEG_FIELDS = ("state", "srtt_us", "rttvar_us", "min_rtt_us", "rto_us", "congestion", "cwnd", "ssthresh",
              "in_flight", "mss", "bytes_sent", "bytes_received", "bytes_acked", "bytes_retransmitted",
              "retransmits", "timeouts", "fast_retransmits", "tx_redundant_segments", "send_buffered",
              "recv_buffered")


def endpoint(addr: bytes, port: int) -> str:
    a = ipaddress.ip_address(addr)
    return f"{a}:{port}" if a.version == 4 else f"[{a}]:{port}"


def leg_snapshot(leg) -> Dict[str, Any]:
    st = leg.statistics()
    out = {f: getattr(st, f) for f in LEG_FIELDS}
    out["drops"] = dict(st.drops)
    return out


def connection_snapshot(conn: SplitConnection, now: int) -> Dict[str, Any]:
    """One split connection: endpoints, bytes each way (relayed between the
    legs), mean rate since it opened, and each leg's engine figures."""
    age = max(now - conn.created, 1) / 1e6
    up, down = conn.bytes_relayed[CLIENT], conn.bytes_relayed[SERVER]
    return {
        "client": endpoint(conn.client_addr, conn.client_port),
        "server": endpoint(conn.server_addr, conn.server_port),
        "age_s": round(age, 6),
        "idle_s": round(max(now - conn.last_activity, 0) / 1e6, 6),
        "outcome": conn.outcome.value if conn.outcome is not None else None,
        "bytes_up": up,  # client -> server
        "bytes_down": down,  # server -> client
        "rate_up_bps": int(up * 8 / age),
        "rate_down_bps": int(down * 8 / age),
        "legs": {LEG_NAMES[i]: leg_snapshot(leg) for i, leg in enumerate(conn.legs)}
        if conn.ready else {n: {"state": "NEW"} for n in LEG_NAMES},
    }


def drops_by_reason(stats: Dict[str, Any]) -> Dict[str, int]:
    """Every counted drop: the dispatcher's (`drop_*`, `icmp_drop_*`) and the
    ports' (`<port>.rx_drop_*`, `<port>.tx_drop_*`)."""
    out = {k: v for k, v in stats.items() if isinstance(v, int) and (k.startswith("drop_") or k.startswith("icmp_drop_"))}
    for name, pst in stats.get("ports", {}).items():
        for k, v in pst.items():
            if "_drop_" in k:
                out[f"{name}.{k}"] = v
    return out


def engine_drops(disp: "Dispatcher") -> Dict[str, int]:
    """Engine drop reasons summed over the connections in the table (a snapshot
    of live connections: what ended is gone with them)."""
    out: Dict[str, int] = {}
    for conn in list(disp.table.values()):
        if not conn.ready:
            continue
        for leg in conn.legs:
            for k, v in leg.statistics().drops.items():
                out[k] = out.get(k, 0) + v
    return out


def stats_snapshot(pep: "Pep", connections: bool = True) -> Dict[str, Any]:
    """The reply to `stackpep stats` (and the basis of the metrics)."""
    disp = pep.dispatcher
    now = now_us()
    st = disp.statistics()
    reply: Dict[str, Any] = {
        "instance": pep.config.instance,
        "uptime_s": round(time.monotonic() - pep.started_monotonic, 3),
        "draining": disp.draining,
        "max_connections": disp.config.max_connections,
        "counters": dict(disp.counters),
        "connections_active": st["connections_active"],
        "connections_time_wait": st["connections_time_wait"],
        "leg_states": st["leg_states"],
        "drops": drops_by_reason(st),
        "engine_drops": engine_drops(disp),
        "ports": st["ports"],
        "routes": st["routes"],  # route lookup counters (summed over workers like the rest)
    }
    if connections:
        reply["connections"] = [connection_snapshot(c, now) for c in list(disp.table.values())]
    return reply


# ------------------------------------------------------------ connection log
def connection_record(conn: SplitConnection, now: int) -> Dict[str, Any]:
    rec: Dict[str, Any] = {
        "event": "connection_end",
        "client": endpoint(conn.client_addr, conn.client_port),
        "server": endpoint(conn.server_addr, conn.server_port),
        "outcome": conn.outcome.value if conn.outcome is not None else "shutdown",
        "bytes_up": conn.bytes_relayed[CLIENT],
        "bytes_down": conn.bytes_relayed[SERVER],
        "duration_s": round((now - conn.created) / 1e6, 6),
    }
    for i, leg in enumerate(conn.legs if conn.ready else ()):
        st = leg.statistics()
        rec[f"retransmits_{LEG_NAMES[i]}_leg"] = st.retransmits
        if st.tx_redundant_segments:
            # first-flight redundancy (the long leg): second copies sent
            rec[f"tx_redundant_segments_{LEG_NAMES[i]}_leg"] = st.tx_redundant_segments
    return rec


class ConnectionLog:
    """The dispatcher's connection-end hook: one line per connection, on the
    `stackpep.connections` logger at INFO (`[log] connections`, `format`)."""

    def __init__(self, pep: "Pep") -> None:
        self.pep = pep

    def __call__(self, conn: SplitConnection) -> None:
        cfg = self.pep.config
        if not cfg.log_connections or not conn_log.isEnabledFor(logging.INFO):
            return
        rec = connection_record(conn, now_us())
        if cfg.log_format == "json":
            rec = {"ts": round(time.time(), 6), **rec}
            # json_line: the CLI's formatter prints the message bare (JSON lines)
            conn_log.info("%s", json.dumps(rec, separators=(",", ":")), extra={"json_line": True})
        else:
            conn_log.info("connection %s -> %s %s: %d bytes up, %d bytes down, %.3f s",
                          rec["client"], rec["server"], rec["outcome"], rec["bytes_up"], rec["bytes_down"],
                          rec["duration_s"])


class LogFormatter(logging.Formatter):
    """The CLI's formatter: JSON connection lines bare, everything else with a
    time stamp, logger name and level."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "json_line", False):
            return record.getMessage()
        return super().format(record)


def summary_lines(reply: Dict[str, Any], previous: Optional[Dict[str, Any]] = None,
                  interval: Optional[float] = None, limit: int = 20) -> List[str]:
    """`stackpep stats` for a person: counters that are not zero, drops by reason,
    leg states, and the busiest connections (rates over the last interval with --watch)."""
    c = reply["counters"]
    lines = [f"instance {reply['instance'] or '-'}  up {reply['uptime_s']:.0f} s"
             f"{'  DRAINING' if reply['draining'] else ''}  connections {reply['connections_active']} active, "
             f"{reply['connections_time_wait']} time-wait (max {reply['max_connections']})"]
    lines.append("counters: " + (", ".join(f"{k}={v}" for k, v in c.items() if v and not k.startswith(("drop_", "icmp_drop_")))
                                 or "all zero"))
    drops = {k: v for k, v in reply["drops"].items() if v}
    drops.update({f"engine.{k}": v for k, v in reply["engine_drops"].items() if v})
    lines.append("drops: " + (", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none"))
    routes = reply.get("routes") or {}
    if routes:
        lines.append("routes: " + ", ".join(f"{k}={v}" for k, v in routes.items()))
    if reply.get("workers"):  # stackpep.pep.workers: the sum above, each worker here
        lines.append("workers: " + ", ".join(
            f"{w['index']} (pid {w['pid']}): " + (f"{w['connections_active']} active, {w['connections_opened']} opened"
                                                  if w.get("answered") else "no answer")
            for w in reply["workers"]))
    if reply["leg_states"]:
        lines.append("legs: " + ", ".join(f"{k}={v}" for k, v in sorted(reply["leg_states"].items())))
    conns = reply.get("connections") or []
    if conns:
        before = {(x["client"], x["server"]): x for x in (previous or {}).get("connections", [])}
        rows = []
        for x in conns:
            up, down = x["rate_up_bps"], x["rate_down_bps"]
            old = before.get((x["client"], x["server"]))
            if old is not None and interval:
                up = int((x["bytes_up"] - old["bytes_up"]) * 8 / interval)
                down = int((x["bytes_down"] - old["bytes_down"]) * 8 / interval)
            rows.append((up + down, x, up, down))
        rows.sort(key=lambda r: -r[0])
        lines.append(f"{'client':<28} {'server':<28} {'up B':>12} {'down B':>12} {'up b/s':>10} {'down b/s':>10} "
                     f"{'legs (state rtt_ms cwnd retx)'}")
        for _, x, up, down in rows[:limit]:
            legs = []
            for name in ("client", "server"):
                lg = x["legs"].get(name, {})
                srtt = lg.get("srtt_us")
                legs.append(f"{name[0]}:{lg.get('state', '?')} {'-' if srtt is None else f'{srtt / 1000:.1f}'} "
                            f"{lg.get('cwnd', '-')} {lg.get('retransmits', '-')}")
            lines.append(f"{x['client']:<28} {x['server']:<28} {x['bytes_up']:>12} {x['bytes_down']:>12} "
                         f"{up:>10} {down:>10} {' | '.join(legs)}")
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more (--json for all)")
    return lines
