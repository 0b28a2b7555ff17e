"""CPU per box: bulk over the GEO link (two boxes, 600 ms RTT) and 1,000 idle
connections through one box, side by side with end-to-end kernel TCP.

Bulk: the five-host testbed (stackpep.testbed.topology), the emulated link at
RATE Mbit/s each way with 300 ms delay each way, an iperf3 download (-R) of
--seconds.  CPU is user+system time from /proc/PID/stat (a process and its
children: the workers) over the steady state, from --skip seconds after the
start until 2 s before the end, as % of one core:
- each stackpep box (pep-a, pep-b), with `--workers` 1 and/or 2;
- the link emulator (a Python process on its own, the same in every case);
- the baseline: end-to-end kernel TCP (cubic), the PEP hosts only forwarding;
  its CPU is the iperf3 sender's + receiver's process time.  The kernel's own
  TCP and forwarding work runs in softirq context, charged to whichever process
  happens to be on the CPU: it is not attributable and not in any row.

With --rx-threads every veth receives in a kernel thread of its own
(stackpep.testbed.rxthreads: XDP_PASS turns on veth's NAPI, made threaded).
Without it a veth transmit runs the receiving host's stack in the sender's
context, so a box's process is charged for its peers' TCP (the server taking
the box's ACKs and sending its next segments, the client taking the box's data)
and the e2e iperf3 processes for the forwarding hosts'.  With it each host's
receive path is its own threads' CPU, in the "rx HOST" columns: a box's
interfaces' threads carry its capture (tpacket_rcv) and its nft drop rule, the
forwarding hosts' threads carry the kernel's forwarding in the e2e case.

Idle: client -- box -- server on zero-delay veths (stackpep.testbed.splitbox),
--idle-connections TCP connections opened through the box, then nothing sent;
the box's CPU over --idle-seconds.  The baseline is the same connections with
the box only forwarding (the client and server processes' CPU).

    sudo .venv/bin/python benchmarks/cpu.py [--rates 20,50] [--workers 1,2] [--seconds 40]
        [--idle-connections 1000] [--idle-seconds 30] [--no-bulk] [--no-idle] [--json out.json]
        [--rx-threads] [--repeat N] [--baseline-python PY]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional

HZ = os.sysconf("SC_CLK_TCK")
IPERF_PORT = 5201
IDLE_PORT = 8001


def proc_cpu(pid: int, part: slice = slice(11, 13)) -> float:
    """user+system CPU-seconds (part=slice(11, 12): user only)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[part]) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def descendants(pid: int) -> List[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def tree_cpu(pid, part: slice = slice(11, 13)) -> float:
    """CPU-seconds of a process and all its descendants (a box's workers); of
    each, for a list of pids (a host's receive threads)."""
    if isinstance(pid, (list, tuple)):
        return sum(tree_cpu(p, part) for p in pid)
    return sum(proc_cpu(p, part) for p in descendants(pid))


class CpuWindow:
    """CPU of named process trees between start() and stop(), as share of a core."""

    def __init__(self, pids: Dict[str, object]) -> None:
        self.pids = pids

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {k: tree_cpu(p) for k, p in self.pids.items()}
        self.u0 = {k: tree_cpu(p, slice(11, 12)) for k, p in self.pids.items()}

    def stop(self) -> Dict[str, float]:
        wall = time.monotonic() - self.t0
        self.user = {k: (tree_cpu(p, slice(11, 12)) - self.u0[k]) / wall for k, p in self.pids.items()}
        return {k: (tree_cpu(p) - self.c0[k]) / wall for k, p in self.pids.items()}


# -- bulk over the GEO link ----------------------------------------------------------
def bulk_case(topo, cfg, rate: float, seconds: float, skip: float) -> Dict:
    from stackpep.testbed.scenarios import KernelTcp, geo
    from stackpep.testbed.topology import SERVER4
    from stackpep.testbed.workloads import _wait_listening

    sc = geo(rate, 0.0)
    topo.start_link(sc.link)
    try:
        cfg.start(topo)
        try:
            topo.warm_up()
            srv = topo.server.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL)
            _wait_listening(topo.server, IPERF_PORT)
            cli = topo.client.popen(["iperf3", "-c", SERVER4, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
                                     "-R", "--connect-timeout", "15000"], stdout=subprocess.PIPE, text=True)
            pids = {"emulator": topo.emulator.pid}
            if isinstance(cfg, KernelTcp):
                pids["e2e sender (iperf3 -s)"] = srv.pid
                pids["e2e receiver (iperf3 -c)"] = cli.pid
            else:
                for name, p in zip(("pep-a", "pep-b"), cfg.procs):
                    pids[name] = p.pid
            for host, threads in topo.rx_threads.items():  # (--rx-threads)
                pids[f"rx {host}"] = threads
            win = CpuWindow(pids)
            time.sleep(skip)
            win.start()
            time.sleep(max(1.0, seconds - skip - 2))
            cpu = win.stop()
            out, _ = cli.communicate(timeout=seconds + 90)
            srv.wait(timeout=10)
        finally:
            cfg.stop(topo)
    finally:
        topo.stop_link()
    try:
        j = json.loads(out)
        goodput = float(j["end"]["sum_received"]["bits_per_second"])
    except (ValueError, KeyError):
        goodput = 0.0
    return {"rate_mbit": rate, "config": cfg.name, "goodput_bps": goodput, "cpu": cpu, "cpu_user": win.user,
            "window_s": round(max(1.0, seconds - skip - 2), 1)}


