"""The box's one timer heap (stackpep.pep.timers), sans-IO on a virtual clock:
exact order of expiry, stale entries skipped, a deadline moved earlier or later,
cancelled, released; the heap compacted when stale entries pile up."""
from __future__ import annotations

from stackpep.pep import timers as tmod
from stackpep.pep.timers import TimerHandle, Timers


def handles(*names):
    return [TimerHandle(n) for n in names]


def test_expiry_in_deadline_order_equal_deadlines_in_filing_order():
    t = Timers()
    a, b, c, d = handles("a", "b", "c", "d")
    t.schedule(c, 3000)
    t.schedule(a, 1000)
    t.schedule(d, 2000)
    t.schedule(b, 2000)  # same deadline as d, filed after it
    assert t.next_due() == 1000
    assert t.expired(999) == []
    assert t.expired(2000) == ["a", "d", "b"]
    assert t.next_due() == 3000 and t.live == 1
    assert t.expired(10_000) == ["c"]
    assert t.next_due() is None and t.live == 0 and len(t) == 0
    assert t.counters["timers_expired"] == 4


def test_an_expired_handle_is_not_expired_again_until_filed_again():
    t = Timers()
    (a,) = handles("a")
    t.schedule(a, 100)
    assert t.expired(100) == ["a"]
    assert t.expired(1_000_000) == []
    t.schedule(a, 2_000_000)  # its owner's next deadline
    assert t.expired(1_999_999) == [] and t.expired(2_000_000) == ["a"]


def test_deadline_moved_earlier_the_old_entry_is_skipped():
    t = Timers()
    a, b = handles("a", "b")
    t.schedule(a, 5000)
    t.schedule(b, 3000)
    t.schedule(a, 1000)  # earlier: a new entry, the one at 5000 goes stale
    assert len(t) == 3 and t.live == 2
    assert t.next_due() == 1000
    assert t.expired(4000) == ["a", "b"]
    # the stale entry at 5000 comes up and is skipped: a is not run twice
    assert t.expired(6000) == []
    assert t.next_due() is None and len(t) == 0


def test_deadline_moved_later_costs_no_entry_and_is_exact():
    t = Timers()
    a, b = handles("a", "b")
    t.schedule(a, 1000)
    t.schedule(b, 2000)
    filed = t.counters["timers_filed"]
    t.schedule(a, 3000)  # later: the entry at 1000 stays (no push now) ...
    t.schedule(a, 2500)  # ... and moving it around later still pushes nothing
    assert t.counters["timers_filed"] == filed and len(t) == 2
    # ... but the next deadline is exact: 2000 (b), not the stale 1000 of a
    assert t.next_due() == 2000
    assert t.counters["timers_refiled"] == 1
    assert t.expired(2000) == ["b"]
    assert t.expired(2499) == [] and t.expired(2500) == ["a"]


def test_moved_later_but_still_due_is_run_once_in_its_order():
    t = Timers()
    a, b = handles("a", "b")
    t.schedule(a, 1000)
    t.schedule(b, 1500)
    t.schedule(a, 2000)  # later than b now
    assert t.expired(5000) == ["b", "a"]
    assert t.live == 0 and len(t) == 0


def test_cancel_and_none_leave_nothing_due():
    t = Timers()
    a, b = handles("a", "b")
    t.schedule(a, 1000)
    t.schedule(b, 2000)
    t.cancel(a)
    t.schedule(b, None)
    assert t.live == 0 and a.due is None and b.due is None
    assert t.next_due() is None and t.expired(10_000) == []
    # a cancelled handle files again like a new one
    t.schedule(a, 20_000)
    assert t.live == 1 and t.expired(20_000) == ["a"]


def test_release_drops_the_owner_its_stale_entry_is_skipped():
    t = Timers()
    (a,) = handles("owner")
    t.schedule(a, 1000)
    t.release(a)
    assert a.owner is None and t.live == 0
    assert t.expired(1000) == []


def test_stale_entries_are_compacted_away():
    t = Timers()
    hs = handles(*range(10))
    # every handle's deadline moved earlier many times: one stale entry per move
    for step in range(200):
        for i, h in enumerate(hs):
            t.schedule(h, 1_000_000 - step * 100 + i)
    assert t.live == 10
    assert t.counters["timers_compactions"] > 0
    assert len(t) <= max(tmod.COMPACT_MIN, tmod.COMPACT_FACTOR * t.live) + 1
    # still exact: each handle once, at its last deadline, in order
    last = 1_000_000 - 199 * 100
    assert t.next_due() == last
    assert t.expired(2_000_000) == list(range(10))
