"""Named rejection counters of the wire layer.

The counters live in C (stackpep._fast.wire) and are incremented by the parsers
themselves, so a packet rejected by the TCP engine, the capture path or a Repr
is counted once, by reason.  `counters.snapshot()` is an immutable mapping.
"""
from types import MappingProxyType
from typing import Mapping

from stackpep._fast import wire as _w


class WireCounters:
    """Module-level view of the rejection counters (one per WIRE_* error code)."""

    names = _w.COUNTER_NAMES

    def snapshot(self) -> Mapping[str, int]:
        """{counter name: count}, every counter present (zeros included)."""
        return MappingProxyType(_w.counter_values())

    def nonzero(self) -> Mapping[str, int]:
        return MappingProxyType({k: v for k, v in _w.counter_values().items() if v})

    def __getitem__(self, name: str) -> int:
        values = _w.counter_values()
        if name not in values:
            raise KeyError(name)
        return values[name]

    def reset(self) -> None:
        """Zero every counter (tests)."""
        _w.reset_counters()

    def __repr__(self) -> str:
        return f"WireCounters({dict(self.nonzero())})"


counters = WireCounters()
