"""What a box keeps about SCPS-TP on its long link (the `[wan]` leg): connection
ids, destinations that refused option 20, and the counters (docs/scps.md, "The PEP").

Peer detection needs no protocol of its own (CCSDS 714.0-B-2, notes "Peer detection"): the long
leg's SYN offers the capabilities option (20); a far end that answers it in its
SYN-ACK is another box or any SCPS gateway, and the features both offered apply;
no option 20 in the SYN-ACK means a plain TCP end, and the leg runs as tuned TCP
(one-sided mode).  The engine does the negotiation and the retry without option
20; this object decides what each new long leg offers and records what happened.

Sans-IO: times are integer microseconds passed in.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Hashable, Optional, Tuple

from stackpep.tcp.scps import ScpsRefusals

__all__ = ["ScpsLink", "SCPS_COUNTERS", "CONN_IDS"]

#: Option 20 carries the connection id in one byte (CCSDS 714.0-B-2 §3.2.3); header
#: compression names the connection by it.
CONN_IDS = 256

SCPS_COUNTERS = (
    "scps_offered",  # long legs whose SYN (ours or the far end's) carried option 20
    "scps_peers",  # ... whose far end answered it: an SCPS peer, the features both offered apply
    "scps_one_sided",  # long legs established without an SCPS peer (plain TCP far end)
    "scps_fallbacks",  # our SYN was sent again without option 20 (RST or silence: ScpsFallback)
    "scps_refusals_remembered",  # ... and that SYN was answered: the destination goes to the refusal cache
    "scps_not_offered_refused",  # long legs opened without option 20: the destination is in the refusal cache
    "scps_compressed_legs",  # long legs whose packets go with compressed headers (both ends offered 0x10)
    "scps_conn_ids_shared",  # all 256 connection ids were in use: one was given to a second live connection
)


class ScpsLink:
    """One per box with a `[wan]` leg that has SCPS on (`PepConfig.wan_scps`)."""

    def __init__(self, settings: Dict[str, Any], refusal_ttl_us: int, counters: Dict[str, int],
                 max_refusals: int = 4096, hc_table: Any = None, slot: Tuple[int, int] = (0, 1)) -> None:
        from stackpep.tcp.config import ScpsSettings

        self.settings = ScpsSettings(**settings)
        self.refusals = ScpsRefusals(refusal_ttl_us, max_refusals)
        self.counters = counters
        # a box with several workers splits the ids: worker i of n uses i, i + n, i + 2n, ...
        index, count = slot
        self._ids = list(range(index % max(count, 1), CONN_IDS, max(count, 1)))
        self._live = [0] * CONN_IDS  # live connections per connection id
        self._next = 0  # index into _ids
        self._configs: Dict[tuple, Any] = {}
        # receive contexts of header compression, shared with the long leg's ports
        # (None: compression not offered, or the ports cannot expand it)
        self.hc_table = hc_table if self.settings.compression else None

    def configure(self, settings: Dict[str, Any]) -> None:
        """New settings for long legs opened from now on (a reload)."""
        from stackpep.tcp.config import ScpsSettings

        self.settings = ScpsSettings(**settings)
        self._configs.clear()

    # -- connection ids ------------------------------------------------------------
    def allocate_conn_id(self) -> int:
        """A connection id no live long leg of this box uses (round robin, so a
        just-freed id is not reused at once); when all are in use, the least used."""
        live, ids = self._live, self._ids
        n = len(ids)
        for i in range(n):
            j = (self._next + i) % n
            if live[ids[j]] == 0:
                break
        else:
            j = min(range(n), key=lambda k: live[ids[k]])
            self.counters["scps_conn_ids_shared"] += 1
        cid = ids[j]
        live[cid] += 1
        self._next = (j + 1) % n
        return cid

    def release_conn_id(self, cid: int) -> None:
        if self._live[cid] > 0:
            self._live[cid] -= 1

    def live_conn_ids(self) -> int:
        return sum(1 for n in self._live if n)

    def leg_config(self, base: Any, cid: int) -> Any:
        """``base`` (the long leg's TcpConfig) with SCPS on and connection id ``cid``
        (cached: at most 256 per base config)."""
        key = (id(base), cid)
        cfg = self._configs.get(key)
        if cfg is None or cfg[0] is not base:
            cfg = (base, dataclasses.replace(base, scps=dataclasses.replace(self.settings, conn_id=cid)))
            if len(self._configs) > 4 * CONN_IDS:
                self._configs.clear()
            self._configs[key] = cfg
        return cfg[1]

    # -- refusals ------------------------------------------------------------------
    def offer_to(self, dest: Hashable, now: int) -> bool:
        """Whether a long leg we open to ``dest`` offers option 20."""
        if self.refusals.refused(dest, now):
            self.counters["scps_not_offered_refused"] += 1
            return False
        return True

    def remember_refusal(self, dest: Hashable, now: int) -> None:
        """``dest`` reset or ignored a SYN with option 20 and answered the one without."""
        self.refusals.remember(dest, now)
        self.counters["scps_refusals_remembered"] += 1

    def compressor(self, src: bytes, dst: bytes, sport: int, dport: int, local_cid: int, peer_cid: int) -> Any:
        """A HeaderCompressor for a long leg whose ends both offered bit 0x10
        (src/dst/ports: what the leg sends), or None when this box does not expand."""
        if self.hc_table is None:
            return None
        from stackpep._fast.scpshc import HeaderCompressor

        self.counters["scps_compressed_legs"] += 1
        return HeaderCompressor(src, dst, sport, dport, local_cid, peer_cid, self.hc_table)

    def statistics(self) -> Dict[str, int]:
        out = {"scps_refusals_cached": len(self.refusals), "scps_refusals_evicted": self.refusals.evicted,
                "scps_conn_ids_live": self.live_conn_ids()}
        if self.hc_table is not None:
            out.update(self.hc_table.statistics())
        return out


def scps_link_from(config: Any, counters: Dict[str, int], hc_table: Any = None) -> Optional[ScpsLink]:
    """The box's ScpsLink for a PepConfig, or None when the long leg speaks no SCPS-TP."""
    if config.wan_leg is None or not config.wan_scps:
        return None
    return ScpsLink(config.wan_scps, int(config.wan_scps_refusal_ttl * 1_000_000), counters, hc_table=hc_table,
                    slot=getattr(config, "worker_slot", (0, 1)))
