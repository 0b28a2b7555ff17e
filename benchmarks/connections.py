"""Memory and CPU of one stackpep box holding N split connections at once.

One-box topology (stackpep.testbed.splitbox: client -- box -- server, veth,
zero added delay).  A client (stackpep.testbed.manyconn, several source
addresses in 198.18.0.0/24 or fd00:1::/64) opens N connections through the
box to a server that answers each with a 100 KB object; they stay idle, then
all fetch at once, then all close.  Measured from /proc of the box process:

- RSS before any connection, with the N idle (both legs ESTABLISHED), per idle
  connection ((idle - before) / N: both engines and the split connection's
  objects), the peak (VmHWM), after all fetched, after all closed (TIME-WAIT
  legs still in the table) and after the table is empty;
- box CPU (cores) over a window while the N connections idle;
- the time for all N fetches and how many failed (every object is checked byte
  for byte), capture-ring drops (rx_drop_ring_full) and how the connections ended;
- the engines' buffer storage (statistics "buffers", when the build has it).

    sudo .venv/bin/python benchmarks/connections.py [--count 1000 10000] [--family 4 6]
        [--save after.json] [--baseline before.json] [--label "this build"]

--baseline prints a saved run (e.g. of the previous build) side by side.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import List

from stackpep.testbed import manyconn
from stackpep.testbed.splitbox import SERVER4, SERVER6, SplitterTopology, pep_toml

PORT = 8000
SOURCES = 8
TIME_WAIT_S = 3  # the box's TIME-WAIT (tcp.server leg ends in it), short so "table empty" comes soon


def proc_cpu(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def box_toml(count: int, max_connections: int, block_count: int = 0, block_size: int = 0) -> str:
    limits = {"max_embryonic_per_source": max(256, count), "server_opens_per_second_per_source": max(1000, count)}
    extra = f"[tcp.server]\ntime_wait_us = {TIME_WAIT_S * 1_000_000}\n"
    if block_count or block_size:
        extra += "[capture]\n" + (f"block_count = {block_count}\n" if block_count else "") + (
            f"block_size = {block_size}\n" if block_size else "")
    return pep_toml(ports=(PORT,), max_connections=max_connections, idle_timeout=600.0, handshake_timeout=30.0,
                    limits=limits, extra=extra)


def ring_drops(st: dict) -> dict:
    return {f"{name}.{k}": v for name, port in st.get("ports", {}).items() for k, v in port.items()
            if k.startswith("rx_drop") and v}


def run(count: int, family: int, size: int = 100 * 1024, window: float = 5.0, max_connections: int = 0,
        concurrency: int = 200, timeout: float = 120.0, block_count: int = 0, idle_only: bool = False,
        block_size: int = 0) -> dict:
    r: dict = {"count": count, "family": f"IPv{family}", "size": size, "block_count": block_count,
               "block_size": block_size}
    with SplitterTopology() as topo:
        srcs = manyconn.prepare(topo, family, SOURCES)
        srv = manyconn.start_server(topo.server, SERVER4 if family == 4 else SERVER6, PORT, size)
        pep = topo.start_pep(box_toml(count, max_connections or max(count, 10000), block_count, block_size), stats_interval=0.5)
        pid = pep.pid
        try:
            time.sleep(1.5)
            r["rss_before_kb"] = proc_kb(pid)
            dst = SERVER4 if family == 4 else SERVER6
            cl = manyconn.ClientRun(topo.client, dst, PORT, count, srcs, size, concurrency, timeout)
            phase = cl.phase
            r["open"] = phase()
            opened = r["open"]["ok"]
            try:
                topo.wait_stats(lambda s: s.get("leg_states", {}).get("server_leg_ESTABLISHED", 0) >= opened
                                and s.get("connections_embryonic", 1) == 0, timeout=60)
            except AssertionError:
                pass
            time.sleep(2.0)
            st = topo.stats()
            r["idle_connections"] = st["connections_active"]
            r["rss_idle_kb"] = proc_kb(pid)
            r["per_idle_conn_kb"] = (r["rss_idle_kb"] - r["rss_before_kb"]) / max(1, r["idle_connections"])
            r["buffers_idle"] = st.get("buffers")
            c0, t0 = proc_cpu(pid), time.monotonic()
            time.sleep(window)
            r["cpu_idle"] = (proc_cpu(pid) - c0) / (time.monotonic() - t0)
            if idle_only:  # (a baseline's idle figures without its fetch phase)
                cl.proc.kill()
                cl.proc.wait()
                return r
            c0 = proc_cpu(pid)
            r["fetch"] = phase("fetch")
            r["fetch_cpu_s"] = proc_cpu(pid) - c0
            r["rss_fetched_kb"] = proc_kb(pid)
            r["rss_peak_kb"] = proc_kb(pid, "VmHWM")
            r["close"] = phase("close")
            r["unfinished"] = {}
            try:
                topo.wait_stats(lambda s: s["connections_active"] == 0, timeout=60)
            except AssertionError:  # recorded, not fatal: the figures after it still say what stayed
                r["unfinished"]["active_after_close_60s"] = topo.stats()["connections_active"]
            time.sleep(1.0)
            r["rss_closed_kb"] = proc_kb(pid)
            try:
                st = topo.wait_stats(lambda s: len(s.get("leg_states", {})) == 0 and s["connections_time_wait"] == 0,
                                     timeout=TIME_WAIT_S + 60)
            except AssertionError:
                st = topo.stats()
                r["unfinished"]["legs_left"] = st.get("leg_states")
            if "memory_releases" in st:  # the box hands free memory back within its check interval
                releases = st["memory_releases"]
                try:
                    topo.wait_stats(lambda s: s["memory_releases"] > releases, timeout=15)
                except AssertionError:
                    pass
            time.sleep(1.5)
            st = topo.stats()
            r["rss_empty_kb"] = proc_kb(pid)
            r["buffers_empty"] = st.get("buffers")
            r["ring_drops"] = ring_drops(st)
            r["ended"] = {k[6:]: v for k, v in st.items() if k.startswith("ended_") and v}
            r["drops"] = {k: v for k, v in st.items() if k.startswith(("drop_", "evicted")) and v and isinstance(v, int)}
            cl.close()
        finally:
            topo.stop_pep()
            srv.terminate()
            srv.wait(timeout=10)
    return r


ROWS = (("connections opened", lambda r: f"{r['open']['ok']} ({r['open']['failed']} failed)"),
        ("idle split connections in the box", lambda r: f"{r['idle_connections']}"),
        ("RSS before (MB)", lambda r: f"{r['rss_before_kb'] / 1024:.0f}"),
        ("RSS with N idle (MB)", lambda r: f"{r['rss_idle_kb'] / 1024:.0f}"),
        ("**RSS per idle connection (KB)**", lambda r: f"**{r['per_idle_conn_kb']:.1f}**"),
        ("box CPU while idle (cores)", lambda r: f"{r['cpu_idle']:.3f}"),
        ("all N fetched 100 KB: wall time (s)", lambda r: f"{r['fetch']['seconds']:.2f}"),
        ("... failed fetches", lambda r: f"{r['fetch']['failed']}" + (f" {r['fetch']['errors']}" if r['fetch']['errors'] else "")),
        ("... box CPU (s)", lambda r: f"{r['fetch_cpu_s']:.2f}"),
        ("RSS peak (MB)", lambda r: f"{r['rss_peak_kb'] / 1024:.0f}"),
        ("RSS after the fetches (MB)", lambda r: f"{r['rss_fetched_kb'] / 1024:.0f}"),
        ("RSS after all closed, TIME-WAIT legs in the table (MB)", lambda r: f"{r['rss_closed_kb'] / 1024:.0f}"),
        ("RSS with the table empty (MB)", lambda r: f"{r['rss_empty_kb'] / 1024:.0f}"),
        ("closes failed", lambda r: f"{r['close']['failed']}"),
        ("capture-ring drops", lambda r: ", ".join(f"{k} {v}" for k, v in r["ring_drops"].items()) or "0"),
        ("ended", lambda r: ", ".join(f"{k} {v}" for k, v in r["ended"].items())),
        ("other drops", lambda r: ", ".join(f"{k} {v}" for k, v in r["drops"].items()) or "–"),
        ("left unfinished", lambda r: ", ".join(f"{k} {v}" for k, v in r.get("unfinished", {}).items()) or "–"),

        ("engine buffer storage idle / table empty", lambda r: (
            f"{r['buffers_idle']['bytes']} / {r['buffers_empty']['bytes']} B" if r.get("buffers_idle") else "–")))


def table(runs: List[dict]) -> str:
    heads = [f"{r.get('label', '?')}, {r['family']}, N={r['count']}" for r in runs]
    out = ["| | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(runs)]
    for name, fmt in ROWS:
        cells = []
        for r in runs:
            try:
                cells.append(fmt(r))
            except (KeyError, TypeError):
                cells.append("–")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--family", type=int, nargs="+", default=[4, 6], choices=(4, 6))
    ap.add_argument("--size", type=int, default=100 * 1024)
    ap.add_argument("--window", type=float, default=5.0, help="CPU window while idle (s)")
    ap.add_argument("--max-connections", type=int, default=0, help="limits.max_connections (0: max(N, 10000))")
    ap.add_argument("--block-count", type=int, default=0, help="[capture] block_count (0: the default)")
    ap.add_argument("--block-size", type=int, default=0, help="[capture] block_size (0: the default)")
    ap.add_argument("--idle-only", action="store_true", help="stop after the idle figures")
    ap.add_argument("--save", help="write the runs as JSON")
    ap.add_argument("--baseline", help="saved runs to print side by side")
    ap.add_argument("--label", default="this build")
    a = ap.parse_args()
    print("$", shlex.join(["python", *sys.argv]), flush=True)
    runs = []
    for n in a.count:
        for fam in a.family:
            r = run(n, fam, a.size, a.window, a.max_connections, block_count=a.block_count, idle_only=a.idle_only,
                    block_size=a.block_size)
            r["label"] = a.label
            runs.append(r)
            print(json.dumps(r), flush=True)
    if a.save:
        Path(a.save).write_text(json.dumps(runs, indent=1))
    shown = runs
    if a.baseline:
        base = json.loads(Path(a.baseline).read_text())
        shown = [x for pair in zip(base, runs) for x in pair] if len(base) == len(runs) else base + runs
    print(table(shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
