"""Does a SYN flood deny service?  Spoofed SYNs through one stackpep box while a
real client fetches, per handshake mode.

Spoofed SYNs (stackpep.testbed.flood: sources in 198.18.16.0/20 that nobody
owns, routed by the box towards the client namespace, which drops the answers)
go to the server's port 80 (nginx) in rounds of --count at --rate, bounded;
meanwhile the client fetches a 10 kB object in a loop (one connection each,
10 s timeout).  Reported: the fetch loop's success rate and fetch times during
the flood, the box's RSS before and after, the connections the server saw from
spoofed sources (an nft set of (source, port) in the server namespace), and
the box's counters.

    sudo .venv/bin/python benchmarks/synflood.py [--count 20000] [--rounds 2] [--rate 20000]
        [--modes after-server,syn-cookie] [--save F] [--baseline F] [--no-limits]

--no-limits runs a build without the [limits] flood keys (the baseline, e.g.
main's build: its python runs this script); --baseline prints a saved run
side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

from stackpep.testbed.flood import FETCH_LOOP, count_syns, opens_seen, route_spoofed
from stackpep.testbed.splitbox import CLIENT4, SERVER4, SplitterTopology, env_with_path, pep_toml
from stackpep.testbed.topology import python_command

from embryonic import rss_mb


def one_mode(mode: str, count: int, rounds: int, rate: float, new_limits: bool) -> dict:
    with SplitterTopology() as topo:
        topo.start_nginx(80)
        (topo.tmp / "nginx" / "html" / "small").write_bytes(os.urandom(10_000))
        route_spoofed(topo.box, CLIENT4)
        count_syns(topo.server)
        limits = {"max_embryonic": 1024} if new_limits else None
        more = {"limits": limits} if limits else {}  # (a baseline build's pep_toml has no limits=)
        pep = topo.start_pep(pep_toml(mode=mode, handshake_timeout=10.0, max_connections=8192, **more))
        time.sleep(0.5)
        rss0 = rss_mb(pep.pid)
        flood_s = rounds * count / rate + 2
        loop_s = flood_s + 4
        result = {}

        def loop():
            res = topo.client.run([sys.executable, "-c", FETCH_LOOP, SERVER4, "80", "/small", str(loop_s), "10"],
                                  timeout=loop_s + 120)
            result.update(json.loads(res.stdout))

        t = threading.Thread(target=loop)
        t.start()
        time.sleep(1.0)
        sent = 0
        for _ in range(rounds):
            argv = python_command("stackpep.testbed.flood", "--src", "198.18.16.0/20", "--dst", SERVER4,
                                  "--dport", "80", "--count", str(count), "--rate", str(rate))
            r = topo.client.run(argv, env=env_with_path(), timeout=600)
            sent += json.loads(r.stdout.strip().splitlines()[-1])["sent"]
        t.join()
        rss_peak = rss_mb(pep.pid)
        st = topo.wait_stats(lambda s: s["connections_active"] == 0, timeout=60)
        time.sleep(1)
        rss1 = rss_mb(pep.pid)
        seen = opens_seen(topo.server)
        topo.stop_pep()
    times = result.get("times") or [0.0]
    ok, failed = result.get("ok", 0), result.get("failed", 0)
    keys = ("connections_opened", "evicted_embryonic", "evicted_embryonic_per_source", "evicted_embryonic_table_full",
            "drop_table_full", "drop_server_open_rate_total", "drop_server_open_rate_per_source",
            "syncookies_sent", "syncookies_valid", "syncookie_drop_lookups_pending", "ended_handshake_timeout",
            "ended_evicted")
    return {
        "mode": mode, "spoofed_sent": sent, "fetch_ok": ok, "fetch_failed": failed,
        "success": ok / max(1, ok + failed), "errors": result.get("errors", {}),
        "fetch_median_ms": statistics.median(times) * 1000, "fetch_max_ms": max(times) * 1000,
        "rss_before_mb": rss0, "rss_after_flood_mb": rss_peak, "rss_after_mb": rss1,
        "server_conns_from_spoofed": seen,
        "counters": {k: st.get(k, 0) for k in keys if st.get(k)},
        "packets_in": st.get("packets_in", 0),
        "rx_drop_ring_full": sum(p.get("rx_drop_ring_full", 0) for p in st.get("ports", {}).values()),
    }


ROWS = (("spoofed SYNs sent", "spoofed_sent", "{:d}"), ("fetches ok / failed", None, None),
        ("fetch success rate", "success", "{:.1%}"), ("fetch time median (ms)", "fetch_median_ms", "{:.1f}"),
        ("fetch time max (ms)", "fetch_max_ms", "{:.0f}"), ("RSS before (MB)", "rss_before_mb", "{:.0f}"),
        ("RSS right after the flood (MB)", "rss_after_flood_mb", "{:.0f}"),
        ("RSS once all ended (MB)", "rss_after_mb", "{:.0f}"),
        ("server connections from spoofed sources", "server_conns_from_spoofed", "{:d}"),
        ("packets the box took in", "packets_in", "{:d}"), ("... lost: capture ring full", "rx_drop_ring_full", "{:d}"))


def table(runs) -> str:
    out = ["| | " + " | ".join(f"{r.get('label', '')} {r['mode']}".strip() for r in runs) + " |",
           "|---|" + "---:|" * len(runs)]
    for name, key, fmt in ROWS:
        if key is None:
            cells = [f"{r['fetch_ok']} / {r['fetch_failed']}" for r in runs]
        else:
            cells = [fmt.format(r[key]) for r in runs]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| counters | " + " | ".join(", ".join(f"`{k}` {v}" for k, v in r["counters"].items())
                                           for r in runs) + " |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20000, help="spoofed SYNs a round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20000, help="spoofed SYNs a second")
    ap.add_argument("--modes", default="after-server,syn-cookie")
    ap.add_argument("--label", default="")
    ap.add_argument("--no-limits", action="store_true")
    ap.add_argument("--save")
    ap.add_argument("--baseline")
    a = ap.parse_args()
    print("$", shlex.join(["python", *sys.argv]), flush=True)
    runs = []
    for mode in a.modes.split(","):
        r = one_mode(mode, a.count, a.rounds, a.rate, not a.no_limits)
        r["label"] = a.label
        runs.append(r)
        print(json.dumps(r), flush=True)
    if a.save:
        Path(a.save).write_text(json.dumps(runs, indent=1))
    if a.baseline:
        runs = json.loads(Path(a.baseline).read_text()) + runs
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
