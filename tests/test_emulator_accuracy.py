"""The link emulator through real namespaces, asserting only what holds on a loaded
machine: every probe arrives, in order, no earlier than the configured delay (how
much later is the machine's load: no wall-clock upper bound here); the rate is never exceeded by more than the
bytes the emulator's own send lateness lets through back to back; the surplus of
an overdriven link is dropped at the queue, by name (every frame in is a frame
out, a named drop or still queued).

How *accurate* the emulator is (delay error in µs, rate error, frames late under
TCP) depends on the machine's load: `stackpep testbed selftest` and
`benchmarks/emulator.py` measure and report it; the exact timing arithmetic is
tested on a virtual clock in tests/test_emulator.py.
"""
import os

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

DELAY_MS = 30.0


def test_probes_arrive_in_order_after_the_delay_and_the_rate_is_never_exceeded():
    from stackpep.testbed.selftest import measure

    results = measure(rates_mbit=(20, 100), delay_ms=DELAY_MS, duration=2.0, probes=100, progress=lambda s: None)
    assert [r.rate_mbit for r in results] == [20, 100]
    for r in results:
        assert r.probes == 100, r  # every probe crossed the lossless link
        assert r.probes_reordered == 0, r
        # error = one-way time - (delay + the probe's serialization); the relay never
        # sends a frame before its departure time (0.1 ms: timestamping granularity)
        assert r.delay_error_min_ms >= -0.1, r
        assert r.measured_rate_mbit <= r.rate_mbit + r.rate_allowance_mbit(), r
        # The stream is sent 10 % above the link rate; whatever surplus reached the
        # queue (how much depends on how fast a loaded machine could send) was dropped
        # there, by name: every frame that came in went out, is counted as a drop, or
        # was still in the delay line when the statistics were taken.
        ret = r.link["return"]
        in_link = ret["frames_in"] - ret["frames_out"] - sum(ret["drops"].values())
        assert 0 <= in_link <= r.link["queued_frames"], r.link
        assert ret["drops"]["oversize"] == 0 and ret["drops"]["send_error"] == 0, ret
