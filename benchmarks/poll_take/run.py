"""Poll + take CPU per loop wake-up of both boxes during a 50 Mbit/s GEO bulk
download (the set-up of benchmarks/cpu.py's bulk case), instrumented by this
folder's sitecustomize.py.

    PYTHONPATH=benchmarks/poll_take POLL_TAKE_INSTRUMENT=1 \
        flock /tmp/cpubench.lock .venv/bin/python benchmarks/poll_take/run.py [--python OTHER] [--rate 50]

--python: the boxes' interpreter (another build, e.g. a baseline venv)."""
import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cpu as C  # noqa: E402  (benchmarks/cpu.py: tree_cpu)
from stackpep.testbed.scenarios import StackpepPep, geo  # noqa: E402
from stackpep.testbed.topology import SERVER4, Topology  # noqa: E402
from stackpep.testbed.workloads import _wait_listening  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--python")
ap.add_argument("--rate", type=float, default=50)
args = ap.parse_args()
for f in glob.glob("/tmp/poll-take-*.json"):
    os.unlink(f)
with Topology() as topo:
    topo.start_link(geo(args.rate, 0.0).link)
    cfg = StackpepPep(2, workers=1)
    if args.python:
        cfg.python = args.python
    cfg.start(topo)
    try:
        topo.warm_up()
        srv = topo.server.popen(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL)
        _wait_listening(topo.server, 5201)
        cli = topo.client.popen(["iperf3", "-c", SERVER4, "-p", "5201", "-t", "30", "-J", "-R"],
                                stdout=subprocess.PIPE, text=True)
        pids = {"pep-a": cfg.procs[0].pid, "pep-b": cfg.procs[1].pid}
        time.sleep(12)
        t0, c0 = time.monotonic(), {k: C.tree_cpu(p) for k, p in pids.items()}
        time.sleep(10)
        t1, c1 = time.monotonic(), {k: C.tree_cpu(p) for k, p in pids.items()}
        out, _ = cli.communicate(timeout=120)
        print(f"goodput {json.loads(out)['end']['sum_received']['bits_per_second'] / 1e6:.2f} Mbit/s")
    finally:
        cfg.stop(topo)
        topo.stop_link()
for name, pid in pids.items():
    print(f"{name}: {100 * (c1[name] - c0[name]) / (t1 - t0):.1f} % of a core (from 12 to 22 s of the download)")
    for f in glob.glob("/tmp/poll-take-*.json"):
        a = json.load(open(f))
        if f.endswith(f"-{pid}.json") or any(f.endswith(f"-{c}.json") for c in C.descendants(pid)):
            n, p = a["n"], max(a["pkts_in"], 1)
            print(f"  {n} passes, {a['pkts_in']} packets ({a['pkts_fast']} in C), {a['pkts_in'] / n:.1f} a pass: "
                  f"poll {a['poll'] / n / 1e3:.1f} + take {a['take'] / n / 1e3:.1f} = "
                  f"{(a['poll'] + a['take']) / n / 1e3:.1f} us a pass, {(a['poll'] + a['take']) / p / 1e3:.2f} us a packet; "
                  f"whole pass {a['pass'] / n / 1e3:.1f} us")
