"""The link emulator's sans-IO core: frame sizes and times in, departures or drop
reasons out.  Times are seconds; 1500-byte IP packets are 1514-byte frames."""
import json
import math
import threading

import pytest

from stackpep.testbed.emulator import DirectionParams, LinkDirection, Outage, StatsFile, netem_args

FRAME = 1514  # 1500 IP bytes + 14 Ethernet


def link(spec: str, seed: int = 1, outages=()) -> LinkDirection:
    return LinkDirection(DirectionParams.parse(spec), seed=seed, outages=outages)


def test_delay_only_departs_exactly_delay_later():
    d = link("delay=300ms")
    assert d.admit(FRAME, 10.0) == pytest.approx(10.3)
    assert d.admit(100, 10.5) == pytest.approx(10.8)
    assert d.drops == {r: 0 for r in d.drops}


def test_rate_serializes_ip_bytes_back_to_back():
    # 20 Mbit/s: 1500 IP bytes take 600 µs; three frames arriving together leave 600 µs apart.
    d = link("delay=10ms,rate=20mbit")
    deps = [d.admit(FRAME, 1.0) for _ in range(3)]
    assert deps == pytest.approx([1.0106, 1.0112, 1.0118])
    # An idle link starts serializing at arrival, not at the end of old work.
    assert d.admit(FRAME, 2.0) == pytest.approx(2.0106)


def test_queue_limit_in_bytes_is_drop_tail():
    # 3000-byte queue: the backlog (bytes still to serialize) may not exceed it.
    d = link("rate=1mbit,queue=3000")
    results = [d.admit(FRAME, 0.0) for _ in range(4)]
    assert [r is not None for r in results] == [True, True, False, False]
    assert d.drops["queue"] == 2
    # After 12 ms one frame is fully sent (1500 B at 1 Mbit/s = 12 ms): room for one more.
    assert d.admit(FRAME, 0.012) is not None
    assert d.admit(FRAME, 0.012) is None
    assert d.drops["queue"] == 3


def test_queue_limit_in_ms_converts_with_rate():
    # 10 Mbit/s x 6 ms = 7500 bytes: five 1500-byte packets fit, the sixth does not.
    d = link("rate=10mbit,queue=6ms")
    ok = [d.admit(FRAME, 0.0) is not None for _ in range(6)]
    assert ok == [True] * 5 + [False]
    assert d.p.queue_limit_bytes() == pytest.approx(7500)


def test_random_loss_is_seeded_and_near_its_rate():
    a = link("loss=0.01", seed=7)
    b = link("loss=0.01", seed=7)
    fate_a = [a.admit(FRAME, i * 1e-3) is None for i in range(100_000)]
    fate_b = [b.admit(FRAME, i * 1e-3) is None for i in range(100_000)]
    assert fate_a == fate_b  # same seed, same frames lost
    assert 900 <= a.drops["loss"] <= 1100  # 1 % of 100 000 (binomial sd ~31)
    c = link("loss=0.01", seed=8)
    assert [c.admit(FRAME, i * 1e-3) is None for i in range(100_000)] != fate_a


def test_lost_frames_still_used_the_link():
    # Capacity of a lossy link is rate x (1 - loss): a lost frame occupied its slot.
    d = link("rate=12mbit,loss=1")
    assert d.admit(FRAME, 0.0) is None
    assert d.link_free == pytest.approx(0.001)  # 1500 B at 12 Mbit/s


def test_bit_errors_lose_long_frames_more_often():
    ber = 1e-5
    d = link(f"ber={ber}", seed=3)
    n = 50_000
    for i in range(n):
        d.admit(FRAME, i * 1e-3)
    long_lost = d.drops["ber"]
    d2 = link(f"ber={ber}", seed=3)
    for i in range(n):
        d2.admit(14 + 64, i * 1e-3)
    short_lost = d2.drops["ber"]
    p_long = 1 - (1 - ber) ** (8 * 1500)  # 0.113
    p_short = 1 - (1 - ber) ** (8 * 64)  # 0.0051
    assert abs(long_lost / n - p_long) < 0.01
    assert abs(short_lost / n - p_short) < 0.002


def test_gilbert_elliott_losses_come_in_bursts():
    # Good state lossless, bad state loses everything; mean bad run 1/r = 5 frames.
    d = link("ge_p=0.01,ge_r=0.2,ge_loss_bad=1", seed=5)
    fates = [d.admit(FRAME, i * 1e-3) is None for i in range(200_000)]
    lost = sum(fates)
    runs = sum(1 for i in range(1, len(fates)) if fates[i] and not fates[i - 1])
    # Stationary P(bad) = p / (p + r) = 0.0476; mean burst length = 1 / r = 5.
    assert abs(lost / len(fates) - 0.01 / 0.21) < 0.006
    assert 4.0 < lost / runs < 6.0
    assert d.drops["burst"] == lost and d.drops["loss"] == 0


