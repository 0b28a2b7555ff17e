"""A seeded in-memory link and a driver that runs two engines over it.

``LinkModel`` is one direction of a path on a virtual clock: fixed delay plus
uniform jitter, an optional rate (serialisation at ``rate_bps`` with an
unbounded FIFO), and independent per-packet loss, duplication and
reordering (a reordered packet is held back by an extra delay so later packets
overtake it).  Everything random comes from ``random.Random(seed)``, so a run
is reproducible from its seed.

``run_pair`` connects two ``TcpConnection`` objects through two such links and
moves application data both ways until both sides have closed, on a virtual
clock (integer µs) that jumps from event to event: the tests use it for the
byte-exact bulk transfers and the benchmark for timing.
"""
from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from stackpep.tcp.events import ConnectionClosed, EofReceived

__all__ = ["LinkModel", "PairResult", "run_pair", "A_ADDR4", "B_ADDR4", "A_ADDR6", "B_ADDR6"]

A_ADDR4 = bytes([198, 18, 0, 1])
B_ADDR4 = bytes([198, 18, 0, 2])
A_ADDR6 = bytes.fromhex("fd000000000000000000000000000001")
B_ADDR6 = bytes.fromhex("fd000000000000000000000000000002")


class LinkModel:
    """One direction of a link on a virtual clock."""

    def __init__(self, seed: int, delay_us: int = 10_000, jitter_us: int = 0, loss: float = 0.0,
                 duplicate: float = 0.0, reorder: float = 0.0, reorder_delay_us: Optional[int] = None,
                 rate_bps: Optional[int] = None):
        self.rng = random.Random(seed)
        self.delay_us = delay_us
        self.jitter_us = jitter_us
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.reorder_delay_us = reorder_delay_us if reorder_delay_us is not None else max(delay_us // 2, 1000)
        self.rate_bps = rate_bps
        self._busy_until = 0
        self._heap: List[Tuple[int, int, bytes]] = []
        self._n = 0
        self.sent = 0
        self.lost = 0
        self.duplicated = 0
        self.reordered = 0

    def send(self, packet: bytes, now: int) -> None:
        self.sent += 1
        rng = self.rng
        if self.rate_bps:
            start = max(now, self._busy_until)
            self._busy_until = start + len(packet) * 8 * 1_000_000 // self.rate_bps
            now = self._busy_until
        if self.loss and rng.random() < self.loss:
            self.lost += 1
            return
        copies = 1
        if self.duplicate and rng.random() < self.duplicate:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            t = now + self.delay_us
            if self.jitter_us:
                t += rng.randrange(self.jitter_us + 1)
            if self.reorder and rng.random() < self.reorder:
                t += self.reorder_delay_us
                self.reordered += 1
            self._n += 1
            heapq.heappush(self._heap, (t, self._n, packet))

    def next_time(self) -> Optional[int]:
        return self._heap[0][0] if self._heap else None

    def deliver(self, now: int) -> List[bytes]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def __len__(self) -> int:
        return len(self._heap)


@dataclass
class PairResult:
    received_by_a: bytes
    received_by_b: bytes
    end_us: int                      # virtual time when both sides were done
    state_a: str
    state_b: str
    events_a: List[str] = field(default_factory=list)
    events_b: List[str] = field(default_factory=list)
    stats_a: object = None
    stats_b: object = None
    segments: int = 0                # packets carried by the links (both directions)

    def sha256_a(self) -> str:
        return hashlib.sha256(self.received_by_a).hexdigest()

    def sha256_b(self) -> str:
        return hashlib.sha256(self.received_by_b).hexdigest()


class _Side:
    def __init__(self, conn, data: bytes, chunk: int):
        self.conn = conn
        self.data = memoryview(data)
        self.sent = 0
        self.eof_sent = False
        self.received = bytearray()
        self.events: List[str] = []
        self.chunk = chunk
        self.eof = False
        self.closed = False

    def app(self) -> None:
        conn = self.conn
        if conn.state in ("ESTABLISHED", "CLOSE-WAIT") or self.sent < len(self.data):
            while self.sent < len(self.data):
                n = conn.send(self.data[self.sent:self.sent + self.chunk])
                if n == 0:
                    break
                self.sent += n
        if self.sent == len(self.data) and not self.eof_sent and conn.state in ("ESTABLISHED", "CLOSE-WAIT"):
            conn.send_eof()
            self.eof_sent = True
        while True:
            got = conn.recv(1 << 20)
            if not got:
                break
            self.received += got

    def drain_events(self) -> None:
        while True:
            ev = self.conn.next_event()
            if ev is None:
                return
            if isinstance(ev, ConnectionClosed):
                self.events.append(f"ConnectionClosed({ev.reason.value})")
                self.closed = True
            else:
                self.events.append(type(ev).__name__)  # the event log, by class name
                if isinstance(ev, EofReceived):
                    self.eof = True


def run_pair(conn_a, conn_b, data_ab: bytes, data_ba: bytes, link_ab: LinkModel, link_ba: LinkModel,
             max_time_us: int = 600_000_000, chunk: int = 1 << 16) -> PairResult:
    """``conn_a`` opens actively to ``conn_b`` (listening); each sends its data then
    EOF and reads everything.  Returns when both are CLOSED or in TIME-WAIT with
    all data delivered, or at ``max_time_us`` (virtual)."""
    a = _Side(conn_a, data_ab, chunk)
    b = _Side(conn_b, data_ba, chunk)
    now = 0
    conn_b.listen()
    conn_a.connect(now)
    segments = 0
    done_states = ("CLOSED", "TIME-WAIT")
    while True:
        for side, link in ((a, link_ab), (b, link_ba)):
            side.app()
            for pkt in side.conn.packets_to_send(now):
                link.send(pkt, now)
                segments += 1
            side.drain_events()
            side.app()
            for pkt in side.conn.packets_to_send(now):
                link.send(pkt, now)
                segments += 1
        if (conn_a.state in done_states and conn_b.state in done_states
                and len(a.received) == len(data_ba) and len(b.received) == len(data_ab)):
            break
        cands = [t for t in (conn_a.get_timer(), conn_b.get_timer(), link_ab.next_time(), link_ba.next_time())
                 if t is not None]
        if not cands:
            break
        nxt = min(cands)
        if nxt > max_time_us:
            break
        if nxt > now:
            now = nxt
        for pkt in link_ab.deliver(now):
            conn_b.receive_packet(pkt, now)
        for pkt in link_ba.deliver(now):
            conn_a.receive_packet(pkt, now)
        for conn in (conn_a, conn_b):
            t = conn.get_timer()
            if t is not None and t <= now:
                conn.handle_timer(now)
    a.drain_events()
    b.drain_events()
    return PairResult(bytes(a.received), bytes(b.received), now, conn_a.state, conn_b.state,
                      a.events, b.events, conn_a.statistics(), conn_b.statistics(), segments)
