"""`stackpep demo`: a GEO link (600 ms RTT, 20 Mbit/s, 1 % loss), a 100 KB fetch
and a 20 s download, without and with stackpep, side by side."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from stackpep.testbed.report import failure_report
from stackpep.testbed.run import default_out_dir, execute, require_root, terminate_as_interrupt
from stackpep.testbed.scenarios import demo_scenario, resolve_configs

DEMO_CONFIGS = ("e2e-cubic", "e2e-bbr", "stackpep-one-box", "stackpep-two-boxes", "stackpep-two-boxes-0rtt")


def run_demo(out: Optional[str] = None, bulk_s: float = 20.0, pep_config: Optional[str] = None,
             stream=None) -> int:
    """Exit status: 0 if every cell ran, 1 if any failed (the cause on stderr), 2 if not root."""
    stream = stream or sys.stdout
    why = require_root()
    if why:
        print(f"stackpep demo: {why}", file=sys.stderr)
        return 2
    terminate_as_interrupt()
    sc = demo_scenario(bulk_s)
    configs = resolve_configs(DEMO_CONFIGS, pep_config)
    out_dir = Path(out) if out else default_out_dir("demo")
    t0 = time.monotonic()
    print(f"stackpep demo: {sc.description}", file=stream)
    print("building client - pep-a - link - pep-b - server; comparing end-to-end kernel TCP "
          "(cubic, bbr) with stackpep\n", file=stream, flush=True)
    res = execute([sc], configs, out_dir, ["stackpep", "demo", *sys.argv[2:]], stream=stream)
    print("", file=stream)
    print(res.table, file=stream)
    print("", file=stream)
    print(comparison(res.cells), file=stream)
    print(f"\nresults: {res.json_path}", file=stream)
    for p in res.plots:
        print(f"plot:    {p}", file=stream)
    print(f"(testbed torn down; {time.monotonic() - t0:.0f} s)", file=stream, flush=True)
    failures = failure_report(res.cells, "stackpep demo")
    if failures:
        print(failures, file=sys.stderr, flush=True)
        return 1
    return 0


def comparison(cells) -> str:
    """Plain sentences: what stackpep did against the best kernel baseline."""
    lines = []
    base = {c.configuration: c for c in cells if c.configuration.startswith("e2e-") and c.available}
    for c in cells:
        if not c.configuration.startswith("stackpep"):
            continue
        if not c.available:
            lines.append(f"with stackpep ({c.configuration}): not available -- {c.reason}")
            continue
        if c.error:
            lines.append(f"with stackpep ({c.configuration}): failed -- {c.error}")
            continue
        for res in c.results:
            r = res.get("ratios", {})
            parts = [f"{k[3:]} x{v:.2f}" for k, v in r.items() if k.startswith("vs_")]
            lines.append(f"{c.configuration} {res['workload']}: " + (", ".join(parts) or "no baseline"))
    if not any(c.configuration.startswith("stackpep") and c.available for c in cells):
        lines.append("so this run shows the kernel baselines only.")
    return "\n".join(lines)