def capture_variant_template(keys: str, workdir: Path) -> Path:
    """The testbed's box configuration with `[capture]` keys added ("k=v,k=v", TOML values)."""
    from stackpep.testbed.scenarios import DEFAULT_PEP_CONFIG

    lines = "".join(f"{k.strip()} = {v.strip()}\n" for k, v in (kv.split("=", 1) for kv in keys.split(",")))
    path = workdir / "pep-capture-variant.toml.in"
    path.write_text(DEFAULT_PEP_CONFIG.replace("{wan}", "\n[capture]\n" + lines + "{wan}"))
    return path


def run_bulk(rates: List[float], workers: List[int], seconds: float, skip: float,
             baseline_python: Optional[str] = None, capture_variant: Optional[str] = None,
             e2e: bool = True, repeat: int = 1, rx_threads: bool = False) -> List[Dict]:
    """Each configuration at each rate; with `repeat` > 1 the whole list again
    that many times, interleaved (e2e, baseline, this build, variant, e2e, ...),
    so that a slow spell of the machine falls on every configuration alike."""
    from stackpep.testbed.scenarios import KernelTcp, StackpepPep
    from stackpep.testbed.topology import Topology

    def configs(variant) -> List:
        out = [KernelTcp("cubic")] if e2e else []
        for w in workers:
            if baseline_python:  # the other build first, then this one: side by side in one run
                base = StackpepPep(2, workers=w)
                base.python = baseline_python
                base.name += " (baseline build)"
                out.append(base)
            out.append(StackpepPep(2, workers=w))
            if variant is not None:  # this build again, with the given [capture] keys
                v = StackpepPep(2, workers=w, template=str(variant))
                v.name += f" [capture] {capture_variant}"
                out.append(v)
        return out

    rows = []
    with Topology() as topo:
        if rx_threads:
            print("# receive threads (host: pids):", topo.thread_receive(), flush=True)
        variant = capture_variant_template(capture_variant, topo.workdir) if capture_variant else None
        for rate in rates:
            for run in range(1, repeat + 1):
                for cfg in configs(variant):
                    r = bulk_case(topo, cfg, rate, seconds, skip)
                    r["run"] = run
                    print(f"# {rate:g} Mbit/s run {run} {cfg.name}: {r['goodput_bps'] / 1e6:.2f} Mbit/s, "
                          + ", ".join(f"{k} {v * 100:.1f} % (user {r['cpu_user'][k] * 100:.1f})"
                                      for k, v in r["cpu"].items()), flush=True)
                    rows.append(r)
    return rows


