"""The link emulator's accuracy self-test, in short runs: at 20, 50 and 100 Mbit/s
the one-way delay stays within 1 ms of the setting and the rate within 2 %, and
under a TCP download at most 1 % of the frames leave more than 1 ms late."""
import os

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def test_delay_within_1ms_and_rate_within_2_percent():
    from stackpep.testbed.selftest import measure

    results = measure(rates_mbit=(20, 50, 100), delay_ms=30.0, duration=2.0, probes=100, progress=lambda s: None,
                      tcp_seconds=3.0)
    assert [r.rate_mbit for r in results] == [20, 50, 100]
    for r in results:
        assert r.probes == 100, r  # every probe crossed the lossless link
        assert abs(r.delay_error_median_ms) <= 1.0, r
        assert r.delay_error_p95_ms <= 1.0, r
        assert abs(r.rate_error) <= 0.02, r
        # The stream overdrove the link by 10 %: the surplus was dropped at the queue, by name.
        ret = r.link["return"]
        assert ret["drops"]["queue"] > 0
        assert ret["drops"]["oversize"] == 0 and ret["drops"]["send_error"] == 0
        # Real TCP (bursts at veth speed, ACKs the other way): >= 99 % of frames on time.
        assert r.tcp_goodput_mbit > 0.5 * r.rate_mbit * 1448 / 1500, r
        assert r.tcp_frames > 1000 and r.tcp_late_over_1ms <= 0.01 * r.tcp_frames, r
