"""Progress of a testbed run on the terminal: one line per workload, ticking
while it runs (used by stackpep.testbed.scenarios.run_matrix and the report)."""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Dict, Optional


class _Step:
    result: Optional[Dict] = None

    def done(self, result: Dict) -> None:
        self.result = result


def summarize(res: Dict) -> str:
    if res.get("error"):
        return f"error: {res['error']}"
    if "goodput_bps" in res and res["workload"].startswith("bulk"):
        return f"{res['goodput_bps'] / 1e6:7.2f} Mbit/s"
    med = res.get("median_s")
    inc = f", {res['incomplete']} incomplete" if res.get("incomplete") else ""
    if med is None:
        return f"no complete transfer{inc}"
    return f"median {med:6.2f} s of {res.get('complete')}{inc}"


class Progress:
    """One line per workload; on a terminal the line ticks while it runs."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.i = 0
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _prefix(self, sc, cfg, name) -> str:
        return f"[{self.i:>2}/{self.total}] {sc.name:<22} {cfg.name:<19} {name:<14}"

    @contextlib.contextmanager
    def step(self, sc, cfg, wl):
        self.i += 1
        rtt = sc.link.rtt_ms() / 1000
        prefix = self._prefix(sc, cfg, wl.name)
        est = wl.estimate_s(rtt)
        t0 = time.monotonic()
        stop = threading.Event()
        step = _Step()
        if self.tty:
            def tick():
                while not stop.wait(0.5):
                    self.stream.write(f"\r{prefix} {time.monotonic() - t0:5.0f} s (~{est:.0f} s)")
                    self.stream.flush()
            th = threading.Thread(target=tick, daemon=True)
            th.start()
        else:
            self.stream.write(f"{prefix} running (~{est:.0f} s)\n")
            self.stream.flush()
        try:
            yield step
        finally:
            stop.set()
            took = time.monotonic() - t0
            summary = summarize(step.result) if step.result is not None else "failed"
            cr = "\r\033[K" if self.tty else ""
            self.stream.write(f"{cr}{prefix} {summary}  [{took:.0f} s]\n")
            self.stream.flush()

    def skip(self, sc, cfg, reason: str, n: int) -> None:
        self.i += n
        self.stream.write(f"[{self.i:>2}/{self.total}] {sc.name:<22} {cfg.name:<19} not available: {reason}\n")
        self.stream.flush()

    def note(self, msg: str) -> None:
        self.stream.write(f"  {msg}\n")
        self.stream.flush()
