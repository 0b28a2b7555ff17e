"""The lossy GEO matrix (20 and 50 Mbit/s x loss 0, 0.1 %, 1 %; 600 ms RTT; IPv4
and IPv6) as a Markdown table of ratios, for docs/BENCHMARKS-testbed.md.

    sudo python benchmarks/geo_matrix.py --out /tmp/geo-matrix      # run it (~40 min)
    python benchmarks/geo_matrix.py --from-json /tmp/geo-matrix/results.json   # render only

Running is `stackpep testbed run geo-matrix` with the options below; rendering reads
its results.json.  Goodput is in Mbit/s with its share of the capacity
(rate x (1 - loss) x 1448/1500), every bulk transfer sha256-verified, stackpep
cells under 95 % in bold; fetch times are medians with the speed-up over
e2e-cubic.  Quote the ratios: bare figures move with the machine's load.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


MODES = {"stackpep-two-boxes": "SCPS rate", "stackpep-two-boxes-vegas": "SCPS Vegas",
         "stackpep-one-box": "one box", "stackpep-two-boxes-0rtt": "SCPS rate, zero-RTT"}
BAR = 0.95  # the goodput every stackpep cell must reach, as a share of capacity


def column(cfg: str) -> str:
    """A configuration's column heading: its name, and the long leg's mode for stackpep."""
    return f"{cfg} ({MODES[cfg]})" if cfg in MODES else cfg


def split_family(scenario: dict):
    """(link name without the family suffix, "IPv4"/"IPv6")."""
    fam = scenario.get("family", 4)
    name = scenario["name"]
    return (name[:-3] if name.endswith("-v6") else name), f"IPv{fam}"


def render(doc: dict) -> str:
    scenarios = doc["scenarios"]
    configs = []
    for c in doc["cells"]:
        if c["configuration"] not in configs:
            configs.append(c["configuration"])
    by = {(c["scenario"], c["configuration"]): c for c in doc["cells"]}
    workloads = scenarios[0]["workloads"]
    out = [f"Command: `{' '.join(doc['command'])}`  ",
           f"Date: {doc['date']}; kernel {doc['machine']['kernel']}, {doc['machine']['cpus']} CPUs, "
           f"load average at the end {doc['machine']['loadavg'][0]:.2f}.", ""]
    verified = [r for c in doc["cells"] for r in c["results"] if r["workload"].startswith("bulk")]
    ok = sum(1 for r in verified if r.get("sha256_ok"))
    below = []
    for wl in workloads:
        bulk = wl.startswith("bulk")
        out.append(f"### {wl}" + (" — goodput Mbit/s (share of capacity; gain over e2e-cubic)" if bulk
                                  else " — median seconds (speed-up over e2e-cubic; complete/total)"))
        out.append("")
        out.append("| link | family | " + " | ".join(column(c) for c in configs) + " |")
        out.append("|---|---|" + "---|" * len(configs))
        for sc in scenarios:
            link, fam = split_family(sc)
            row = [link, fam]
            for cfg in configs:
                c = by.get((sc["name"], cfg))
                if c is None:
                    row.append("—")
                    continue
                if not c["available"]:
                    row.append("not available")
                    continue
                res = next((r for r in c["results"] if r["workload"] == wl), None)
                if res is None or res.get("error"):
                    row.append("error" + (" (sha256 mismatch)" if res and "sha256" in res.get("error", "") else ""))
                    continue
                r = res.get("ratios", {})
                if bulk:
                    share = r.get("capacity", 0)
                    cell = f"{res['goodput_bps'] / 1e6:.2f} ({share * 100:.0f} %"
                    if "vs_e2e-cubic" in r:
                        cell += f"; ×{r['vs_e2e-cubic']:.2f}"
                    cell += ")"
                    if not c.get("baseline") and share < BAR:
                        cell = f"**{cell}**"
                        below.append(f"{sc['name']} / {cfg}: {share * 100:.1f} %")
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
    out.append(f"Bulk transfers sha256-verified (the receiver's bytes hash to what the sender sent): "
               f"{ok} of {len(verified)}.  ")
    out.append(f"stackpep cells below {BAR * 100:.0f} % of capacity (in bold): "
               + ("; ".join(below) if below else "none") + ".")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-json", help="render this results.json instead of running")
    ap.add_argument("--out", default="/tmp/stackpep-geo-matrix", help="output directory of the run")
    ap.add_argument("--scenario", default="geo-matrix-46", help="geo-matrix (IPv4), geo-matrix-v6, geo-matrix-46")
    ap.add_argument("--configs", default="e2e-cubic,e2e-bbr,stackpep-two-boxes,stackpep-two-boxes-vegas")
    ap.add_argument("--workloads", default="fetch-100KB,bulk-download")
    ap.add_argument("--bulk-seconds", default="20")
    ap.add_argument("--fetches", default="3")
    args = ap.parse_args(argv)
    path = Path(args.from_json) if args.from_json else Path(args.out) / "results.json"
    if not args.from_json:
        from stackpep.testbed.topology import python_command, python_env

        cmd = python_command("stackpep", "testbed", "run", args.scenario, "--configs", args.configs,
                             "--workloads", args.workloads,
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
