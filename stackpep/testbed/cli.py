"""CLI: `stackpep testbed up|down|run|selftest` and `stackpep demo`."""
from __future__ import annotations

import argparse
import re
import sys

from stackpep.commands import command

ROLES = ("client", "pep-a", "link", "pep-b", "server")


@command("testbed")
def _testbed(sub) -> None:
    p = sub.add_parser("testbed", help="the five-host satellite-link testbed",
                       description="client - pep-a - link - pep-b - server as network namespaces, "
                       "with stackpep's own link emulator in the link host.")
    tsub = p.add_subparsers(dest="testbed_cmd", metavar="ACTION")

    up = tsub.add_parser("up", help="build the testbed and leave it running")
    up.add_argument("--scenario", default="geo", help="link of this scenario (default geo)")
    up.add_argument("--prefix", help="namespace prefix (default: a fresh spXXXX)")
    up.add_argument("--link-backend", choices=("builtin", "netem"), default="builtin",
                    help="stackpep's emulator (default) or the kernel's netem where it exists")
    up.set_defaults(handler=_up)

    down = tsub.add_parser("down", help="tear a testbed down")
    g = down.add_mutually_exclusive_group(required=True)
    g.add_argument("--prefix", help="the prefix printed by `up`")
    g.add_argument("--all", action="store_true", help="every testbed (namespaces spXXXX-<role>)")
    down.set_defaults(handler=_down)

    run = tsub.add_parser("run", help="run scenarios side by side and report (exit 1 if any cell failed)")
    run.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="geo, meo, leo, geo-matrix (IPv4), geo-matrix-v6, geo-matrix-46 (both, side by "
                     "side), demo, or one cell of the matrix (geo-20M-loss0%%-v6)")
    run.add_argument("--configs", default=None,
                     help="comma-separated: e2e-cubic,e2e-bbr,stackpep-one-box,stackpep-two-boxes,"
                          "stackpep-two-boxes-0rtt,stackpep-two-boxes-vegas (default all but -vegas)")
    run.add_argument("--workloads", default="default",
                     help="default | all | comma list of bulk-download,bulk-upload,fetch-100KB,fetch-1MB,"
                     "parallel-100,web-mix")
    run.add_argument("--bulk-seconds", type=float, default=None, help="length of bulk transfers (default 30)")
    run.add_argument("--fetches", type=int, default=None, help="fetches per object size (default 5)")
    run.add_argument("--seed", type=int, default=None, help="emulator seed (default 1)")
    run.add_argument("--out", help="output directory (default /tmp/stackpep-run-<time>)")
    run.add_argument("--pep-config", help="TOML template for `stackpep run` ({client_if}, {server_if}, {host}, {boxes})")
    run.add_argument("--pep-workers", type=int, default=None, metavar="N",
                     help="worker processes of each stackpep box (`stackpep run --workers N`; default 1)")
    run.add_argument("--link-backend", choices=("builtin", "netem"), default="builtin",
                     help="stackpep's emulator (default) or the kernel's netem where it exists")
    run.set_defaults(handler=_run)

    st = tsub.add_parser("selftest", help="measure the link emulator's delay and rate accuracy")
    from stackpep.testbed.selftest import add_selftest_args

    add_selftest_args(st)
    st.set_defaults(handler=_selftest)
    p.set_defaults(handler=lambda args: (p.print_help(), 0)[1])


@command("demo")
def _demo(sub) -> None:
    p = sub.add_parser("demo", help="GEO link, with and without stackpep, in under 3 minutes (root)",
                       description="Builds the testbed with a GEO link (600 ms RTT, 20 Mbit/s, 1 %% loss), "
                       "runs a 100 KB fetch and a 20 s download without and with stackpep, prints the "
                       "comparison and where the plots are, and tears everything down.")
    p.add_argument("--out", help="output directory (default /tmp/stackpep-demo-<time>)")
    p.add_argument("--bulk-seconds", type=float, default=20.0)
    p.add_argument("--pep-config", help="TOML template for `stackpep run` ({client_if}, {server_if}, {host}, {boxes})")
    p.set_defaults(handler=lambda a: __import__("stackpep.testbed.demo", fromlist=["run_demo"]).run_demo(
        a.out, a.bulk_seconds, a.pep_config))


