"""CPU of one stackpep box while thousands of embryonic split connections wait.

Spoofed SYNs (stackpep.testbed.flood, sources in 198.18.16.0/20 that nobody
owns, so no client ever answers) go from the client namespace through the box
to a server port that drops SYNs (the server is silent): every split connection
waits in its handshake until `handshake.timeout`.  Measured: how long the box
takes to take them in (until every one has its server-leg SYN out) and the CPU
that costs, then the box process's CPU (user+system from /proc/PID/stat) over a
window while they only wait, its RSS before, while they wait and after they
ended, and how the connections ended.

    sudo .venv/bin/python benchmarks/embryonic.py [--count 4000] [--mode after-server]
        [--src 198.18.16.1/32] [--save after.json] [--baseline before.json] [--no-limits]

--baseline prints the saved run side by side with this one (e.g. a run of the
previous build saved with --save).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from stackpep.testbed.splitbox import CLIENT4, SERVER4, SplitterTopology, env_with_path, pep_toml
from stackpep.testbed.topology import python_command

SPOOFED = "198.18.16.0/20"
SILENT_PORT = 8099


def proc_cpu(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spoofed_routes(topo: SplitterTopology) -> None:
    """The box reaches the spoofed sources through the client namespace, which
    owns none of them and drops what the box sends there."""
    topo.box.run(f"ip route add {SPOOFED} via {CLIENT4}")


def silent_server(topo: SplitterTopology, port: int = SILENT_PORT) -> None:
    topo.server.run(["nft", "add", "table", "inet", "silent"])
    topo.server.run(["nft", "add", "chain", "inet", "silent", "in", "{ type filter hook input priority 0; }"])
    topo.server.run(["nft", "add", "rule", "inet", "silent", "in", f"tcp dport {port} counter drop"])


def send_syns(topo: SplitterTopology, count: int, rate: float, dport: int, src: str = SPOOFED,
              dst: str = SERVER4) -> dict:
    argv = python_command("stackpep.testbed.flood", "--src", src, "--dst", dst, "--dport", str(dport),
                          "--count", str(count), "--rate", str(rate))
    res = topo.client.run(argv, env=env_with_path(), timeout=600)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(count: int, mode: str, timeout: float, window: float, new_limits: bool = True, src: str = SPOOFED) -> dict:
    with SplitterTopology() as topo:
        spoofed_routes(topo)
        silent_server(topo)
        # room for all of them: this measures what waiting costs, not the eviction
        limits = {"max_embryonic": count * 2, "max_embryonic_per_source": count * 2,
                  "server_opens_per_second": count * 2, "server_opens_per_second_per_source": count * 2} \
            if new_limits else None
        more = {"limits": limits} if limits else {}  # (a baseline build's pep_toml has no limits=)
        pep = topo.start_pep(pep_toml(mode=mode, handshake_timeout=timeout, max_connections=max(8192, count * 2),
                                      **more), stats_interval=0.5)
        time.sleep(1.0)
        idle_cpu0, t0 = proc_cpu(pep.pid), time.monotonic()
        time.sleep(window / 2)
        idle_cpu = (proc_cpu(pep.pid) - idle_cpu0) / (time.monotonic() - t0)
        rss0 = rss_mb(pep.pid)
        t_syn = time.monotonic()
        burst0 = proc_cpu(pep.pid)
        sent = send_syns(topo, count, 20000, SILENT_PORT, src=src)
        # taking them in: until every split connection has its engines (routes looked up, server SYN out)
        try:
            st_mid = topo.wait_stats(lambda s: s.get("leg_states", {}).get("server_leg_SYN-SENT", 0) >= sent["sent"],
                                     timeout=timeout)
            intake_s = time.monotonic() - t_syn
        except AssertionError:  # not all taken in before the first handshake timeouts
            st_mid = topo.stats()
            intake_s = float("nan")
        intake_cpu = proc_cpu(pep.pid) - burst0
        c0, t0 = proc_cpu(pep.pid), time.monotonic()
        time.sleep(window)
        cpu = (proc_cpu(pep.pid) - c0) / (time.monotonic() - t0)
        rss_wait = rss_mb(pep.pid)
        st = topo.wait_stats(lambda s: s["connections_active"] == 0, timeout=timeout + 30)
        time.sleep(1.0)
        rss_after = rss_mb(pep.pid)
        topo.stop_pep()
    return {
        "mode": mode, "count": count, "sent": sent["sent"], "handshake_timeout": timeout,
        "waiting": st_mid.get("leg_states", {}).get("server_leg_SYN-SENT", 0), "src": src, "idle_cpu": idle_cpu, "cpu_waiting": cpu,
        "intake_s": intake_s, "intake_cpu_s": intake_cpu,
        "rss_before_mb": rss0, "rss_waiting_mb": rss_wait, "rss_after_mb": rss_after,
        "ended": {k: v for k, v in st.items() if k.startswith("ended_") and v},
        "opened": st["connections_opened"],
        "drops": {k: v for k, v in st.items() if (k.startswith("drop_") or k.startswith("evicted")) and v
                  and isinstance(v, int)},
    }


ROWS = (("SYNs sent", "sent", "{:d}"), ("split connections with their server SYN out", "waiting", "{:d}"),
        ("taking them in: wall time (s)", "intake_s", "{:.2f}"), ("... box CPU time (s)", "intake_cpu_s", "{:.2f}"),
        ("box CPU idle (cores)", "idle_cpu", "{:.3f}"), ("box CPU while they wait (cores)", "cpu_waiting", "{:.3f}"),
        ("RSS before (MB)", "rss_before_mb", "{:.0f}"), ("RSS while they wait (MB)", "rss_waiting_mb", "{:.0f}"),
        ("RSS after they ended (MB)", "rss_after_mb", "{:.0f}"))


def table(runs, labels) -> str:
    out = ["| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name, key, fmt in ROWS:
        out.append(f"| {name} | " + " | ".join(fmt.format(r[key]) for r in runs) + " |")
    out.append("| ended | " + " | ".join(", ".join(f"{k[6:]} {v}" for k, v in r["ended"].items()) for r in runs)
               + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--mode", default="after-server")
    ap.add_argument("--timeout", type=float, default=30.0, help="handshake.timeout of the box (s)")
    ap.add_argument("--window", type=float, default=5.0, help="CPU measuring window while they wait (s)")
    ap.add_argument("--save", help="write this run's figures as JSON")
    ap.add_argument("--baseline", help="a saved run to print side by side")
    ap.add_argument("--label", default="this build")
    ap.add_argument("--src", default=SPOOFED, help="spoofed sources (a /32: one source, a new port each SYN)")
    ap.add_argument("--no-limits", action="store_true", help="a build without [limits] max_embryonic (the baseline)")
    a = ap.parse_args()
    print("$", shlex.join(["python", *sys.argv]), flush=True)
    r = run(a.count, a.mode, a.timeout, a.window, new_limits=not a.no_limits, src=a.src)
    r["label"] = a.label
    if a.save:
        Path(a.save).write_text(json.dumps(r, indent=1))
    runs = [r]
    if a.baseline:
        runs.insert(0, json.loads(Path(a.baseline).read_text()))
    print(table(runs, [x.get("label", "?") for x in runs]))
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
