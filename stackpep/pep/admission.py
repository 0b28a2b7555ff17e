"""Who may open a split connection: embryonic connections and the rate of
server-leg opens, so a SYN flood does not deny service (RFC 4987).

An embryonic split connection is one not yet established on both legs (the
state every spoofed SYN makes).  `EmbryonicTable` keeps them in the order they
arrived, counted per source; when a limit is reached the dispatcher evicts the
oldest one (of the box, or of that source) rather than refusing the new SYN
(RFC 4987 §3.4, "random drop" / oldest-first: a real client's SYN is answered
within an RTT, a spoofed one never, so the oldest is the likeliest spoofed);
only when every candidate is younger than EVICT_GRACE_US is the new SYN dropped
instead (its sender retransmits).
A source is the client's IPv4 address or IPv6 /64 (one host's usual share).

`OpenLimiter` bounds the rate at which the box opens server legs, in total
and per source: a token bucket each (`stackpep.pep.reset.TokenBucket`), so
spoofed SYNs cannot turn the box into a relay that fills servers' accept
queues faster than the configured rate.  A SYN over the rate is dropped
(counted); the client's own SYN retransmission tries again.

Sans-IO: `now` (int µs) comes in.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, Optional

from stackpep.pep.reset import ResetLimiter, ResetLimits

ADMISSION_COUNTERS = (
    "evicted_embryonic",  # max_embryonic reached: the box's oldest embryonic connection made room
    "evicted_embryonic_per_source",  # max_embryonic_per_source reached: that source's oldest made room
    "evicted_embryonic_table_full",  # max_connections reached: the oldest embryonic connection made room
    "drop_embryonic_full",  # max_embryonic (or max_connections) reached and no embryonic connection past its grace period
    "drop_server_open_rate_total",  # SYN (or verified cookie ACK) over server_opens_per_second
    "drop_server_open_rate_per_source",  # ... over server_opens_per_second_per_source
)


#: An embryonic connection is not evicted before it is this old (µs): a real client
#: on a LAN answers a SYN-ACK well within it, and a burst of SYNs read in one
#: batch cannot push out the real client whose SYN came just before it.
EVICT_GRACE_US = 100_000


def source_prefix(addr: bytes) -> bytes:
    """The unit a per-source limit counts: an IPv4 address, an IPv6 /64."""
    return addr if len(addr) == 4 else addr[:8]


class EmbryonicTable:
    """Embryonic connections by flow key, oldest first, with a count per source."""

    __slots__ = ("_entries", "_per_source")

    def __init__(self) -> None:
        self._entries: "OrderedDict[bytes, tuple]" = OrderedDict()  # key -> (conn, source)
        self._per_source: Dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def add(self, key: bytes, conn: Any, source: bytes) -> None:
        self.discard(key)
        self._entries[key] = (conn, source)
        self._per_source[source] = self._per_source.get(source, 0) + 1

    def discard(self, key: bytes, conn: Any = None) -> None:
        """Forget `key` (only if it is `conn`'s entry, when given)."""
        entry = self._entries.get(key)
        if entry is None or (conn is not None and entry[0] is not conn):
            return
        del self._entries[key]
        src = entry[1]
        n = self._per_source[src] - 1
        if n:
            self._per_source[src] = n
        else:
            del self._per_source[src]

    def count(self, source: bytes) -> int:
        return self._per_source.get(source, 0)

    def oldest(self, source: Optional[bytes] = None) -> Any:
        """The oldest embryonic connection (of `source`, when given), or None."""
        if source is None:
            for conn, _ in self._entries.values():
                return conn
            return None
        if source not in self._per_source:
            return None
        for conn, src in self._entries.values():  # per-source limit: scans at most the table
            if src == source:
                return conn
        return None

    def victim(self, now: int, grace_us: int = EVICT_GRACE_US, scan: int = 64) -> Any:
        """Whom a full table evicts, or None (then the new SYN is dropped,
        `drop_embryonic_full`): among the `scan` oldest that are at least
        `grace_us` old, the oldest whose SYN-ACK is unanswered (`awaits_peer`: what
        a SYN flood leaves), else the oldest of those.  A real client held up by a
        slow server is thus not evicted before a spoofed source that never answered
        (RFC 4987 §3.4 "SYN cache": evict the least likely to complete), and no
        connection is evicted before it had the grace period to complete its
        handshake: a burst of SYNs taken in one batch (none answered yet, all
        alike) would otherwise evict a real client whose SYN came just before it.
        The scan is bounded, so a SYN costs O(scan) at most."""
        first = None
        for i, (conn, _) in enumerate(self._entries.values()):
            if i >= scan or now - conn.created < grace_us:
                break  # (oldest first: the rest are younger still)
            if first is None:
                first = conn
            if conn.awaits_peer:
                return conn
        return first

    def sources(self) -> int:
        return len(self._per_source)


@dataclass(frozen=True)
class AdmissionLimits:
    """[limits] max_embryonic, max_embryonic_per_source, server_opens_per_second(_per_source)."""

    max_embryonic: int = 2048
    max_embryonic_per_source: int = 256
    server_opens_per_second: float = 5000.0
    server_opens_per_second_per_source: float = 1000.0
    max_sources: int = 65536  # per-source rate buckets kept (oldest forgotten first)

    @classmethod
    def from_config(cls, config: Any) -> "AdmissionLimits":
        return cls(max_embryonic=config.max_embryonic, max_embryonic_per_source=config.max_embryonic_per_source,
                   server_opens_per_second=config.server_opens_per_second,
                   server_opens_per_second_per_source=config.server_opens_per_second_per_source)


class OpenLimiter:
    """Token buckets for server-leg opens, one per source and one overall, each
    holding one second's worth; `allow(source, now)` is "sent" (take it),
    "per_source" or "total" (the counter suffix)."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self._limiter = ResetLimiter(self._buckets(limits))

    @staticmethod
    def _buckets(lim: AdmissionLimits) -> ResetLimits:
        return ResetLimits(rate=lim.server_opens_per_second, burst=max(1, int(lim.server_opens_per_second)),
                           per_source_rate=lim.server_opens_per_second_per_source,
                           per_source_burst=max(1, int(lim.server_opens_per_second_per_source)),
                           max_sources=lim.max_sources)

    def reconfigure(self, limits: AdmissionLimits) -> None:
        self._limiter.reconfigure(self._buckets(limits))

    def allow(self, source: bytes, now: int) -> str:
        return self._limiter.allow(source, now)
