"""Bulk TCP throughput through one stackpep box vs plain kernel forwarding,
side by side in one run on the same namespaces (client -- box -- server,
veth, zero added delay, default offloads).

For each case: iperf3 goodput (receiver side), the splitter process's CPU
(user+system from /proc/PID/stat) and the whole machine's busy CPU (from
/proc/stat), each also per Gbit/s of goodput.

    .venv/bin/python benchmarks/splitter.py [--seconds 10] [--markdown docs/BENCHMARKS-splitter.md]

With `--workers 1,2` the splitter rows are one per worker count (`stackpep run
--workers N`, PACKET_FANOUT) instead of gso on/off, and `--streams P` runs P
parallel iperf3 streams (one stream is one connection: it lives on one worker).
The splitter CPU is then the parent's and every worker's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from stackpep.testbed.splitbox import SERVER4, SERVER6, SplitterTopology, pep_toml

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Busy CPU-seconds of the whole machine so far (all but idle and iowait)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    return (sum(vals) - vals[3] - vals[4]) / HZ


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


def tree_cpu(pid: int) -> float:
    """CPU of a process and its children (the workers), from /proc."""
    total = proc_cpu(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    for k in kids:
        try:
            total += proc_cpu(k)
        except OSError:
            pass
    return total


def iperf(topo: SplitterTopology, server: str, seconds: float, reverse: bool, pep_pid=None, streams: int = 1):
    srv = topo.server.popen(["iperf3", "-s", "-1", "-B", server])
    time.sleep(0.3)
    m0 = machine_busy()
    p0 = tree_cpu(pep_pid) if pep_pid else 0.0
    t0 = time.monotonic()
    argv = ["iperf3", "-c", server, "-t", str(seconds), "-J", "-P", str(streams)] + (["-R"] if reverse else [])
    res = topo.client.run(argv, timeout=seconds + 60, check=False)
    wall = time.monotonic() - t0
    m1 = machine_busy()
    p1 = tree_cpu(pep_pid) if pep_pid else 0.0
    srv.wait(timeout=10)
    j = json.loads(res.stdout)
    if "error" in j:
        raise RuntimeError(j["error"])
    gbps = j["end"]["sum_received"]["bits_per_second"] / 1e9
    return {
        "gbps": gbps,
        "retransmits": j["end"].get("sum_sent", {}).get("retransmits"),
        "machine_cpu": (m1 - m0) / wall,  # cores busy on average
        "pep_cpu": (p1 - p0) / wall if pep_pid else None,
    }


def run(seconds: float, workers=None, streams: int = 1):
    rows = []
    if workers:
        cases = [(f"stackpep splitter, {n} worker{'s' if n > 1 else ''}", "", ("--workers", str(n))) for n in workers]
    else:
        cases = [("stackpep splitter", "", ()), ("stackpep splitter, gso off", "[capture]\ngso = false\n", ())]
    with SplitterTopology() as topo:
        for fam, server in (("IPv4", SERVER4), ("IPv6", SERVER6)):
            for reverse in (False, True):
                way = "server→client" if reverse else "client→server"
                kern = iperf(topo, server, seconds, reverse, streams=streams)
                rows.append(("kernel forwarding", fam, way, kern))
                for label, extra, args in cases:
                    pep = topo.start_pep(pep_toml(extra=extra), stats_interval=0, args=args)
                    try:
                        sp = iperf(topo, server, seconds, reverse, pep_pid=pep.pid, streams=streams)
                    finally:
                        topo.stop_pep(signal.SIGTERM)
                    st = json.loads(topo.stats_file.read_text())
                    sp["drops"] = {k: v for port in st["ports"].values() for k, v in port.items()
                                   if k.startswith(("rx_drop", "tx_drop")) and v}
                    rows.append((label, fam, way, sp))
    return rows


def markdown(rows, seconds) -> str:
    out = []
    out.append("| path | family | direction | goodput Gbit/s | splitter CPU (cores) | splitter CPU-s per Gbit | "
               "machine CPU (cores) | machine CPU-s per Gbit | ratio to kernel |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    kern = {}
    for path, fam, way, r in rows:
        if path.startswith("kernel"):
            kern[(fam, way)] = r["gbps"]
        ratio = r["gbps"] / kern[(fam, way)] if (fam, way) in kern else 1.0
        pc = f"{r['pep_cpu']:.2f}" if r["pep_cpu"] is not None else "–"
        ppg = f"{r['pep_cpu'] / r['gbps']:.2f}" if r["pep_cpu"] is not None and r["gbps"] else "–"
        out.append(f"| {path} | {fam} | {way} | {r['gbps']:.3f} | {pc} | {ppg} | {r['machine_cpu']:.2f} | "
                   f"{r['machine_cpu'] / r['gbps']:.2f} | {ratio:.3f} |")
    drops = [f"- {path}, {fam} {way}: {r['drops']}" for path, fam, way, r in rows if r.get("drops")]
    if drops:
        out.append("")
        out.append("Capture/emit drop counters of the splitter runs (non-zero only):")
        out += drops
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--markdown", help="write the table (with a header) to this file")
    ap.add_argument("--workers", help="comma-separated worker counts to compare (e.g. 1,2)")
    ap.add_argument("--streams", type=int, default=1, help="parallel iperf3 streams (-P)")
    args = ap.parse_args()
    workers = [int(x) for x in args.workers.split(",")] if args.workers else None
    load = os.getloadavg()
    rows = run(args.seconds, workers, args.streams)
    table = markdown(rows, args.seconds)
    print(table)
    if args.markdown:
        opts = (f" --workers {args.workers}" if args.workers else "") + (
            f" --streams {args.streams}" if args.streams != 1 else "")
        head = (f"<!-- generated by benchmarks/splitter.py --seconds {args.seconds:g}{opts} on "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, kernel {platform.release()}, "
                f"{os.cpu_count()} CPUs, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
                f"after {' '.join(f'{x:.2f}' for x in os.getloadavg())} -->\n")
        Path(args.markdown).write_text(head + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
