"""Resets the splitter sends on behalf of nobody, and when it holds them back.

`reset_for` builds the RST answering a segment: for a SYN whose server refused
(the client must see what it would see without a proxy) and for segments of a
flow the splitter does not know.  RFC 9293 §3.10.7.1 (CLOSED state): if the
incoming segment has ACK, <SEQ=SEG.ACK><CTL=RST>; else
<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, where SYN and FIN count in SEG.LEN.
A segment carrying RST gets no answer.  Built and parsed through the wire
layer (Segment / emit_ip_tcp), so IPv6 extension headers are walked and the
checksums are the wire layer's.

Unknown-flow RSTs are limited (RFC 5961 §7 asks for the same of challenge
ACKs; Linux's `tcp_invalid_ratelimit` does it per socket): a segment storm of a
flow this box just dropped (the in-flight window of an `iperf3 -R` that the
client reset) must not become a RST storm back over the long link.
`ResetLimiter` is a token bucket per source address and one for the box,
sans-IO (`now` in µs comes in).

`RecentlyClosed` remembers the flows whose split connection just ended (a
TIME-WAIT-like record, RFC 9293 §3.6.1 keeps a closed connection's 4-tuple for
2 MSL for the same reason: its old segments are still in flight):
- a connection that ended with a reset (either peer's RST, a leg's timeout, an
  idle reset, a refusal...) already sent both peers the RST of §3.10.7.1 when
  it aborted; the late segments of that flow, whatever they carry, are the
  peer's in-flight window from before our RST arrived, and another RST per
  segment says nothing new.  They are dropped, counted;
- after a normal close (both FINs, the legs' TIME-WAIT run out), an ACK-only
  segment is a late or duplicate ACK of the finished exchange: dropped,
  counted.  A segment with data, SYN or FIN on a flow that closed normally
  gets the RST §3.10.7.1 prescribes (rate-limited like any other): the peer
  still believes in a connection that is gone.
A new SYN from the client always opens a new connection (the record is only
consulted for segments that cannot open one).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from stackpep._fast.wire import Segment, parse_packet

TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def reset_for(packet: bytes, ttl: int = 64) -> Optional[bytes]:
    """The RST answering `packet` (an IP packet carrying TCP), or None for a RST.

    Raises the wire layer's IntegrityError/SanityError for a packet that is not
    intact TCP (the checksum is not checked: callers hand only verified segments)."""
    seg = parse_packet(packet, 0)
    if seg.flags & TH_RST:
        return None
    rst = Segment()
    rst.ip_version = seg.ip_version
    rst.src, rst.dst = seg.dst, seg.src
    rst.sport, rst.dport = seg.dport, seg.sport
    rst.ttl = ttl
    rst.ip_df = True
    if seg.flags & TH_ACK:
        rst.seq, rst.flags = seg.ack, TH_RST
    else:
        seglen = seg.payload_len + (1 if seg.flags & TH_SYN else 0) + (1 if seg.flags & TH_FIN else 0)
        rst.ack, rst.flags = (seg.seq + seglen) & 0xFFFFFFFF, TH_RST | TH_ACK
    return rst.to_bytes()


def source_of(packet: bytes) -> bytes:
    """The source address of an IP packet (4 or 16 bytes), through the wire layer."""
    return parse_packet(packet, 0).src


# ------------------------------------------------------------------ rate limit
class TokenBucket:
    """`rate` tokens per second up to `burst`; `now` in µs (sans-IO).  Starts
    full at the first `now` it is given."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: Optional[int] = None) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def refill(self, now: int) -> float:
        if self.stamp is None:
            self.stamp = now
        elif now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate / 1e6)
            self.stamp = now
        return self.tokens

    def allow(self, now: int) -> bool:
        """Take one token if there is one."""
        if self.refill(now) >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class ResetLimits:
    """How many unknown-flow RSTs the box sends ([resets] in the configuration)."""

    rate: float = 200.0            # per second, the whole box
    burst: int = 50
    per_source_rate: float = 10.0  # per second, to one source address
    per_source_burst: int = 10
    max_sources: int = 4096        # per-source buckets kept (oldest forgotten first)


class ResetLimiter:
    """Token buckets for unknown-flow RSTs: one per source address, one overall.

    `allow(src, now)` returns "sent", "per_source" or "total": a RST goes out
    only if both the source's bucket and the box's have a token (each then
    gives one).  A forgotten source starts again with a full bucket, which
    `max_sources` bounds in memory, not in rate: the overall bucket still holds."""

    def __init__(self, limits: ResetLimits = ResetLimits()) -> None:
        self.limits = limits
        self.total: Optional[TokenBucket] = None
        self.sources: "OrderedDict[bytes, TokenBucket]" = OrderedDict()

    def reconfigure(self, limits: ResetLimits) -> None:
        """New limits (a reload): the buckets start again from them."""
        self.limits = limits
        self.total = None
        self.sources.clear()

    def allow(self, src: bytes, now: int) -> str:
        lim = self.limits
        if self.total is None:
            self.total = TokenBucket(lim.rate, lim.burst, now)
        b = self.sources.get(src)
        if b is None:
            b = TokenBucket(lim.per_source_rate, lim.per_source_burst, now)
            self.sources[src] = b
            if len(self.sources) > lim.max_sources:
                self.sources.popitem(last=False)
        else:
            self.sources.move_to_end(src)
        if b.refill(now) < 1.0:
            return "per_source"
        if self.total.refill(now) < 1.0:
            return "total"
        b.tokens -= 1.0
        self.total.tokens -= 1.0
        return "sent"


# ------------------------------------------------------------ recently closed
class RecentlyClosed:
    """Flow keys of split connections that ended less than `hold_us` ago, with
    whether they ended by a reset (bounded: the oldest go first)."""

    def __init__(self, hold_us: int, max_entries: int = 65536) -> None:
        self.hold_us = hold_us
        self.max_entries = max_entries
        self._flows: "OrderedDict[bytes, tuple]" = OrderedDict()  # key -> (expires µs, reset)

    def __len__(self) -> int:
        return len(self._flows)

    def add(self, key: bytes, reset: bool, now: int) -> None:
        if self.hold_us <= 0:
            return
        self._flows.pop(key, None)
        self._flows[key] = (now + self.hold_us, reset)
        self.expire(now)
        while len(self._flows) > self.max_entries:
            self._flows.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._flows.pop(key, None)

    def expire(self, now: int) -> None:
        # entries are in insertion order and share one hold time: oldest first
        flows = self._flows
        while flows:
            k, (exp, _) = next(iter(flows.items()))
            if exp > now:
                break
            del flows[k]

    def get(self, key: bytes, now: int) -> Optional[bool]:
        """None if the flow did not close recently, else whether it ended by a reset."""
        e = self._flows.get(key)
        if e is None:
            return None
        if e[0] <= now:
            del self._flows[key]
            return None
        return e[1]

    def silent_drop(self, key: bytes, packet: bytes, flags: int, now: int) -> bool:
        """Should this segment of no connection be dropped without a RST? (above)"""
        reset = self.get(key, now)
        if reset is None:
            return False
        if reset:
            return True
        if flags & (TH_SYN | TH_FIN):
            return False
        return parse_packet(packet, 0).payload_len == 0


def limits_from(cfg) -> ResetLimits:
    return ResetLimits(rate=cfg.reset_rate, burst=cfg.reset_burst, per_source_rate=cfg.reset_per_source_rate,
                       per_source_burst=cfg.reset_per_source_burst)


__all__ = ["reset_for", "source_of", "TokenBucket", "ResetLimits", "ResetLimiter", "RecentlyClosed",
           "limits_from"]
