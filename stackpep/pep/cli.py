"""`stackpep run -c FILE`, `stackpep stats`, `stackpep cleanup`, `stackpep check-config FILE`.

Signals to `run` (docs/operations.md): SIGHUP reloads the configuration file;
SIGTERM/SIGINT drain (no new connections, active ones get
`limits.drain_timeout` to finish, then are reset) and stop; a second
SIGTERM/SIGINT stops at once."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from stackpep.commands import command

log = logging.getLogger("stackpep.pep")


@command("run")
def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run the splitter in the foreground (SIGHUP reloads; SIGTERM/SIGINT drain "
                                   "and stop, a second one stops at once)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration")
    p.add_argument("--stats-interval", type=float, default=0, metavar="SECONDS",
                   help="log the counters every SECONDS (0: only at exit)")
    p.add_argument("--stats-file", metavar="PATH",
                   help="write the counters as JSON here (every --stats-interval and at exit)")
    p.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                   help="stop by itself after SECONDS (0: run until a signal)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes, each with its own capture rings in a PACKET_FANOUT group that "
                        "sends both directions of a flow to the same one (overrides pep.workers; default "
                        "one per core; docs/deployment.md)")
    p.add_argument("--pcap", metavar="FILE",
                   help="write every packet the box captures and emits to pcapng, one set of files per "
                        "interface (FILE with the interface name inserted: pep.pcapng -> pep.eth0.pcapng), "
                        "direction marked; rotated by capture.pcap_max_bytes and capture.pcap_files; "
                        "overrides capture.pcap (docs/operations.md)")
    p.set_defaults(handler=run_main)


def _with_cli(cfg, args):
    """The configuration with what the command line overrides (`--pcap`), and
    the problems of the overridden values.  A reload applies the same overrides,
    so SIGHUP does not see `--pcap` vanish."""
    import dataclasses
    import os

    from stackpep.pep.config import Problem, pcap_problems

    if cfg is not None and getattr(args, "workers", None):
        cfg = dataclasses.replace(cfg, workers=args.workers)
    view = getattr(args, "worker_view", None)   # a worker's own view (stackpep.pep.workers)
    if cfg is not None and view is not None:
        cfg = view(cfg)
    if cfg is None or not getattr(args, "pcap", None):
        return cfg, []
    path = os.path.abspath(args.pcap)
    bad = pcap_problems(path, cfg.pcap_max_bytes, cfg.pcap_files)
    if bad:
        return None, [Problem("--pcap", None, "", f"{path}: {msg}") for _, msg in bad]
    cfg = dataclasses.replace(cfg, pcap=path)
    return (view(cfg) if view is not None else cfg), []


@command("cleanup")
def _add_cleanup(sub) -> None:
    p = sub.add_parser("cleanup", help="remove stackpep's netfilter rules (after a crash)")
    p.add_argument("--instance", default=None, help="only this instance's rules (default: every stackpep rule)")
    p.add_argument("-c", "--config", metavar="FILE", default=None,
                   help="only the rules of the instance this configuration names (pep.instance)")
    p.set_defaults(handler=cleanup_main)


@command("stats")
def _add_stats(sub) -> None:
    p = sub.add_parser("stats", help="show a running splitter's counters and connections (control socket)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", metavar="FILE", help="the instance's configuration ([control] socket)")
    where.add_argument("-s", "--socket", metavar="PATH", help="the control socket (default: the default "
                                                              "instance's, /run/stackpep/stackpep.sock)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON (for scripts)")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="repeat every SECONDS (default 2) until interrupted; rates over the interval")
    p.add_argument("--no-connections", action="store_true", help="counters only, no per-connection list")
    p.add_argument("--limit", type=int, default=20, help="connections shown (busiest first; default 20)")
    p.set_defaults(handler=stats_main)


@command("check-config")
def _add_check(sub) -> None:
    p = sub.add_parser("check-config", help="check a configuration file; report every problem with file, line and key")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=check_main)


def check_main(args: argparse.Namespace) -> int:
    from stackpep.pep.config import check_file

    cfg, problems = check_file(args.file)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0


def stats_main(args: argparse.Namespace) -> int:
    import time

    from stackpep.pep.config import CONTROL_DIR, check_file
    from stackpep.pep.control import request
    from stackpep.pep.observe import summary_lines

    path = args.socket or f"{CONTROL_DIR}/stackpep.sock"
    if args.config:
        cfg, problems = check_file(args.config)
        for p in problems:
            print(p, file=sys.stderr)
        if cfg is None:
            return 2
        if not cfg.control_socket:
            print(f"{args.config}: control.socket is \"\": this instance has no control socket", file=sys.stderr)
            return 2
        path = cfg.control_socket
    previous = None
    while True:
        try:
            reply = request(path, {"command": "stats", "connections": not args.no_connections})
        except (OSError, ValueError) as exc:
            print(f"stackpep stats: no answer on {path}: {exc}", file=sys.stderr)
            return 1
        if not reply.get("ok"):
            print(f"stackpep stats: {reply.get('error')}", file=sys.stderr)
            return 1
        st = reply["stats"]
        if args.json:
            print(json.dumps(st, sort_keys=True), flush=True)
        else:
            if args.watch is not None:
                print(f"--- {time.strftime('%H:%M:%S')}")
            print("\n".join(summary_lines(st, previous, args.watch, args.limit)), flush=True)
        if args.watch is None:
            return 0
        previous = st
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0


def cleanup_main(args: argparse.Namespace) -> int:
    from stackpep.io.rules import cleanup

    instance = args.instance
    if args.config:
        from stackpep.pep.config import check_file

        cfg, problems = check_file(args.config)
        if cfg is None:
            for p in problems:
                print(p, file=sys.stderr)
            return 2
        instance = cfg.instance
    done = cleanup(instance)
    if not done:
        print("no netfilter backend works here; nothing removed", file=sys.stderr)
        return 1
    for name, n in done:
        print(f"{name}: removed {n} stackpep object(s)")
    return 0


def run_main(args: argparse.Namespace) -> int:
    import trio

    from stackpep.pep.config import ConfigError, check_file

    cfg, problems = check_file(args.config)
    cfg, more = _with_cli(cfg, args)
    problems += more
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{args.config}: {len(problems)} problem(s); not starting", file=sys.stderr)
        return 2
    from stackpep.pep.observe import LogFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())  # JSON connection lines bare ([log] format = "json")
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper()), handlers=[handler])
    if getattr(args, "workers", None) is not None and args.workers < 1:
        print("--workers: at least 1", file=sys.stderr)
        return 2
    if cfg.workers > 1:
        from stackpep.pep.workers import run_workers

        try:
            return run_workers(cfg, args, run=_run, with_cli=_with_cli, write_stats=_write_stats)
        except ConfigError as exc:
            for p in exc.problems:
                print(p, file=sys.stderr)
            print(f"{args.config}: not starting", file=sys.stderr)
            return 2
    try:
        return trio.run(_run, cfg, args)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"{args.config}: not starting", file=sys.stderr)
        return 2


def _print_ready(pep) -> None:
    log.info("stackpep running: clients on %s, servers on %s, rules: %s",
             ",".join(pep.config.client_interfaces), ",".join(pep.config.server_interfaces),
             pep.rules_reason or "none (rules.install = false)")
    print("READY", flush=True)  # for scripts and tests: rules are in, capture is on


async def _run(cfg, args, pep_kwargs=None, ready=_print_ready, on_running=None) -> int:
    """The one process of a box, or one worker of several (stackpep.pep.workers
    passes its ports, its `ready` and `on_running(pep, nursery)`)."""
    import trio

    from stackpep.pep.api import open_pep

    # The signal receiver is in place before any rule is installed, so SIGTERM
    # always goes through open_pep's exit (which removes the rules).
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with open_pep(cfg, **(pep_kwargs or {})) as pep:
            ready(pep)
            async with trio.open_nursery() as nursery:
                if on_running is not None:
                    on_running(pep, nursery)
                if args.stats_interval > 0:
                    nursery.start_soon(_log_stats, pep, args.stats_interval, args.stats_file)
                stop = trio.CancelScope()
                draining = False

                async def drain_then_stop():
                    await pep.drain()
                    stop.cancel()

                with stop, trio.move_on_after(args.duration if args.duration > 0 else float("inf")):
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if signum == signal.SIGHUP:
                            log.info("received SIGHUP, reloading %s", args.config)
                            await _reload(pep, args.config, args)
                            continue
                        if draining or pep.config.drain_timeout <= 0:
                            log.info("received %s, shutting down%s", name, " at once" if draining else "")
                            break
                        log.info("received %s, shutting down: draining first (a second %s stops at once)",
                                 name, name)
                        draining = True
                        nursery.start_soon(drain_then_stop)
                nursery.cancel_scope.cancel()
        stats = pep.statistics()  # after the exit: includes the shutdown
        log.info("stopped; counters: %s", json.dumps(stats, sort_keys=True))
        if args.stats_file:
            _write_stats(args.stats_file, stats)
    return 0


async def _reload(pep, path: str, args=None) -> None:
    from stackpep.pep.config import check_file

    cfg, problems = check_file(path)
    if args is not None:
        cfg, more = _with_cli(cfg, args)
        problems += more
    if problems:
        for p in problems:
            log.error("reload refused: %s", p)
        log.error("reload refused: %s has %d problem(s); keeping the old configuration", path, len(problems))
        return
    await pep.reload(cfg)


def _write_stats(path: str, stats: dict) -> None:
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(stats, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # readers never see half a file


async def _log_stats(pep, interval: float, path) -> None:
    import trio

    while True:
        await trio.sleep(interval)
        stats = pep.statistics()
        if path:
            _write_stats(path, stats)
        else:
            log.info("counters: %s", json.dumps(stats, sort_keys=True))
