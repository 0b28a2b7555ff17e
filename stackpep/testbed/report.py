"""Results of a testbed run: progress on the terminal, ratios, the table, JSON, plots.

Every figure carries ratios (higher is always better):
* `capacity`: goodput / (rate x (1 - loss) x payload share: 1448/1500, IPv6 1428/1500) for bulk transfers;
* `vs_<baseline>`: goodput / baseline goodput, or baseline time / time for
  fetches and page loads, against each end-to-end kernel configuration that ran
  in the same scenario.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

# -- progress: stackpep.testbed.progress (re-exported) ---------------------------
from stackpep.testbed.progress import Progress, summarize  # noqa: E402,F401

# -- ratios -------------------------------------------------------------------


def headline(res: Dict) -> Optional[float]:
    """The one number of a workload result, and whether higher is better."""
    if res.get("error"):
        return None
    if res["workload"].startswith("bulk"):
        return res.get("goodput_bps")
    if res["workload"].startswith("parallel"):
        return res.get("total_s")
    return res.get("median_s")


def higher_is_better(workload: str) -> bool:
    return workload.startswith("bulk")


def add_ratios(cells, scenarios) -> None:
    """Fill res['ratios'] in every result of every cell (in place)."""
    from stackpep.testbed.scenarios import configuration_registry

    by_sc = {s.name: s for s in scenarios}
    baselines = [n for n, f in configuration_registry().items() if f().baseline]
    for cell in cells:
        sc = by_sc[cell.scenario]
        for res in cell.results:
            r: Dict[str, Optional[float]] = {}
            v = headline(res)
            wl = res["workload"]
            if wl.startswith("bulk"):
                cap = sc.capacity_bps("download" if wl.endswith("download") else "upload")
                res["capacity_bps"] = cap
                if cap and v is not None:
                    r["capacity"] = round(v / cap, 4)
            for base in baselines:
                if base == cell.configuration:
                    continue
                bres = _find(cells, cell.scenario, base, wl)
                bv = headline(bres) if bres else None
                if v and bv:
                    r[f"vs_{base}"] = round(v / bv if higher_is_better(wl) else bv / v, 4)
            res["ratios"] = r


def _find(cells, scenario: str, config: str, workload: str) -> Optional[Dict]:
    for c in cells:
        if c.scenario == scenario and c.configuration == config and c.available:
            for res in c.results:
                if res["workload"] == workload:
                    return res
    return None


# -- the table ---------------------------------------------------------------------
def _fmt(res: Optional[Dict], first_base: Optional[str]) -> str:
    if res is None:
        return "-"
    if res.get("error"):
        return "error"
    v = headline(res)
    if v is None:
        return f"incomplete ({res.get('incomplete', '?')})"
    ratios = res.get("ratios", {})
    if res["workload"].startswith("bulk"):
        s = f"{v / 1e6:.2f} Mb/s"
        if "capacity" in ratios:
            s += f" {ratios['capacity'] * 100:.0f}%cap"
    else:
        s = f"{v:.2f} s"
        if res.get("incomplete"):
            s += f" ({res['incomplete']} cut)"
    if first_base and f"vs_{first_base}" in ratios:
        s += f" x{ratios[f'vs_{first_base}']:.2f}"
    return s


def table(cells, scenarios) -> str:
    configs: List[str] = []
    for c in cells:
        if c.configuration not in configs:
            configs.append(c.configuration)
    bases = [c for c in configs if c.startswith("e2e-")]
    first_base = bases[0] if bases else None
    rows = [["scenario", "workload", *configs]]
    for sc in scenarios:
        wls = [w.name for w in sc.workloads]
        for i, wl in enumerate(wls):
            row = [sc.name if i == 0 else "", wl]
            for cfg in configs:
                cell = next((c for c in cells if c.scenario == sc.name and c.configuration == cfg), None)
                if cell is None:
                    row.append("-")
                elif not cell.available:
                    row.append("not available")
                else:
                    res = next((r for r in cell.results if r["workload"] == wl), None)
                    row.append(_fmt(res, first_base) if res or not cell.error else "error")
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = []
    if first_base:
        legend.append(f"xN = gain over {first_base} in the same scenario (goodput ratio, or time ratio "
                      "for fetches; > 1 is better)")
    legend.append("%cap = goodput / (rate x (1 - loss) x payload share: 1448/1500, IPv6 1428/1500)")
    unavailable = {c.configuration: c.reason for c in cells if not c.available}
    for name, reason in unavailable.items():
        legend.append(f"{name}: not available: {reason}")
    for c in cells:
        if c.error:
            legend.append(f"{c.scenario} / {c.configuration}: error: {c.error}")
    return "\n".join(lines + [""] + legend)


# -- failures ----------------------------------------------------------------------
def failure_report(cells, command: str) -> str:
    """Each failed cell (Cell.failed), its cause and the last lines of the logs of
    the processes it started; "" if none failed.  The commands print it and exit 1."""
    failed = [c for c in cells if c.failed]
    if not failed:
        return ""
    lines = [f"{command}: {len(failed)} of {len(cells)} cell(s) failed"]
    for c in failed:
        if not c.available:
            why = f"not available: {c.reason}"
        else:
            why = c.error or "; ".join(f"{r['workload']}: {r['error']}" for r in c.results if r.get("error"))
        lines.append(f"FAILED {c.scenario} / {c.configuration}: {why}")
        for path, tail in c.log_tails.items():
            lines.append(f"  last {len(tail)} lines of {path}:")
            lines += [f"    {line}" for line in tail]
    return "\n".join(lines)


# -- JSON --------------------------------------------------------------------------
def write_json(path: Path, cells, scenarios, command: Sequence[str], extra: Optional[Dict] = None) -> None:
    doc = {
        "stackpep_testbed": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command),
        "machine": {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg": list(os.getloadavg())},
        "payload_share": 1448 / 1500,
        "scenarios": [s.as_dict() for s in scenarios],
        "cells": [c.as_dict() for c in cells],
    }
    if extra:
        doc.update(extra)
    path.write_text(json.dumps(doc, indent=1))


# -- plots ---------------------------------------------------------------------------
def plot(out_dir: Path, cells, scenarios) -> List[Path]:
    """goodput-<scenario>.png and fetch-<scenario>.png; returns the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written: List[Path] = []
    for sc in scenarios:
        mine = [c for c in cells if c.scenario == sc.name and c.available]
        bulks = sorted({r["workload"] for c in mine for r in c.results if r["workload"].startswith("bulk")})
        if bulks:
            fig, axes = plt.subplots(len(bulks), 1, figsize=(8, 3.2 * len(bulks)), squeeze=False)
            for ax, wl in zip(axes[:, 0], bulks):
                for c in mine:
                    res = next((r for r in c.results if r["workload"] == wl and r.get("series")), None)
                    if res:
                        # series: (interval end, bit/s); draw each value over its interval
                        xs = [0.0] + [p[0] for p in res["series"]]
                        ys = [p[1] / 1e6 for p in res["series"]]
                        ys.append(ys[-1])
                        ax.plot(xs, ys, drawstyle="steps-post", label=f"{c.configuration} "
                                f"({res['goodput_bps'] / 1e6:.2f} Mbit/s)")
                cap = sc.capacity_bps("download" if wl.endswith("download") else "upload")
                if cap:
                    ax.axhline(cap / 1e6, color="grey", linestyle="--", linewidth=1, label="capacity")
                ax.set_title(f"{sc.name}: {wl} goodput per second")
                ax.set_xlabel("time (s)")
                ax.set_ylabel("Mbit/s")
                ax.set_ylim(bottom=0)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8, loc="best")
            fig.tight_layout()
            path = out_dir / f"goodput-{sc.name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
        timed = [w.name for w in sc.workloads if not w.kind.startswith("bulk")]
        timed = [w for w in timed if any(r["workload"] == w and r.get("times_s") for c in mine for r in c.results)]
        if timed:
            fig, axes = plt.subplots(1, len(timed), figsize=(4.2 * len(timed), 3.6), squeeze=False)
            for ax, wl in zip(axes[0], timed):
                data, labels = [], []
                for c in mine:
                    res = next((r for r in c.results if r["workload"] == wl), None)
                    if res and res.get("times_s"):
                        data.append(res["times_s"])
                        labels.append(c.configuration)
                ax.boxplot(data, whis=(0, 100))
                ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, fontsize=8)
                for i, d in enumerate(data, start=1):
                    ax.scatter([i] * len(d), d, s=10, alpha=0.6)
                ax.set_title(f"{wl} ({'completion' if wl.startswith('parallel') else 'time'} per transfer)",
                             fontsize=9)
                ax.set_ylabel("seconds")
                ax.set_ylim(bottom=0)
                ax.grid(alpha=0.3, axis="y")
            fig.suptitle(sc.name, fontsize=10)
            fig.tight_layout()
            path = out_dir / f"fetch-{sc.name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