def _up(args) -> int:
    from stackpep.testbed.run import require_root
    from stackpep.testbed.scenarios import resolve_scenarios
    from stackpep.testbed.topology import CLIENT4, CLIENT6, SERVER4, SERVER6, Topology
    from stackpep.testbed.workloads import HTTP_PORT, start_http_server

    why = require_root()
    if why:
        print(why, file=sys.stderr)
        return 2
    sc = resolve_scenarios([args.scenario])[0]
    topo = Topology(prefix=args.prefix, link_backend=args.link_backend)
    try:
        topo.build()
        topo.start_link(sc.link)
        start_http_server(topo)
        topo.warm_up()
    except BaseException:
        topo.close()
        raise
    print(f"testbed {topo.prefix} is up: {sc.description}")
    for short, name in topo.describe().items():
        print(f"  {short:<7} ip netns exec {name} ...")
    print(f"  client {CLIENT4} {CLIENT6}; server {SERVER4} {SERVER6} (HTTP on :{HTTP_PORT}, /obj/N = N bytes)")
    print(f"  emulator counters: {topo.workdir / 'emulator-stats.json'}")
    print(f"tear down: stackpep testbed down --prefix {topo.prefix}")
    return 0


def _down(args) -> int:
    from stackpep.testbed.netns import cleanup_namespaces, list_namespaces

    if args.all:
        pat = re.compile(r"^(sp[0-9a-f]{4})-(%s)$" % "|".join(map(re.escape, ROLES)))
        prefixes = sorted({m.group(1) for m in map(pat.match, list_namespaces()) if m})
    else:
        prefixes = [args.prefix]
    import glob
    import os
    import shutil
    import tempfile

    removed = []
    for prefix in prefixes:
        for role in ROLES:
            removed += cleanup_namespaces(f"{prefix}-{role}")
        # the work directory `up` left for the emulator's counters
        for d in glob.glob(os.path.join(tempfile.gettempdir(), f"{prefix}-*")):
            if os.path.exists(os.path.join(d, "emulator.log")):
                shutil.rmtree(d, ignore_errors=True)
    print(f"removed {len(removed)} namespace(s)" + (": " + " ".join(removed) if removed else ""))
    return 0


def _selftest(args) -> int:
    from stackpep.testbed.run import require_root
    from stackpep.testbed.selftest import run_selftest

    why = require_root()
    if why:
        print(why, file=sys.stderr)
        return 2
    return run_selftest(args)


def _run(args) -> int:
    from pathlib import Path

    from stackpep.testbed.report import failure_report
    from stackpep.testbed.run import default_out_dir, execute, require_root, terminate_as_interrupt
    from stackpep.testbed.scenarios import (DEFAULT_CONFIGS, all_workloads, default_workloads,
                                            resolve_configs, resolve_scenarios)

    why = require_root()
    if why:
        print(why, file=sys.stderr)
        return 2
    terminate_as_interrupt()
    scenarios = resolve_scenarios(args.scenarios)
    for sc in scenarios:
        if args.bulk_seconds is not None or args.fetches is not None or args.workloads != "default":
            bulk_s = args.bulk_seconds if args.bulk_seconds is not None else 30.0
            fetches = args.fetches if args.fetches is not None else 5
            if args.workloads == "all":
                pool = all_workloads(bulk_s, fetches)
            else:
                pool = default_workloads(bulk_s, fetches) + all_workloads(bulk_s, fetches)
            if args.workloads in ("default", "all"):
                names = [w.name for w in sc.workloads] if args.workloads == "default" else [w.name for w in pool]
            else:
                names = [n.strip() for n in args.workloads.split(",") if n.strip()]
            chosen = []
            for n in names:
                w = next((w for w in pool if w.name == n), None)
                if w is None:
                    print(f"unknown workload {n!r}", file=sys.stderr)
                    return 2
                if all(c.name != n for c in chosen):
                    chosen.append(w)
            sc.set_workloads(chosen)
        if args.seed is not None:
            sc.link.seed = args.seed
    configs = resolve_configs(args.configs.split(",") if args.configs else DEFAULT_CONFIGS, args.pep_config,
                              getattr(args, "pep_workers", None))
    out_dir = Path(args.out) if args.out else default_out_dir("run")
    res = execute(scenarios, configs, out_dir, ["stackpep", *sys.argv[1:]], link_backend=args.link_backend)
    print()
    print(res.table)
    print(f"\nresults: {res.json_path}")
    for p in res.plots:
        print(f"plot:    {p}", flush=True)
    failures = failure_report(res.cells, "stackpep testbed run")
    if failures:
        print(failures, file=sys.stderr, flush=True)
        return 1
    return 0
