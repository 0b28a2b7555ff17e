"""Prometheus metrics: the dispatcher's and the ports' counters in the text
exposition format 0.0.4, served by a minimal HTTP/1.1 server (`GET /metrics`)
on `[metrics] listen`.

Naming follows Prometheus practice: counters end in `_total`; one family per
kind with the reason as a label (`stackpep_drops_total{reason="table_full"}`,
`stackpep_connections_ended_total{outcome="closed"}`); gauges for what is
(`stackpep_connections{state="active"}`, `stackpep_legs{leg=...,state=...}`).
A counter the dispatcher gains later appears as `stackpep_<name>_total`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import trio

from stackpep.pep.config import split_listen

# A running stackpep.pep.api.Pep; not imported, even for type checking: api imports
# this module (tests/test_imports.py).
Pep = Any

log = logging.getLogger("stackpep.pep")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# counter-name prefix -> (family, label): the rest of the name is the label's value
_FAMILIES = (
    ("icmp_drop_", "stackpep_icmp_drops_total", "reason", "ICMP errors not handed to a connection, by reason."),
    ("drop_", "stackpep_drops_total", "reason", "Captured segments not handed to a connection, by reason."),
    ("ended_", "stackpep_connections_ended_total", "outcome", "Split connections ended, by outcome."),
)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


class _Exposition:
    def __init__(self) -> None:
        self.families: Dict[str, Tuple[str, str, List[str]]] = {}

    def add(self, name: str, kind: str, help_: str, value, labels: Dict[str, str] = None) -> None:
        fam = self.families.setdefault(name, (kind, help_, []))
        lab = "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}" if labels else ""
        fam[2].append(f"{name}{lab} {int(value) if isinstance(value, bool) else value}")

    def text(self) -> str:
        out = []
        for name, (kind, help_, samples) in self.families.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(samples)
        return "\n".join(out) + "\n"


def render(pep: "Pep") -> str:
    """The exposition text of everything the dispatcher and the ports count."""
    disp = pep.dispatcher
    return render_stats(disp.counters, disp.statistics(), disp.config.max_connections, disp.draining)


def render_stats(counters: Dict[str, int], st: Dict[str, Any], max_connections: int, draining: bool) -> str:
    """The exposition text from counters and a statistics snapshot (the keys of
    Dispatcher.statistics(); stackpep.pep.workers passes the workers' sum)."""
    e = _Exposition()
    for k, v in counters.items():
        for prefix, fam, label, help_ in _FAMILIES:
            if k.startswith(prefix):
                e.add(fam, "counter", help_, v, {label: k[len(prefix):]})
                break
        else:
            e.add(f"stackpep_{k}_total", "counter", f"Dispatcher counter {k}.", v)
    e.add("stackpep_connections", "gauge", "Split connections in the table, by state.",
          st["connections_active"], {"state": "active"})
    e.add("stackpep_connections", "gauge", "Split connections in the table, by state.",
          st["connections_time_wait"], {"state": "time_wait"})
    for key, n in sorted(st["leg_states"].items()):
        leg, _, state = key.partition("_leg_")
        e.add("stackpep_legs", "gauge", "Engines (legs) by TCP state.", n, {"leg": leg, "state": state})
    e.add("stackpep_connections_max", "gauge", "limits.max_connections.", max_connections)
    e.add("stackpep_connections_embryonic", "gauge", "Split connections not yet established on both legs "
          "(part of the active ones).", st.get("connections_embryonic", 0))
    e.add("stackpep_draining", "gauge", "1 while the box drains (SIGTERM) or stops.", int(draining))
    buf = st.get("buffers")
    if buf:  # (the engines' buffer storage: chunks held only while data is in them)
        e.add("stackpep_buffer_bytes", "gauge", "Send/receive buffer storage the engines hold now.", buf["bytes"])
        e.add("stackpep_buffer_pool_bytes", "gauge", "Free buffer chunks kept for reuse.",
              buf["pool_chunks"] * buf["chunk_size"])
    for k, v in (st.get("routes") or {}).items():  # route_cache_hits, route_queries, ...
        e.add(f"stackpep_{k}_total", "counter", f"Route lookup counter {k}.", v)
    for pname, pst in st["ports"].items():
        for k, v in pst.items():
            e.add(f"stackpep_port_{k}_total", "counter", f"Capture port counter {k}.", v, {"port": pname})
    return e.text()


# ----------------------------------------------------------------- HTTP/1.1
MAX_HEAD = 8192


async def _handle(pep: "Pep", stream: trio.abc.Stream) -> None:
    try:
        head = bytearray()
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_HEAD:
                data = await stream.receive_some(4096)
                if not data:
                    break
                head += data
        line = bytes(head).split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, body, ctype = "400 Bad Request", b"bad request\n", "text/plain"
        elif parts[0] not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        elif parts[1].split("?", 1)[0] != "/metrics":
            status, body, ctype = "404 Not Found", b"GET /metrics\n", "text/plain"
        else:
            status, body, ctype = "200 OK", render(pep).encode(), CONTENT_TYPE
        hdr = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n").encode()
        await stream.send_all(hdr + (b"" if parts[:1] == ["HEAD"] else body))
    except (trio.BrokenResourceError, trio.ClosedResourceError, UnicodeError):
        pass
    finally:
        await stream.aclose()


async def serve_metrics(pep: "Pep", listen: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve GET /metrics on `listen` ("host:port") until cancelled; started()
    reports the bound (host, port)."""
    host, port = split_listen(listen)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[:2]
    log.info("metrics on http://%s/metrics", f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}")
    task_status.started(bound)

    async def handler(stream):
        await _handle(pep, stream)

    await trio.serve_listeners(handler, listeners)
