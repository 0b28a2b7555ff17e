"""Per-wake-up CPU of the dispatcher's ring reads and deliveries, for
benchmarks/poll_take/run.py: put this folder on PYTHONPATH with
POLL_TAKE_INSTRUMENT=1 and every stackpep box started from that environment adds
up thread_time_ns() spent in AfPacketPort.poll_batch / poll_fast ("poll"),
Dispatcher._take_batch / _take_fast ("take") and Dispatcher._pass ("pass", with
the count "n"), written to /tmp/poll-take-PID.json every 500 passes together with
the box's packets_in / packets_fast counters.  Works with builds that lack
poll_fast/_take_fast (a baseline).  The wrappers' own clock reads are included."""
import os
import sys

if os.environ.get("POLL_TAKE_INSTRUMENT") == "1":
    import builtins
    import json
    import time

    _orig_import = builtins.__import__
    _done = [False]
    acc = {"poll": 0, "take": 0, "pass": 0, "n": 0, "pkts_in": 0, "pkts_fast": 0}
    tt = time.thread_time_ns

    def _patch():
        from stackpep.io import ports as P
        from stackpep.pep import dispatcher as D

        def wrap(cls, name, bucket):
            f = getattr(cls, name, None)
            if f is None:
                return

            def w(*a, **k):
                t = tt()
                try:
                    return f(*a, **k)
                finally:
                    acc[bucket] += tt() - t
            setattr(cls, name, w)

        wrap(P.AfPacketPort, "poll_batch", "poll")
        wrap(P.AfPacketPort, "poll_fast", "poll")
        wrap(D.Dispatcher, "_take_batch", "take")
        wrap(D.Dispatcher, "_take_fast", "take")
        fp = D.Dispatcher._pass

        def p(self, *a, **k):
            t = tt()
            try:
                return fp(self, *a, **k)
            finally:
                acc["pass"] += tt() - t
                acc["n"] += 1
                if acc["n"] % 500 == 0:
                    acc["pkts_in"] = self.counters["packets_in"]
                    acc["pkts_fast"] = self.counters.get("packets_fast", 0)
                    with open(f"/tmp/poll-take-{os.getpid()}.json", "w") as fh:
                        json.dump(acc, fh)
        D.Dispatcher._pass = p

    def _import(name, *a, **k):
        m = _orig_import(name, *a, **k)
        if not _done[0] and hasattr(sys.modules.get("stackpep.pep.dispatcher"), "Dispatcher") \
                and hasattr(sys.modules.get("stackpep.io.ports"), "AfPacketPort"):
            _done[0] = True
            builtins.__import__ = _orig_import
            _patch()
        return m
    builtins.__import__ = _import