def test_jitter_varies_delay_but_never_reorders():
    d = link("delay=50ms,jitter=10ms", seed=2)
    deps = [d.admit(200, i * 1e-4) for i in range(5000)]
    assert all(b >= a for a, b in zip(deps, deps[1:]))
    extra = [dep - i * 1e-4 for i, dep in enumerate(deps)]
    assert min(extra) >= 0.040 - 1e-9 and max(extra) <= 0.060 + 1e-3
    assert max(extra) - min(extra) > 0.015  # it does vary ...
    assert abs(sum(extra) / len(extra) - 0.050) < 0.004  # ... around the set delay


def test_outages_drop_only_inside_their_windows():
    once = Outage.parse("20:10")
    d = link("delay=1ms", outages=[once])
    assert d.admit(FRAME, 19.999) is not None
    assert d.admit(FRAME, 20.0) is None
    assert d.admit(FRAME, 29.99) is None
    assert d.admit(FRAME, 30.0) is not None
    assert d.drops["outage"] == 2
    periodic = Outage.parse("5:0.3/15")
    assert [periodic.down(t) for t in (4.9, 5.0, 5.29, 5.31, 19.9, 20.1, 35.2)] == \
        [False, True, True, False, False, True, True]


def test_an_operator_outage_drops_until_released():
    # Topology.link_down()/link_up() (SIGUSR1/SIGUSR2 to the emulator) set `down`
    d = link("delay=1ms")
    assert d.admit(FRAME, 1.0) == 1.001
    d.down = True
    assert d.admit(FRAME, 2.0) is None and d.admit(FRAME, 500.0) is None
    d.down = False
    assert d.admit(FRAME, 501.0) == 501.001
    assert d.drops["outage"] == 2 and d.frames_in == 4


def test_oversize_super_frames_are_dropped_and_counted():
    d = link("delay=1ms")
    assert d.admit(65000, 0.0) is None
    assert d.admit(1514, 0.0) is not None
    assert d.drops["oversize"] == 1
    st = d.statistics()
    assert st["frames_in"] == 2 and st["ip_bytes_in"] == 65000 - 14 + 1500


@pytest.mark.parametrize("spec, field, value", [
    ("rate=20mbit", "rate_bps", 20e6), ("rate=500kbit", "rate_bps", 5e5), ("rate=1.5G", "rate_bps", 1.5e9),
    ("delay=0.3s", "delay_ms", 300.0), ("delay=250us", "delay_ms", 0.25), ("loss=1%", "loss", 0.01),
    ("queue=250ms", "queue_ms", 250.0), ("queue=100k", "queue_bytes", 100_000), ("queue=1500", "queue_bytes", 1500),
])
def test_spec_parsing(spec, field, value):
    assert getattr(DirectionParams.parse(spec), field) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["loss=2", "delay=-1", "nonsense=1", "rate"])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError):
        DirectionParams.parse(bad)


def test_spec_round_trips():
    p = DirectionParams.parse("delay=300ms,rate=20mbit,queue=250ms,loss=0.01,jitter=2ms,ge_p=0.001")
    assert DirectionParams.parse(p.spec()) == p


def test_netem_arguments_cover_delay_rate_loss_and_limit():
    args = netem_args(DirectionParams.parse("delay=300ms,rate=20mbit,queue=250ms,loss=1%"))
    assert args[:2] == ["delay", "300ms"]
    assert args[args.index("loss") + 1:args.index("loss") + 3] == ["random", "1%"]
    assert args[args.index("rate") + 1] == "20000000bit"
    # the packet limit holds the queue plus the delay line (~1.2 MB at 20 Mbit/s)
    assert int(args[args.index("limit") + 1]) > 1_000_000 // 1500


def test_a_stalled_statistics_write_does_not_hold_the_relay(tmp_path):
    # The relay wrote its counters itself, once a second: a file system stall of
    # 121 ms (678 ms in another run) held every frame in the delay line that long,
    # and a 100 KB fetch over the GEO link took a round trip more.  Now a thread
    # writes them; the relay only hands over the newest text.
    path = tmp_path / "emulator-stats.json"
    sf = StatsFile(str(path))
    gate, writing, written = threading.Event(), threading.Event(), []
    real = sf._write

    def stalled(text):  # the file system, stuck until the test lets it go
        writing.set()
        gate.wait()
        written.append(text)
        real(text)

    sf._write = stalled
    sf.submit(json.dumps({"n": 1}))
    assert writing.wait(10)           # the thread is inside the stalled write ...
    sf.submit(json.dumps({"n": 2}))   # ... and the relay goes on handing over counters:
    sf.submit(json.dumps({"n": 3}))   # submit() returned while the write is stuck
    assert written == [] and not path.exists()
    gate.set()
    sf.close(json.dumps({"n": 4}))    # what was pending, then the final counters, synchronously
    assert [json.loads(t)["n"] for t in written] == [1, 3, 4]  # 2 was replaced by 3 while stuck
    assert json.loads(path.read_text()) == {"n": 4}
    assert not (tmp_path / "emulator-stats.json.tmp").exists()
