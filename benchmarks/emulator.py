"""How accurate the testbed's link emulator is on this machine, now: runs
`stackpep testbed selftest` and prints the command, the machine's load and the
figures as a Markdown table.

    sudo .venv/bin/python benchmarks/emulator.py [--rates 20,50,100] [--delay 50] [--duration 5] [--tcp-seconds 5]

The figures move with the machine's load (the emulator is one Python process that
sends each frame at its departure time): quote them with the load they were
measured under.  The test suite asserts only what holds under any load
(tests/test_emulator_accuracy.py); the timing arithmetic itself is tested on a
virtual clock (tests/test_emulator.py).  Exit status: the self-test's (0 = PASS).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from stackpep.testbed.topology import python_command, python_env


def render(rows: list, command: str, load_before: tuple, load_after: tuple) -> str:
    out = [f"Command: `{command}`  ",
           f"Date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
           f"kernel {platform.release()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
           f"{load_after[0]:.2f} after.", "",
           "| rate | delay error median / p95 / max | probes (reordered) | measured rate (error) "
           "| TCP goodput | TCP frames > 1 ms late | worst lateness | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tcp = r.get("tcp_goodput_mbit")
        late = (f"{r['tcp_late_over_1ms']} of {r['tcp_frames']} "
                f"({100 * r['tcp_late_over_1ms'] / r['tcp_frames']:.2f} %)" if tcp is not None and r["tcp_frames"]
                else "-")
        ok = r["delay_ok"] and r["rate_ok"] and r["tcp_ok"]
        out.append(f"| {r['rate_mbit']:g} Mbit/s "
                   f"| {r['delay_error_median_ms']:+.3f} / {r['delay_error_p95_ms']:.3f} / "
                   f"{r['delay_error_max_ms']:.3f} ms "
                   f"| {r['probes']} ({r.get('probes_reordered', 0)}) "
                   f"| {r['measured_rate_mbit']:.3f} Mbit/s ({r['rate_error'] * 100:+.2f} %) "
                   f"| {f'{tcp:.1f} Mbit/s' if tcp is not None else '-'} | {late} "
                   f"| {r.get('tcp_late_max_ms') or r.get('rate_late_max_ms') or 0:.1f} ms "
                   f"| {'ok' if ok else 'FAIL'} |")
    out += ["", "Pass: delay error median and p95 within 1 ms, rate within 2 %, at most 1 % of the "
            "TCP frames more than 1 ms late."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="20,50,100")
    ap.add_argument("--delay", default="50")
    ap.add_argument("--duration", default="5")
    ap.add_argument("--tcp-seconds", default="5")
    ap.add_argument("--json", help="also keep the self-test's JSON here")
    args = ap.parse_args(argv)
    opts = ["--rates", args.rates, "--delay", args.delay, "--duration", args.duration,
            "--tcp-seconds", args.tcp_seconds]
    with tempfile.TemporaryDirectory(prefix="stackpep-emulator-") as tmp:
        path = Path(args.json) if args.json else Path(tmp) / "selftest.json"
        load_before = os.getloadavg()
        rc = subprocess.run(python_command("stackpep", "testbed", "selftest", *opts, "--json", str(path)),
                            env=python_env(), cwd=tmp).returncode
        load_after = os.getloadavg()
        if not path.exists():
            print(f"the self-test wrote no results (exit {rc})", file=sys.stderr)
            return rc or 1
        rows = json.loads(path.read_text())
    print()
    print(render(rows, "stackpep testbed selftest " + shlex.join(opts), load_before, load_after))
    return rc


if __name__ == "__main__":
    sys.exit(main())
