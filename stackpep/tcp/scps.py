"""Destinations that refused SCPS-TP's option 20, remembered for a while (sans-IO).

Some end hosts or middleboxes reset or drop a SYN that carries the SCPS
capabilities option (CCSDS 714.0-B-2 §3.2.3; see docs/scps.md).  The engine
retries such a SYN without the option by itself and reports it with a
``ScpsFallback`` event; a caller that opens many connections keeps the
destination here, so that the next connections to it go out without option 20
at once (``TcpConnection.connect(now, scps_offer=False)``) until ``ttl_us``
has passed.  Times are integer microseconds passed in; nothing here reads a clock.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

__all__ = ["ScpsRefusals"]


class ScpsRefusals:
    """A bounded map destination -> expiry time (least recently added dropped first)."""

    def __init__(self, ttl_us: int, max_entries: int = 4096) -> None:
        if ttl_us <= 0 or max_entries < 1:
            raise ValueError("ttl_us must be > 0 and max_entries >= 1")
        self.ttl_us = ttl_us
        self.max_entries = max_entries
        self._until: "OrderedDict[Hashable, int]" = OrderedDict()
        self.evicted = 0   # entries dropped because the map was full

    def remember(self, dest: Hashable, now: int) -> None:
        """``dest`` (e.g. (address, port) or an address) refused option 20 at ``now``."""
        self._until.pop(dest, None)
        self._until[dest] = now + self.ttl_us
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)
            self.evicted += 1

    def refused(self, dest: Hashable, now: int) -> bool:
        """Whether to open connections to ``dest`` without option 20 at ``now``."""
        until = self._until.get(dest)
        if until is None:
            return False
        if now >= until:
            del self._until[dest]
            return False
        return True

    def forget(self, dest: Hashable) -> None:
        self._until.pop(dest, None)

    def expire(self, now: int) -> int:
        """Drop every entry expired at ``now``; returns how many."""
        dead = [d for d, t in self._until.items() if now >= t]
        for d in dead:
            del self._until[d]
        return len(dead)

    def __len__(self) -> int:
        return len(self._until)
