"""Several worker processes for one box: `[pep] workers = N` (default one per
core), `stackpep run --workers N`.

The parent process (this module's `run_workers`) does what must happen once:
1. opens every worker's capture rings itself, worker by worker, each
   interface's rings joined in one PACKET_FANOUT group whose classic BPF program
   hashes a flow symmetrically (stackpep._fast.capture.FANOUT_PROGRAM): the
   kernel gives a packet to member `hash % N`, members numbered in the order they
   joined, so the client-side packets of a connection (on a client interface)
   and its server-side packets (on a server interface) reach the same worker;
2. installs the netfilter rules (once; with nft the table is owned by this
   process and vanishes if it dies, stackpep.io.rules.OwnedNft);
3. forks the workers: each takes its own rings (`PacketRing.resync`), runs its
   own Trio loop, dispatcher and connection table (`stackpep.pep.cli._run` with
   those ports), and nothing else is shared but
   - the [wan] rate: every worker publishes the active members of its
     SharedRates in a small shared-memory table every SHARE_INTERVAL, and
     paces each connection at rate / (active in every worker) -- one budget
     for the box (`SharedRate.others_active`);
   - `limits.max_connections`, split evenly (each worker ceil(max / N));
4. supervises: a worker that dies is forked again (its connections' packets
   then reach a worker that does not know them, which answers with RST, so
   their clients learn at once); the parent keeps every ring open, so a fanout
   group never loses a member and the flow -> worker mapping never changes;
5. forwards SIGHUP (reload) and SIGTERM/SIGINT (drain, then stop; a second
   one stops at once) to the workers, removes the rules when they all ended;
6. serves the control socket (`stackpep stats`: the workers' answers summed,
   with a per-worker list) and the metrics endpoint (the sum) itself.

Workers die with the parent (PR_SET_PDEATHSIG), so a SIGKILL of the parent
leaves nothing that holds the rules' table.
"""
from __future__ import annotations

import copy
import ctypes
import dataclasses
import errno
import json
import logging
import mmap
import os
import select
import shutil
import signal
import socket
import struct
import tempfile
import time
from typing import Any, Dict, List, Optional

log = logging.getLogger("stackpep.pep")

SHARE_INTERVAL = 0.1      # s between publications of the active connections of each share
SHARE_SLOTS = 8           # SharedRates per worker in the shared table
RESTART_BACKOFF = 1.0     # s: a worker that died within MIN_UPTIME is restarted after this
MIN_UPTIME = 5.0
STOP_GRACE = 60.0         # s after the stop signal before the workers are killed
REQUEST_TIMEOUT = 3.0     # s for a worker's answer to a control request
PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------- one rate budget
class RateShares:
    """Active members of each SharedRate per worker, in an anonymous shared
    mapping made before the fork (aligned 32-bit slots: a write is atomic)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.mem = mmap.mmap(-1, 4 * workers * SHARE_SLOTS)

    def _slot(self, worker: int, k: int) -> int:
        return 4 * (worker * SHARE_SLOTS + k)

    def publish(self, worker: int, shares: List[Any]) -> None:
        for k, share in enumerate(shares[:SHARE_SLOTS]):
            struct.pack_into("=i", self.mem, self._slot(worker, k), share.n_active)
        for k, share in enumerate(shares[:SHARE_SLOTS]):
            others = sum(struct.unpack_from("=i", self.mem, self._slot(j, k))[0]
                         for j in range(self.workers) if j != worker)
            share.others_active = others

    def clear(self, worker: int) -> None:
        for k in range(SHARE_SLOTS):
            struct.pack_into("=i", self.mem, self._slot(worker, k), 0)

    def active(self, worker: int, k: int = 0) -> int:
        return struct.unpack_from("=i", self.mem, self._slot(worker, k))[0]


def shares_of(dispatcher) -> List[Any]:
    """The dispatcher's SharedRates in a fixed order (the same in every worker)."""
    return [dispatcher.shared_rates[k] for k in sorted(dispatcher.shared_rates, key=repr)]


async def publish_shares(dispatcher, table: RateShares, index: int) -> None:
    import trio

    while True:
        table.publish(index, shares_of(dispatcher))
        await trio.sleep(SHARE_INTERVAL)


# ------------------------------------------------------------------ the worker's view
def insert_before_ext(path: str, tag: str) -> str:
    head, tail = os.path.split(path)
    stem, dot, ext = tail.rpartition(".")
    return os.path.join(head, f"{stem}.{tag}.{ext}" if dot and stem else f"{tail}.{tag}")