def medians(bulk: List[Dict]) -> str:
    """Per rate and configuration: the median of the runs (--repeat) of each column."""
    groups: Dict[tuple, List[Dict]] = {}
    for r in bulk:
        groups.setdefault((r["rate_mbit"], r["config"]), []).append(r)
    rx = rx_keys(bulk)
    out = ["| link | configuration | runs | goodput Mbit/s, median | pep-a % core, median (min-max) | "
           "pep-b % core, median (min-max) | e2e iperf3 sender + receiver % core, median |"
           + "".join(f" {k} thread(s) % core, median |" for k in rx),
           "|---|---|---|---|---|---|---|" + "---|" * len(rx)]
    for (rate, name), rs in groups.items():
        def col(key):
            vals = sorted(r["cpu"][key] * 100 for r in rs if key in r["cpu"])
            if not vals:
                return "–"
            return f"{statistics.median(vals):.1f} ({vals[0]:.1f}-{vals[-1]:.1f})"
        e2e = [sum(v for k, v in r["cpu"].items() if k.startswith("e2e")) * 100 for r in rs]
        e2e_cell = f"{statistics.median(e2e):.1f}" if any(e2e) else "–"
        out.append(f"| GEO {rate:g} Mbit/s, 600 ms | {name} | {len(rs)} | "
                   f"{statistics.median(r['goodput_bps'] for r in rs) / 1e6:.2f} | {col('pep-a')} | {col('pep-b')} | "
                   f"{e2e_cell} |" + "".join(f" {col(k)} |" for k in rx))
    return "\n".join(out)


def rx_keys(bulk: List[Dict]) -> List[str]:
    """The receive-thread columns (--rx-threads), in the testbed's order."""
    keys = {k for r in bulk for k in r["cpu"] if k.startswith("rx ")}
    return [f"rx {h}" for h in ("client", "pep-a", "link", "pep-b", "server") if f"rx {h}" in keys]


# -- idle connections through one box ------------------------------------------------
IDLE_SERVER = textwrap.dedent("""
    import resource, socket, sys, time
    h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
    s = socket.socket(socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4096)
    held = []
    print("LISTEN", flush=True)
    while True:
        c, _ = s.accept(); held.append(c)
""")

IDLE_CLIENT = textwrap.dedent("""
    import resource, socket, sys, time
    h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
    held = []
    for i in range(int(sys.argv[3])):
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30); held.append(c)
    print("OPEN", len(held), flush=True)
    sys.stdin.read()
""")


