"""The box's one timer structure: every split connection's next deadline (µs) in
one heap, served by the dispatcher's loop (stackpep.pep.dispatcher).

Sans-IO: no clock inside; the caller says what time it is.

A connection owns a `TimerHandle` and files its next deadline with
`Timers.schedule` after every turn (the engines' timers, pacing, its handshake
and idle limits, zero-RTT wait: `SplitConnection._wake_time`, already rounded up
to the wake-up grid).  The heap holds (deadline, seq, handle) entries, at most
one of them *live* per handle (the handle's `seq`); the others are stale and
skipped when they come up (lazy deletion, as trio's own deadline heap and
Linux's hrtimers in the "cancel is cheap" style):

- a deadline moved *earlier* pushes a new entry (the old one goes stale);
- a deadline moved *later* pushes nothing: the live entry stays, and when it
  comes up the handle is filed again at its real deadline without its owner
  being run (a busy connection moves its retransmission deadline later with
  nearly every ACK: RFC 6298 §5.3);
- `cancel` makes the live entry stale.

So a deadline that keeps moving costs one comparison per move, and entries do
not pile up: once stale entries outnumber live ones COMPACT_FACTOR to one the
heap is rebuilt from the live ones.  Expiry order is the deadlines' order; equal
deadlines in the order they were filed.
"""
from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any, List, Optional, Tuple

#: Rebuild the heap once it holds this many times more entries than live ones
#: (and more than COMPACT_MIN entries).
COMPACT_FACTOR = 4
COMPACT_MIN = 256


class TimerHandle:
    """One owner's place in `Timers`: `due` is the deadline it asked for (µs, or
    None), `at` and `seq` identify its live heap entry (seq 0: none)."""

    __slots__ = ("owner", "due", "at", "seq")

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.due: Optional[int] = None
        self.at = 0
        self.seq = 0

    def __repr__(self) -> str:
        return f"<TimerHandle {self.owner!r} due={self.due}>"


class Timers:
    __slots__ = ("_heap", "_seq", "live", "counters")

    def __init__(self) -> None:
        self._heap: List[Tuple[int, int, TimerHandle]] = []
        self._seq = 0
        self.live = 0  # handles with a live entry
        self.counters = {"timers_filed": 0, "timers_expired": 0, "timers_refiled": 0, "timers_compactions": 0}

    def __len__(self) -> int:
        """Entries in the heap, stale ones included."""
        return len(self._heap)

    def schedule(self, h: TimerHandle, due: Optional[int]) -> None:
        """`h` wants its owner run at `due` (µs; None: no deadline)."""
        h.due = due
        if due is None:
            if h.seq:
                h.seq = 0
                self.live -= 1
            return
        if h.seq:
            if h.at <= due:
                return  # later or unchanged: the live entry comes first and re-files it
        else:
            self.live += 1
        self._push(h, due)

    def cancel(self, h: TimerHandle) -> None:
        """No deadline for `h` (its live entry, if any, goes stale)."""
        self.schedule(h, None)

    def release(self, h: TimerHandle) -> None:
        """`h`'s owner is gone: cancelled, and its stale entries no longer keep the
        owner alive."""
        self.cancel(h)
        h.owner = None

    def _push(self, h: TimerHandle, due: int) -> None:
        self._seq += 1
        h.seq = self._seq
        h.at = due
        heap = self._heap
        heappush(heap, (due, self._seq, h))
        self.counters["timers_filed"] += 1
        if len(heap) > COMPACT_MIN and len(heap) > COMPACT_FACTOR * self.live:
            heap[:] = [e for e in heap if e[2].seq == e[1]]  # in place: callers hold the list
            heapify(heap)
            self.counters["timers_compactions"] += 1

    def next_due(self) -> Optional[int]:
        """The earliest deadline (µs), or None: stale entries on top are dropped and
        a deadline moved later is re-filed, so this is exact."""
        heap = self._heap
        while heap:
            at, seq, h = heap[0]
            if h.seq != seq:
                heappop(heap)
                continue
            if h.due != at:  # moved later (schedule: lazily)
                heappop(heap)
                self.counters["timers_refiled"] += 1
                self._push(h, h.due)
                continue
            return at
        return None

    def expired(self, now: int) -> List[Any]:
        """The owners whose deadline is at or before `now`, earliest first; their
        entries are gone (they file a new deadline when they have one)."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, seq, h = heappop(heap)
            if h.seq != seq:
                continue  # stale
            if h.due != at:  # moved later: filed again (it may still be due now)
                self.counters["timers_refiled"] += 1
                self._push(h, h.due)
                continue
            h.seq = 0
            self.live -= 1
            out.append(h.owner)
        self.counters["timers_expired"] += len(out)
        return out