def worker_view(index: int, workers: int, sockdir: str):
    """What differs in worker `index`'s configuration: its control socket (in
    the parent's private directory), no metrics endpoint (the parent serves the
    sum), its share of limits.max_connections, its own pcap files."""

    def view(cfg):
        return dataclasses.replace(
            cfg, control_socket=os.path.join(sockdir, f"w{index}.sock"), metrics_listen=None,
            worker_slot=(index, workers),
            max_connections=max(1, -(-cfg.max_connections // workers)),
            pcap=insert_before_ext(cfg.pcap, f"w{index}") if cfg.pcap else None)

    return view


# ------------------------------------------------------------------ aggregation
def merge_sum(items: List[Any]) -> Any:
    """Numbers summed, dicts merged key by key, lists joined; booleans: any;
    anything else: the first."""
    items = [x for x in items if x is not None]
    if not items:
        return None
    first = items[0]
    if isinstance(first, bool):
        return any(items)
    if isinstance(first, (int, float)):
        return sum(x for x in items if isinstance(x, (int, float)) and not isinstance(x, bool))
    if isinstance(first, dict):
        keys: List[str] = []
        for d in items:
            for k in d:
                if k not in keys:
                    keys.append(k)
        return {k: merge_sum([d.get(k) for d in items if isinstance(d, dict)]) for k in keys}
    if isinstance(first, list):
        return [x for lst in items if isinstance(lst, list) for x in lst]
    return first


def merge_snapshots(snaps: List[Optional[Dict[str, Any]]], pids: List[int]) -> Dict[str, Any]:
    """One `stackpep stats` reply from the workers' (None: no answer)."""
    live = [s for s in snaps if s is not None]
    out = merge_sum(live) if live else {}
    out = dict(out or {})
    for i, s in enumerate(snaps):
        for c in (s or {}).get("connections", []) if "connections" in out else ():
            c["worker"] = i
    if live:
        out["uptime_s"] = max(s.get("uptime_s", 0) for s in live)
        out["max_connections"] = sum(s.get("max_connections", 0) for s in live)
    out["workers"] = [
        {"index": i, "pid": pids[i], "answered": s is not None,
         **({"connections_active": s["connections_active"], "connections_time_wait": s["connections_time_wait"],
             "connections_opened": s["counters"].get("connections_opened", 0),
             "packets_in": s["counters"].get("packets_in", 0)} if s is not None else {})}
        for i, s in enumerate(snaps)]
    return out


# ------------------------------------------------------------------ the parent
def open_fanout_ports(cfg, workers: int) -> List[List[Any]]:
    """Every worker's ports, worker by worker (the join order is the fanout index)."""
    from stackpep.io.ports import AfPacketPort

    groups: Dict[str, Any] = {}
    rows: List[List[Any]] = []
    try:
        for _ in range(workers):
            row = []
            for side, names in ((True, cfg.client_interfaces), (False, cfg.server_interfaces)):
                for name in names:
                    p = AfPacketPort(name, client_side=side, block_size=cfg.block_size, block_count=cfg.block_count,
                                     retire_ms=cfg.retire_ms, mark=cfg.mark, gso=cfg.gso,
                                     fanout_group=groups.get(name, "new"))
                    groups[name] = p.ring.fanout_group
                    row.append(p)
            rows.append(row)
    except BaseException:
        for row in rows:
            for p in row:
                p.close()
        raise
    return rows


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.started = 0.0
        self.ready = False
        self.done = False        # ended by itself with status 0 (--duration) or after the stop


class Supervisor:
    def __init__(self, cfg, args, rows: List[List[Any]], hooks: Dict[str, Any]) -> None:
        self.hooks = hooks       # stackpep.pep.cli's run, with_cli, write_stats (it imports this module)
        self.cfg = cfg
        self.args = args
        self.rows = rows
        self.n = len(rows)
        self.sockdir = tempfile.mkdtemp(prefix="stackpep-workers-")
        self.shares = RateShares(self.n)
        self.workers = [_Worker(i) for i in range(self.n)]
        self.ready_r, self.ready_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w, self.ready_r):
            os.set_blocking(fd, False)
        self.signals: List[int] = []
        self.stopping = False
        self.stop_deadline = float("inf")
        self.control: Optional[socket.socket] = None
        self.control_ino = 0
        self.metrics: Optional[socket.socket] = None
        self.metrics_address: Optional[tuple] = None
        self.parent_pid = os.getpid()

    # -- the workers -------------------------------------------------------------------
    def parent_fds(self) -> List[int]:
        fds = [self.ready_r, self.wake_r, self.wake_w]
        fds += [s.fileno() for s in (self.control, self.metrics) if s is not None]
        return fds

    def spawn(self, w: _Worker) -> None:
        self.shares.clear(w.index)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._worker_main(w.index)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        w.pid, w.started, w.ready, w.done = pid, time.monotonic(), False, False
        log.info("worker %d started (pid %d)", w.index, pid)

    def _worker_main(self, index: int) -> int:
        import trio

        _run = self.hooks["run"]
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if os.getppid() != self.parent_pid:
            return 1      # the parent died before the prctl
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        for fd in self.parent_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        for j, row in enumerate(self.rows):
            for p in row:
                if j != index:
                    p.close()      # this process's copy only: the parent keeps them
        mine = self.rows[index]
        for p in mine:
            p.ring.resync()
        args = copy.copy(self.args)
        args.worker_view = worker_view(index, self.n, self.sockdir)
        if getattr(args, "stats_file", None):
            args.stats_file = f"{args.stats_file}.w{index}"
        cfg = args.worker_view(self.cfg)
        ready_w = self.ready_w

        def ready(pep) -> None:
            log.info("worker %d of %d running (pid %d)", index, self.n, os.getpid())
            os.write(ready_w, bytes([index]))

        def on_running(pep, nursery) -> None:
            if pep.dispatcher.shared_rates:
                nursery.start_soon(publish_shares, pep.dispatcher, self.shares, index)

        return trio.run(_run, cfg, args, {"capture_ports": mine, "install_rules": False}, ready, on_running)

    def live(self) -> List[_Worker]:
        return [w for w in self.workers if w.pid]

    def signal_all(self, sig: int) -> None:
        for w in self.live():
            try:
                os.kill(w.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = next((x for x in self.workers if x.pid == pid), None)
            if w is None:
                continue
            w.pid = 0
            self.shares.clear(w.index)
            code = os.waitstatus_to_exitcode(status)
            if code == 0 and (self.stopping or w.ready):
                w.done = True
                log.info("worker %d ended", w.index)
                continue
            if self.stopping:
                w.done = True
                log.warning("worker %d ended with status %d while stopping", w.index, code)
                continue
            if not w.ready and w.started and time.monotonic() - w.started < MIN_UPTIME and not any(
                    x.ready for x in self.workers):
                raise RuntimeError(f"worker {w.index} failed to start (status {code})")
            log.warning("worker %d (pid %d) died (%s); starting it again: its connections are reset by "
                        "their peers' next segments", w.index, pid,
                        f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}")
            if time.monotonic() - w.started < MIN_UPTIME:
                time.sleep(RESTART_BACKOFF)
            self.spawn(w)

    # -- control and metrics ------------------------------------------------------------
    def ask_all(self, req: Dict[str, Any]) -> List[Optional[Dict[str, Any]]]:
        from stackpep.pep.control import request

        out: List[Optional[Dict[str, Any]]] = []
        for w in self.workers:
            try:
                r = request(os.path.join(self.sockdir, f"w{w.index}.sock"), req, timeout=REQUEST_TIMEOUT)
                out.append(r.get("stats") if r.get("ok") else None)
            except (OSError, ValueError):
                out.append(None)
        return out

    def snapshot(self, connections: bool) -> Dict[str, Any]:
        snaps = self.ask_all({"command": "stats", "connections": connections})
        st = merge_snapshots(snaps, [w.pid for w in self.workers])
        st["draining"] = bool(st.get("draining")) or self.stopping
        return st

    def answer(self, req: Any) -> Dict[str, Any]:
        if not isinstance(req, dict):
            return {"ok": False, "error": "the request must be a JSON object"}
        cmd = req.get("command")
        if cmd == "stats":
            return {"ok": True, "stats": self.snapshot(bool(req.get("connections", True)))}
        if cmd == "ping":
            return {"ok": True, "pid": os.getpid(), "workers": [w.pid for w in self.workers]}
        return {"ok": False, "error": f"unknown command {cmd!r} (known: stats, ping)"}

    def open_control(self) -> None:
        from stackpep.pep.config import ConfigError, Problem, default_control_socket
        from stackpep.pep.control import _alive

        path = self.cfg.control_socket
        if not path:
            return
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
            if os.path.exists(path):
                if _alive(path):
                    raise OSError(errno.EADDRINUSE, f"{path} is served by a running instance; "
                                                    "give this one its own [control] socket")
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                s.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            s.listen(16)
            s.setblocking(False)
        except OSError as exc:
            if path != default_control_socket(self.cfg.instance):
                raise ConfigError([Problem(self.cfg.source, self.cfg.line_of("control.socket"), "control.socket",
                                           str(exc))])
            log.warning("no control socket (`stackpep stats` cannot reach this instance): %s", exc)
            return
        self.control, self.control_ino = s, os.stat(path).st_ino
        log.info("control socket on %s (the sum of %d workers)", path, self.n)

    def open_metrics(self, listen: Optional[str]) -> None:
        from stackpep.pep.config import split_listen

        if self.metrics is not None:
            self.metrics.close()
            self.metrics, self.metrics_address = None, None
        if not listen:
            return
        host, port = split_listen(listen)
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        s = socket.socket(info[0], socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(info[4])
        s.listen(16)
        s.setblocking(False)
        self.metrics, self.metrics_address = s, s.getsockname()[:2]
        log.info("metrics on %s (the sum of %d workers)", listen, self.n)

    def serve_control(self) -> None:
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(REQUEST_TIMEOUT)
            try:
                buf = b""
                while b"\n" not in buf and len(buf) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        break
                    buf += data
                try:
                    reply = self.answer(json.loads(buf.split(b"\n", 1)[0]))
                except ValueError as exc:
                    reply = {"ok": False, "error": f"not JSON: {exc}"}
                conn.sendall(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            except OSError:
                pass

    def serve_metrics(self) -> None:
        from stackpep.pep.metrics import CONTENT_TYPE, render_stats

        try:
            conn, _ = self.metrics.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(REQUEST_TIMEOUT)
            try:
                head = b""
                while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < 8192:
                    data = conn.recv(4096)
                    if not data:
                        break
                    head += data
                parts = head.split(b"\n", 1)[0].decode("latin-1").split()
                if len(parts) != 3 or parts[0] not in ("GET", "HEAD") or parts[1].split("?")[0] != "/metrics":
                    status, body, ctype = "404 Not Found", b"GET /metrics\n", "text/plain"
                else:
                    st = self.snapshot(False)
                    body = render_stats(st.get("counters", {}), st, st.get("max_connections", 0),
                                        bool(st.get("draining"))).encode()
                    status, ctype = "200 OK", CONTENT_TYPE
                conn.sendall((f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                              f"Connection: close\r\n\r\n").encode() + (b"" if parts[:1] == ["HEAD"] else body))
            except (OSError, UnicodeError):
                pass

    # -- the loop ------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            if self.signals and any(s in (signal.SIGTERM, signal.SIGINT) for s in self.signals):
                raise KeyboardInterrupt
            r, _, _ = select.select([self.ready_r, self.wake_r], [], [], 0.5)
            self._read_ready()
            self._drain_wake()
            self.reap()
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start in time")

    def _read_ready(self) -> None:
        try:
            data = os.read(self.ready_r, 256)
        except BlockingIOError:
            return
        for i in data:
            if i < self.n:
                self.workers[i].ready = True

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 256):
                pass
        except BlockingIOError:
            pass

    def loop(self) -> None:
        next_stats = (time.monotonic() + self.args.stats_interval
                      if getattr(self.args, "stats_interval", 0) and getattr(self.args, "stats_file", None)
                      else float("inf"))
        while not all(w.done for w in self.workers):
            rl = [self.ready_r, self.wake_r] + [s for s in (self.control, self.metrics) if s is not None]
            r, _, _ = select.select(rl, [], [], 0.5)
            self._drain_wake()
            self._read_ready()
            while self.signals:
                self.handle_signal(self.signals.pop(0))
            self.reap()
            if self.control is not None and self.control in r:
                self.serve_control()
            if self.metrics is not None and self.metrics in r:
                self.serve_metrics()
            if time.monotonic() > self.stop_deadline:
                log.warning("workers still running %.0f s after the stop: killing them", STOP_GRACE)
                self.signal_all(signal.SIGKILL)
                self.stop_deadline = float("inf")
            if time.monotonic() >= next_stats:
                self.merge_stats_files()
                next_stats = time.monotonic() + self.args.stats_interval

    def handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info("received SIGHUP: the workers reload %s", self.args.config)
            self.reload_parent()
            self.signal_all(signal.SIGHUP)
            return
        if signum in (signal.SIGTERM, signal.SIGINT):
            log.info("received %s: %s the %d workers", name, "stopping" if self.stopping else "draining", self.n)
            if not self.stopping:
                self.stopping = True
                self.stop_deadline = time.monotonic() + STOP_GRACE + self.cfg.drain_timeout
            for w in self.workers:
                if not w.pid:
                    w.done = True      # not restarted any more
            self.signal_all(signum)

    def reload_parent(self) -> None:
        from stackpep.pep.config import check_file

        cfg, problems = check_file(self.args.config)
        cfg, more = self.hooks["with_cli"](cfg, self.args)
        if problems or more or cfg is None:
            return                      # the workers log the problems
        if cfg.metrics_listen != self.cfg.metrics_listen and cfg.workers == self.cfg.workers:
            try:
                self.open_metrics(cfg.metrics_listen)
            except OSError as exc:
                log.error("reload: metrics.listen: cannot listen on %s: %s", cfg.metrics_listen, exc)
                return
            self.cfg = dataclasses.replace(self.cfg, metrics_listen=cfg.metrics_listen)

    def merge_stats_files(self) -> Optional[Dict[str, Any]]:
        parts = []
        for w in self.workers:
            try:
                with open(f"{self.args.stats_file}.w{w.index}") as f:
                    parts.append(json.load(f))
            except (OSError, ValueError):
                pass
        if not parts:
            return None
        merged = merge_sum(parts)
        merged["workers"] = [{"index": i, "connections_opened": p.get("connections_opened", 0)}
                             for i, p in enumerate(parts)]
        self.hooks["write_stats"](self.args.stats_file, merged)
        return merged

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
            try:
                if os.stat(self.cfg.control_socket).st_ino == self.control_ino:
                    os.unlink(self.cfg.control_socket)
            except OSError:
                pass
        if self.metrics is not None:
            self.metrics.close()
        for row in self.rows:
            for p in row:
                p.close()
        for fd in (self.ready_r, self.ready_w, self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.sockdir, ignore_errors=True)


def run_workers(cfg, args, **hooks) -> int:
    """`stackpep run` with cfg.workers > 1 (module doc).  Returns the exit status.
    hooks: `run` (the one-process main, stackpep.pep.cli._run), `with_cli`
    (the command line's overrides of a configuration), `write_stats`."""
    from stackpep.io.rules import InstalledRules
    from stackpep.pep.api import check_environment, intercept_spec
    from stackpep.pep.config import ConfigError

    problems = check_environment(cfg)
    if problems:
        raise ConfigError(problems)
    rows = open_fanout_ports(cfg, cfg.workers)
    sup = Supervisor(cfg, args, rows, hooks)
    old = {s: signal.signal(s, sup._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)}
    old_wakeup = signal.set_wakeup_fd(sup.wake_w)
    rules = None
    try:
        sup.open_control()
        sup.open_metrics(cfg.metrics_listen)
        if cfg.install_rules:
            rules = InstalledRules(intercept_spec(cfg), cfg.rules_backend)
            rules.__enter__()
            log.info("netfilter rules installed with %s", rules.reason)
        for w in sup.workers:
            sup.spawn(w)
        try:
            sup.wait_ready()
        except KeyboardInterrupt:
            sup.handle_signal(signal.SIGTERM)
        else:
            log.info("stackpep running: %d workers, clients on %s, servers on %s, rules: %s", sup.n,
                     ",".join(cfg.client_interfaces), ",".join(cfg.server_interfaces),
                     rules.reason if rules else "none (rules.install = false)")
            print("READY", flush=True)
        sup.loop()
    except BaseException:
        sup.stopping = True
        sup.signal_all(signal.SIGKILL)
        while sup.live():
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            for w in sup.workers:
                if w.pid == pid:
                    w.pid = 0
        raise
    finally:
        try:
            if rules is not None:
                rules.__exit__(None, None, None)
                log.info("netfilter rules removed")
        finally:
            if getattr(args, "stats_file", None):
                merged = sup.merge_stats_files()
                if merged is not None:
                    log.info("stopped; counters (sum of %d workers): %s", sup.n, json.dumps(
                        {k: v for k, v in merged.items() if k not in ("ports", "leg_states", "workers")},
                        sort_keys=True))
            sup.close()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old.items():
                signal.signal(s, h)
    return 0


__all__ = ["run_workers", "merge_snapshots", "merge_sum", "RateShares", "worker_view", "open_fanout_ports"]
