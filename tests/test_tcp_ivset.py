"""The interval set behind the out-of-order queue and the SACK scoreboard
(stackpep/_fast/ivset.pxi), through its test-only wrapper; the engine's use of it
is covered by the sack/ and seq/ .pkt scripts."""
from __future__ import annotations

import random

from stackpep._fast.tcp import _IntervalSet


def test_add_merges_overlapping_and_touching_intervals():
    s = _IntervalSet()
    assert s.add(10, 20) and s.add(30, 40) and s.add(50, 60)
    assert s.items() == [(10, 20), (30, 40), (50, 60)]
    assert s.add(20, 30)                      # touches both neighbours: one interval
    assert s.items() == [(10, 40), (50, 60)]
    assert s.add(5, 55)                       # swallows everything it overlaps
    assert s.items() == [(5, 60)]
    assert s.add(70, 80) and s.add(0, 1)
    assert s.items() == [(0, 1), (5, 60), (70, 80)]
    assert s.total() == 1 + 55 + 10


def test_age_marks_the_most_recently_changed_interval():
    # RFC 2018 §4: the block holding the latest segment is reported first
    s = _IntervalSet()
    s.add(10, 20)
    s.add(30, 40)
    s.add(40, 45)                             # extends the second one
    ages = s.ages()
    assert s.items() == [(10, 20), (30, 45)] and ages[1] > ages[0]
    s.add(12, 15)                             # inside the first: it is the newest now
    assert s.ages()[0] > s.ages()[1]


def test_full_set_refuses_a_new_interval_but_still_merges():
    n = _IntervalSet.CAPACITY
    # 256: the holes of one round trip at 5 % loss on a 600 ms, 50 Mbit/s link (~130)
    # fit in the receiver's out-of-order queue; with 64 the receiver dropped what
    # would have made a 65th interval and the sender sent 5 MB again for 5 MB
    assert n == 256
    s = _IntervalSet()
    for i in range(n):
        assert s.add(10 * i, 10 * i + 5)
    assert len(s) == n
    assert not s.add(10 * n, 10 * n + 1)      # would need one interval more
    assert len(s) == n and (10 * n, 10 * n + 1) not in s.items()
    assert s.add(5, 10)                       # joins two: fits
    assert len(s) == n - 1 and s.items()[0] == (0, 15)


def test_merge_front_advances_the_edge_over_queued_intervals():
    s = _IntervalSet()
    s.add(100, 200)
    s.add(250, 300)
    assert s.merge_front(50) == (False, 50)
    assert s.merge_front(100) == (True, 200)  # RCV.NXT reaches a queued segment
    assert s.items() == [(250, 300)]
    s.add(260, 400)
    assert s.merge_front(280) == (True, 400)  # a segment that overlaps the queue
    assert len(s) == 0


def test_trim_below_forgets_acknowledged_offsets():
    s = _IntervalSet()
    s.add(10, 20)
    s.add(30, 40)
    s.add(50, 60)
    assert s.trim_below(35) == 10 + 5         # SND.UNA moved into the second block
    assert s.items() == [(35, 40), (50, 60)]
    assert s.trim_below(0) == 0
    assert s.trim_below(100) == 15 and len(s) == 0


def test_queries():
    s = _IntervalSet()
    s.add(10, 20)
    s.add(30, 40)
    assert s.skip(15) == 20 and s.skip(20) == 20 and s.skip(5) == 5 and s.skip(30) == 40
    assert s.next_start(5) == 10 and s.next_start(10) == 30 and s.next_start(30) == 1 << 62
    assert s.covered(0, 100) == 20 and s.covered(15, 35) == 10 and s.covered(20, 30) == 0


def test_matches_a_model_on_random_input():
    rng = random.Random(7)
    for _ in range(200):
        s = _IntervalSet()
        model = set()
        for _ in range(rng.randrange(1, 40)):
            lo = rng.randrange(0, 500)
            hi = lo + rng.randrange(1, 30)
            assert s.add(lo, hi)
            model.update(range(lo, hi))
        items = s.items()
        assert sorted(items) == items
        assert all(r1 < l2 for (_, r1), (l2, _) in zip(items, items[1:]))   # disjoint, not touching
        assert {x for lo, hi in items for x in range(lo, hi)} == model
        edge = rng.randrange(0, 520)
        assert s.trim_below(edge) == len({x for x in model if x < edge})
        assert s.total() == len({x for x in model if x >= edge})
