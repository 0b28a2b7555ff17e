"""`stackpep run -c FILE`, `stackpep cleanup`, `stackpep check-config FILE`."""
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
    p = sub.add_parser("run", help="run the splitter in the foreground (SIGTERM/SIGINT stop it cleanly)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="TOML configuration")
    p.add_argument("--stats-interval", type=float, default=0, metavar="SECONDS",
                   help="log the counters every SECONDS (0: only at exit)")
    p.add_argument("--stats-file", metavar="PATH",
                   help="write the counters as JSON here (every --stats-interval and at exit)")
    p.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                   help="stop by itself after SECONDS (0: run until a signal)")
    p.set_defaults(handler=run_main)


@command("cleanup")
def _add_cleanup(sub) -> None:
    p = sub.add_parser("cleanup", help="remove stackpep's netfilter rules (after a crash)")
    p.add_argument("--instance", default=None, help="only this instance's rules (default: every stackpep rule)")
    p.set_defaults(handler=cleanup_main)


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


def cleanup_main(args: argparse.Namespace) -> int:
    from stackpep.io.rules import cleanup

    done = cleanup(args.instance)
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
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{args.config}: {len(problems)} problem(s); not starting", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, cfg.log_level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return trio.run(_run, cfg, args)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        print(f"{args.config}: not starting", file=sys.stderr)
        return 2


async def _run(cfg, args) -> int:
    import trio

    from stackpep.pep.api import open_pep

    # The signal receiver is in place before any rule is installed, so SIGTERM
    # always goes through open_pep's exit (which removes the rules).
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with open_pep(cfg) as pep:
            log.info("stackpep running: clients on %s, servers on %s, rules: %s",
                     ",".join(cfg.client_interfaces), ",".join(cfg.server_interfaces),
                     pep.rules_reason or "none (rules.install = false)")
            print("READY", flush=True)  # for scripts and tests: rules are in, capture is on
            async with trio.open_nursery() as nursery:
                if args.stats_interval > 0:
                    nursery.start_soon(_log_stats, pep, args.stats_interval, args.stats_file)
                with trio.move_on_after(args.duration if args.duration > 0 else float("inf")):
                    async for signum in signals:
                        log.info("received %s, shutting down", signal.Signals(signum).name)
                        break
                nursery.cancel_scope.cancel()
        stats = pep.statistics()  # after the exit: includes the shutdown
        log.info("stopped; counters: %s", json.dumps(stats, sort_keys=True))
        if args.stats_file:
            _write_stats(args.stats_file, stats)
    return 0


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
