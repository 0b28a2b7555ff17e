"""The control socket: `stackpep stats` asks a running box over a Unix socket.

Protocol: the client sends one JSON object on one line, the box answers with
one JSON object on one line and closes.

    -> {"command": "stats", "connections": true}
    <- {"ok": true, "stats": {...stackpep.pep.observe.stats_snapshot...}}
    -> {"command": "ping"}
    <- {"ok": true, "pid": 1234}
    anything else: {"ok": false, "error": "..."}

The socket (`[control] socket`) is created mode 0600 -- only its owner (root)
may read the counters -- served by a task in the PEP's nursery, and removed
when the PEP stops.  A socket file left by a crash is replaced; one a running
instance answers on is not (two boxes would fight over it).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from functools import partial
from typing import Any, Dict

import trio

from stackpep.pep.observe import stats_snapshot

# A running stackpep.pep.api.Pep; not imported, even for type checking: api imports
# this module (tests/test_imports.py).
Pep = Any

log = logging.getLogger("stackpep.pep")

MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 5.0


class ControlError(RuntimeError):
    pass


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def answer(pep: "Pep", request: Any) -> Dict[str, Any]:
    if not isinstance(request, dict):
        return {"ok": False, "error": "the request must be a JSON object"}
    cmd = request.get("command")
    if cmd == "stats":
        return {"ok": True, "stats": stats_snapshot(pep, connections=bool(request.get("connections", True)))}
    if cmd == "ping":
        return {"ok": True, "pid": os.getpid()}
    return {"ok": False, "error": f"unknown command {cmd!r} (known: stats, ping)"}


async def _handle(pep: "Pep", stream: trio.SocketStream) -> None:
    try:
        buf = bytearray()
        with trio.move_on_after(REQUEST_TIMEOUT):
            while b"\n" not in buf and len(buf) <= MAX_REQUEST:
                data = await stream.receive_some(4096)
                if not data:
                    break
                buf += data
        line = bytes(buf).split(b"\n", 1)[0]
        try:
            reply = answer(pep, json.loads(line))
        except ValueError as exc:
            reply = {"ok": False, "error": f"not JSON: {exc}"}
        await stream.send_all(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def serve_control(pep: "Pep", path: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve the control socket at `path` until cancelled; remove it then."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    if os.path.exists(path):
        if _alive(path):
            raise ControlError(f"{path} is served by a running instance; "
                               "give this one its own [control] socket")
        os.unlink(path)  # left by a crash
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # born 0600: no window in which others may connect
    try:
        await sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    ino = os.stat(path).st_ino
    try:
        sock.listen(16)
        listener = trio.SocketListener(sock)
        log.info("control socket on %s", path)
        task_status.started()
        await trio.serve_listeners(partial(_handle, pep), [listener])
    finally:
        sock.close()
        try:
            if os.stat(path).st_ino == ino:  # still ours
                os.unlink(path)
        except OSError:
            pass


def request(path: str, req: Dict[str, Any], timeout: float = 10.0) -> Dict[str, Any]:
    """The client side (blocking): one request, one reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = bytearray()
        while True:
            data = s.recv(1 << 16)
            if not data:
                break
            buf += data
            if buf.endswith(b"\n"):
                break
    finally:
        s.close()
    return json.loads(bytes(buf))
