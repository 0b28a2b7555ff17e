"""What each handshake mode costs in fetch time: sequential fetches of a small
object through one stackpep box (client -- box -- server namespaces, veths),
`after-server`, `immediate` and `syn-cookie` side by side with kernel
forwarding (no box), as ratios to `after-server`.

Each fetch is a new connection: connect, GET /small (10 kB), read to the end
(HTTP/1.0).  --delay-ms adds netem delay on both links in both directions
(RTT client--box = RTT box--server = 2 x delay), so the handshake's round
trips show.

    sudo .venv/bin/python benchmarks/handshake_modes.py [--fetches 300] [--delay-ms 0] [--save F]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

from stackpep.testbed.splitbox import SERVER4, SplitterTopology, pep_toml

FETCHES = r'''
import json, socket, sys, time
host, n = sys.argv[1], int(sys.argv[2])
times, failed = [], 0
for _ in range(n):
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, 80), timeout=10) as s:
            s.sendall(b"GET /small HTTP/1.0\r\nHost: x\r\n\r\n")
            while s.recv(65536):
                pass
        times.append(time.perf_counter() - t0)
    except OSError:
        failed += 1
print(json.dumps({"times": times, "failed": failed}))
'''


def fetch(topo, n):
    import sys as _s

    res = topo.client.run([_s.executable, "-c", FETCHES, SERVER4, str(n)], timeout=600)
    return json.loads(res.stdout)


def run(fetches: int, delay_ms: float, modes):
    rows = []
    with SplitterTopology() as topo:
        topo.start_nginx(80)
        (topo.tmp / "nginx" / "html" / "small").write_bytes(os.urandom(10_000))
        if delay_ms:
            for host, dev in ((topo.client, "eth0"), (topo.box, "box1"), (topo.box, "box2"), (topo.server, "eth0")):
                host.run(f"tc qdisc add dev {dev} root netem delay {delay_ms}ms limit 10000")
        fetch(topo, 5)  # warm ARP/ND and nginx
        r = fetch(topo, fetches)
        rows.append(("kernel forwarding (no box)", r))
        for mode in modes:
            topo.start_pep(pep_toml(mode=mode, handshake_timeout=10.0))
            fetch(topo, 5)
            rows.append((mode, fetch(topo, fetches)))
            topo.stop_pep()
    out = []
    for name, r in rows:
        t = sorted(r["times"]) or [0.0]
        out.append({"case": name, "median_ms": statistics.median(t) * 1000,
                    "p90_ms": t[int(0.9 * (len(t) - 1))] * 1000, "failed": r["failed"], "n": len(t)})
    return out


def table(rows, ref_case="after-server") -> str:
    ref = next((r["median_ms"] for r in rows if r["case"] == ref_case), None)
    out = ["| case | fetches | failed | median (ms) | p90 (ms) | median / after-server |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['median_ms'] / ref:.2f}" if ref else "-"
        out.append(f"| {r['case']} | {r['n']} | {r['failed']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {ratio} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fetches", type=int, default=300)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--modes", default="after-server,immediate,syn-cookie")
    ap.add_argument("--save")
    a = ap.parse_args()
    print("$", shlex.join(["python", *sys.argv]), flush=True)
    rows = run(a.fetches, a.delay_ms, a.modes.split(","))
    if a.save:
        Path(a.save).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
