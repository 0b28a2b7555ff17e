"""The lossy GEO matrix (20 and 50 Mbit/s x loss 0, 0.1 %, 1 %; 600 ms RTT) as a
Markdown table of ratios, for docs/BENCHMARKS-testbed.md.

    sudo python benchmarks/geo_matrix.py --out /tmp/geo-matrix      # run it (~25 min)
    python benchmarks/geo_matrix.py --from-json /tmp/geo-matrix/results.json   # render only

Running is `stackpep testbed run geo-matrix` with the options below; rendering reads
its results.json.  Goodput is in Mbit/s with its share of the capacity
(rate x (1 - loss) x 1448/1500); fetch times are medians with the speed-up over
e2e-cubic.  Quote the ratios: bare figures move with the machine's load.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def render(doc: dict) -> str:
    scenarios = [s["name"] for s in doc["scenarios"]]
    configs = []
    for c in doc["cells"]:
        if c["configuration"] not in configs:
            configs.append(c["configuration"])
    by = {(c["scenario"], c["configuration"]): c for c in doc["cells"]}
    workloads = doc["scenarios"][0]["workloads"]
    out = [f"Command: `{' '.join(doc['command'])}`  ",
           f"Date: {doc['date']}; kernel {doc['machine']['kernel']}, {doc['machine']['cpus']} CPUs, "
           f"load average at the end {doc['machine']['loadavg'][0]:.2f}.", ""]
    for wl in workloads:
        bulk = wl.startswith("bulk")
        out.append(f"### {wl}" + (" — goodput Mbit/s (share of capacity; gain over e2e-cubic)" if bulk
                                  else " — median seconds (speed-up over e2e-cubic; complete/total)"))
        out.append("")
        out.append("| scenario | " + " | ".join(configs) + " |")
        out.append("|---|" + "---|" * len(configs))
        for sc in scenarios:
            row = [sc]
            for cfg in configs:
                c = by.get((sc, cfg))
                if c is None:
                    row.append("—")
                    continue
                if not c["available"]:
                    row.append("not available")
                    continue
                res = next((r for r in c["results"] if r["workload"] == wl), None)
                if res is None or res.get("error"):
                    row.append("error")
                    continue
                r = res.get("ratios", {})
                if bulk:
                    cell = f"{res['goodput_bps'] / 1e6:.2f} ({r.get('capacity', 0) * 100:.0f} %"
                    if "vs_e2e-cubic" in r:
                        cell += f"; ×{r['vs_e2e-cubic']:.2f}"
                    cell += ")"
                else:
                    med = res.get("median_s")
                    if med is None:
                        row.append(f"none complete (0/{res['count']})")
                        continue
                    cell = f"{med:.2f}"
                    if "vs_e2e-cubic" in r:
                        cell += f" (×{r['vs_e2e-cubic']:.2f})"
                    total = res.get("count", res.get("loads"))
                    cell += f" {res['complete']}/{total}"
                row.append(cell)
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-json", help="render this results.json instead of running")
    ap.add_argument("--out", default="/tmp/stackpep-geo-matrix", help="output directory of the run")
    ap.add_argument("--configs", default="e2e-cubic,e2e-bbr,stackpep-one-box,stackpep-two-boxes")
    ap.add_argument("--bulk-seconds", default="30")
    ap.add_argument("--fetches", default="5")
    args = ap.parse_args(argv)
    path = Path(args.from_json) if args.from_json else Path(args.out) / "results.json"
    if not args.from_json:
        from stackpep.testbed.topology import python_command, python_env

        cmd = python_command("stackpep", "testbed", "run", "geo-matrix", "--configs", args.configs,
                             "--bulk-seconds", args.bulk_seconds, "--fetches", args.fetches, "--out", args.out)
        rc = subprocess.run(cmd, env=python_env()).returncode
        if not path.exists():
            return rc or 1
    else:
        rc = 0
    print(render(json.loads(path.read_text())))
    return rc  # 1 if a cell failed (`stackpep testbed run` printed why)


if __name__ == "__main__":
    sys.exit(main())