def idle_case(topo, count: int, seconds: float, pep: bool) -> Dict:
    from stackpep.testbed.splitbox import SERVER4, env_with_path, pep_toml

    py = [sys.executable, "-P", "-c"]
    srv = topo.server.popen([*py, IDLE_SERVER, SERVER4, str(IDLE_PORT)], stdout=subprocess.PIPE, text=True,
                            env=env_with_path())
    assert srv.stdout.readline().strip() == "LISTEN"
    box = None
    if pep:
        box = topo.start_pep(pep_toml(max_connections=max(4096, 2 * count), idle_timeout=3600.0), stats_interval=0)
    cli = topo.client.popen([*py, IDLE_CLIENT, SERVER4, str(IDLE_PORT), str(count)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env_with_path())
    line = cli.stdout.readline().strip()
    try:
        if line != f"OPEN {count}":
            raise RuntimeError(f"idle client: {line!r}")
        time.sleep(2)  # the last handshakes settle
        pids = {"client": cli.pid, "server": srv.pid}
        if box is not None:
            pids["box"] = box.pid
        win = CpuWindow(pids)
        win.start()
        time.sleep(seconds)
        cpu = win.stop()
    finally:
        if box is not None:  # its final counters (written at exit) while every connection is open
            topo.stop_pep(signal.SIGTERM)
        cli.stdin.close()
        cli.wait(timeout=30)
        srv.kill()
        srv.wait()
    st = json.loads(topo.stats_file.read_text()) if box is not None else {}
    return {"config": "stackpep one box" if pep else "kernel forwarding", "connections": count, "cpu": cpu,
            "window_s": seconds, "connections_opened": st.get("connections_opened")}


def run_idle(count: int, seconds: float) -> List[Dict]:
    from stackpep.testbed.splitbox import SplitterTopology

    rows = []
    with SplitterTopology() as topo:
        for pep in (False, True):
            r = idle_case(topo, count, seconds, pep)
            print(f"# idle {count}: {r['config']} (split connections opened: {r['connections_opened']}): " + ", ".join(f"{k} {v * 100:.2f} %" for k, v in r["cpu"].items()),
                  flush=True)
            rows.append(r)
    return rows


# -- the table -------------------------------------------------------------------------
def markdown(bulk: List[Dict], idle: List[Dict]) -> str:
    out = []
    if bulk:
        rx = rx_keys(bulk)
        out += ["| link | configuration | goodput Mbit/s | pep-a % core | pep-b % core | "
                "e2e iperf3 sender + receiver % core | emulator % core |" + "".join(f" {k} % core |" for k in rx),
                "|---|---|---|---|---|---|---|" + "---|" * len(rx)]
        for r in bulk:
            c = r["cpu"]
            e2e = [v for k, v in c.items() if k.startswith("e2e")]
            cell = lambda k: f"{c[k] * 100:.1f}" if k in c else "–"  # noqa: E731
            run = f" (run {r['run']})" if r.get("run", 1) > 1 or any(x.get("run", 1) > 1 for x in bulk) else ""
            out.append(f"| GEO {r['rate_mbit']:g} Mbit/s, 600 ms{run} | {r['config']} | {r['goodput_bps'] / 1e6:.2f} | "
                       f"{cell('pep-a')} | {cell('pep-b')} | "
                       f"{(f'{sum(e2e) * 100:.1f}' if e2e else '–')} | {c['emulator'] * 100:.1f} |"
                       + "".join(f" {cell(k)} |" for k in rx))
        out.append("")
    if idle:
        out += ["| idle connections | configuration | box % core | client + server % core |", "|---|---|---|---|"]
        for r in idle:
            c = r["cpu"]
            box = f"{c['box'] * 100:.2f}" if "box" in c else "–"
            out.append(f"| {r['connections']} over {r['window_s']:g} s | {r['config']} | {box} | "
                       f"{(c['client'] + c['server']) * 100:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="20,50", help="link rates in Mbit/s (comma-separated)")
    ap.add_argument("--workers", default="1", help="worker counts per box to compare (e.g. 1,2)")
    ap.add_argument("--seconds", type=float, default=40, help="bulk length")
    ap.add_argument("--skip", type=float, default=12, help="seconds of the bulk before the CPU window starts")
    ap.add_argument("--idle-connections", type=int, default=1000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--no-bulk", action="store_true")
    ap.add_argument("--no-idle", action="store_true")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--no-e2e", action="store_true", help="leave out the end-to-end kernel TCP rows")
    ap.add_argument("--capture-variant", metavar="K=V[,K=V]",
                    help="also run this build with these [capture] keys (e.g. qdisc_bypass=true)")
    ap.add_argument("--repeat", type=int, default=1, help="run the bulk configurations this many times, "
                    "interleaved, and add a table of medians (one run's rows move by about a point)")
    ap.add_argument("--baseline-python", help="also run the boxes with this interpreter (a venv with another "
                    "build of stackpep), beside this one's, for before/after in one run")
    ap.add_argument("--rx-threads", action="store_true", help="every veth receives in a kernel thread of its own, "
                    "so that no process is charged for another host's receive path (module docstring)")
    args = ap.parse_args(argv)
    cmd = "benchmarks/cpu.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    load = os.getloadavg()
    bulk = [] if args.no_bulk else run_bulk([float(x) for x in args.rates.split(",")],
                                            [int(x) for x in args.workers.split(",")], args.seconds, args.skip,
                                            args.baseline_python, args.capture_variant,
                                            not args.no_e2e, args.repeat, args.rx_threads)
    idle = [] if args.no_idle else run_idle(args.idle_connections, args.idle_seconds)
    print(f"\nCommand: `{cmd.strip()}`  ")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kernel {platform.release()}, {os.cpu_count()} CPUs, "
          f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}\n")
    print(markdown(bulk, idle))
    if bulk and args.repeat > 1:
        print("\nMedians of the runs:\n")
        print(medians(bulk))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": cmd, "bulk": bulk, "idle": idle}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
