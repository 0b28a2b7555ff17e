"""First-flight redundancy (TcpConfig.first_flight_redundancy; docs/scps.md
"First-flight redundancy"): two engines configured as the two boxes of a GEO link
(zero-RTT, rate control at 20 Mbit/s, 300 ms each way) on a virtual clock.  A
request in the SYN, a 100 KB answer: which segments go out twice, that the copies
are paced like the originals, that none follows the first N bytes, and that one
lost segment of the first flight (data, the SYN with data, the SYN-ACK) costs no
round trip where it costs one (or an RTO) without the copies."""
from __future__ import annotations

import heapq
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

from stackpep.tcp.config import TcpConfig
from stackpep.tcp.linkmodel import A_ADDR4, B_ADDR4

import stackpep._fast.tcp as tcp  # noqa: E402
import stackpep._fast.wire as wire  # noqa: E402

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
ONE_WAY = 300_000            # µs
RATE = 20_000_000            # bit/s, both the link and the engines' rate controller
REQUEST = b"GET /obj/100000 HTTP/1.1\r\nHost: server\r\n\r\n"
ANSWER = bytes(i * 7 % 251 for i in range(100_000))
ISS_A, ISS_B = 1_000_000, 5_000_000


def _cfg(redundancy: int, nagle: bool = False) -> TcpConfig:
    # what stackpep.pep.config makes of [wan] rate/rtt/zero_rtt (wan_leg_settings)
    return TcpConfig(congestion="rate", rate_bps=RATE, loss_response="corruption", snd_buf=4 << 20, nagle=nagle,
                     rcv_buf=4 << 20, min_rto_us=200_000, initial_rto_us=1_000_000, tfo_key=KEY,
                     tfo_client=True, tfo_server=True, tfo_synrcvd_send=4 << 20,
                     first_flight_redundancy=redundancy)


class _Link:
    """One direction: serialisation at RATE on IP bytes, then ONE_WAY; the packets
    whose index (0 = first sent) is in ``drop`` are lost after serialisation."""

    def __init__(self, drop: Sequence[int] = ()):
        self.drop = set(drop)
        self.busy = 0
        self.sent: List[Tuple[int, bytes]] = []    # (time it was handed to the link, packet)
        self.heap: List[Tuple[int, int, bytes]] = []

    def send(self, pkt: bytes, now: int) -> None:
        i = len(self.sent)
        self.sent.append((now, pkt))
        self.busy = max(now, self.busy) + len(pkt) * 8 * 1_000_000 // RATE
        if i not in self.drop:
            heapq.heappush(self.heap, (self.busy + ONE_WAY, i, pkt))

    def due(self, now: int) -> List[bytes]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap)[2])
        return out


class _Run:
    def __init__(self, redundancy: int, drop_ab: Sequence[int] = (), drop_ba: Sequence[int] = (),
                 answer: bytes = ANSWER, nagle: bool = False, first_chunk: int = len(ANSWER)):
        """``first_chunk``: the far box's application has only that much of the answer
        at first, the rest 20 ms later (a server's first burst ending mid-segment)."""
        self.a = tcp.TcpConnection(_cfg(redundancy, nagle), A_ADDR4, 40000, B_ADDR4, 80, ISS_A)   # near box
        self.b = tcp.TcpConnection(_cfg(redundancy, nagle), B_ADDR4, 80, A_ADDR4, 40000, ISS_B)   # far box
        self.ab, self.ba = _Link(drop_ab), _Link(drop_ba)
        self.got = bytearray()
        self.done_at: Optional[int] = None
        a, b = self.a, self.b
        b.listen()
        a.send(REQUEST)
        a.connect(0)
        now, req, answered, asked_at = 0, bytearray(), 0, None
        while now <= 6_000_000:
            for conn, link in ((a, self.ab), (b, self.ba)):
                for p in conn.packets_to_send(now):
                    link.send(p, now)
            while (e := a.next_event()) is not None:
                pass
            while (e := b.next_event()) is not None:
                pass
            req += b.recv(1 << 20)
            if len(req) >= len(REQUEST) and asked_at is None:
                asked_at = now
            if asked_at is not None and answered < len(answer):
                upto = len(answer) if now >= asked_at + 20_000 else first_chunk
                answered += b.send(answer[answered:upto])
                for p in b.packets_to_send(now):
                    self.ba.send(p, now)
            self.got += a.recv(1 << 20)
            if self.done_at is None and len(self.got) == len(answer):
                self.done_at = now
            cands = [t for t in (a.get_timer(), b.get_timer(),
                                 asked_at + 20_000 if asked_at is not None and now < asked_at + 20_000 else None,
                                 self.ab.heap[0][0] if self.ab.heap else None,
                                 self.ba.heap[0][0] if self.ba.heap else None) if t is not None]
            if not cands:
                break
            now = max(now, min(cands))
            for p in self.ab.due(now):
                b.receive_packet(p, now)
            for p in self.ba.due(now):
                a.receive_packet(p, now)
            for conn in (a, b):
                t = conn.get_timer()
                if t is not None and t <= now:
                    conn.handle_timer(now)
        assert bytes(self.got) == answer                 # every byte once, in order
        assert bytes(req) == REQUEST

    def data_from_b(self) -> List[Tuple[int, int, int]]:
        """(time, send offset, payload length) of every data segment b sent."""
        out = []
        for t, p in self.ba.sent:
            s = wire.parse_packet(p)
            if s.payload_len and not s.flags & 0x02:
                out.append((t, (s.seq - ISS_B - 1) & 0xFFFFFFFF, s.payload_len))
        return out


@pytest.fixture(scope="module")
def clean() -> Dict[int, _Run]:
    """The loss-free fetch without and with 8000 bytes of redundancy."""
    return {0: _Run(0), 8000: _Run(8000), 131072: _Run(131072)}


def test_first_flight_copies_exactly_the_first_n_bytes_after_the_new_data(clean):
    segs = clean[8000].data_from_b()
    mss = segs[0][2]
    originals = [(off, n) for _, off, n in segs[:-6]]
    # every byte of the answer once, in order ...
    assert [off for off, _ in originals] == list(range(0, len(ANSWER), mss))
    assert sum(n for _, n in originals) == len(ANSWER)
    # ... then a second copy of each segment that starts below 8000: 0, mss, ..., 5 * mss
    assert [(off, n) for _, off, n in segs[-6:]] == [(k * mss, mss) for k in range(6)]
    assert 5 * mss < 8000 <= 6 * mss
    # the SYN-ACK went twice, byte for byte; the SYN with the request too
    synacks = [p for _, p in clean[8000].ba.sent if wire.parse_packet(p).flags & 0x12 == 0x12]
    assert synacks[0] == synacks[1]
    syns = [p for _, p in clean[8000].ab.sent if wire.parse_packet(p).flags & 0x02]
    assert len(syns) == 2 and syns[0] == syns[1] and wire.parse_packet(syns[0]).payload_len == len(REQUEST)
    sa, sb = clean[8000].a.statistics(), clean[8000].b.statistics()
    assert (sb.tx_redundant_segments, sa.tx_redundant_segments) == (1 + 6, 1)
    assert sb.tx_redundant_bytes == len(synacks[0]) + 6 * mss
    # the request reached the far box's application once (the SYN copy is a retransmitted SYN)
    assert sb.tfo_syn_data_accepted == len(REQUEST)
    # the copies' duplicate ACKs were not taken for loss: nothing retransmitted
    assert (sb.retransmits, sb.fast_retransmits, sb.timeouts) == (0, 0, 0)
    # without the setting: no copy at all, the same originals
    s0 = clean[0].data_from_b()
    assert [(off, n) for _, off, n in s0] == originals
    assert clean[0].b.statistics().tx_redundant_segments == 0
    assert len([p for _, p in clean[0].ab.sent if wire.parse_packet(p).flags & 0x02]) == 1


def test_copies_are_paced_like_the_originals(clean):
    segs = clean[8000].data_from_b()
    mss = segs[0][2]
    gaps = {t2 - t1 for (t1, _, n1), (t2, _, _) in zip(segs, segs[1:]) if n1 == mss}
    # one full-size segment per pacing interval, copies included (the rate budget is shared)
    assert len(gaps) == 1
    gap = gaps.pop()
    assert gap > 0
    # the loss-free answer is later only by the SYN-ACK's copy (on the link and in the
    # pacing budget), by less than one data segment: the data copies follow the originals
    synack = next(p for _, p in clean[8000].ba.sent if wire.parse_packet(p).flags & 0x12 == 0x12)
    assert 0 < clean[8000].done_at - clean[0].done_at <= 2 * (len(synack) * 8 * 1_000_000 // RATE + 1) < gap


def test_a_whole_100kb_answer_is_copied_once_and_no_more(clean):
    run = clean[131072]
    segs = run.data_from_b()
    offs = [off for _, off, _ in segs]
    assert sorted(offs) == sorted(list(range(0, len(ANSWER), segs[0][2])) * 2)
    assert run.b.statistics().tx_redundant_bytes - len(next(
        p for _, p in run.ba.sent if wire.parse_packet(p).flags & 0x12 == 0x12)) == len(ANSWER)


@pytest.mark.parametrize("lost", [0, 20, 68])
def test_a_lost_first_flight_data_segment_costs_no_round_trip(clean, lost):
    # b's packets: 0 SYN-ACK, 1 its copy, 2.. the answer's 70 segments (lost: data segment n)
    # (without copies there is no SYN-ACK copy: data segment n is packet 1 + n)
    with_rd = _Run(131072, drop_ba=[2 + lost])
    without = _Run(0, drop_ba=[1 + lost])
    # the link time of the answer's 70 segments (IP bytes): 41.5 ms
    serialisation = sum(len(p) for _, p in clean[0].ba.sent if wire.parse_packet(p).payload_len) \
        * 8 * 1_000_000 // RATE
    # the copy follows the 70 originals: the answer is complete within one more
    # serialisation time of the answer, long before a SNACK / SACK repair could come
    # (one 600 ms round trip after the loss was seen)
    assert with_rd.done_at <= clean[131072].done_at + serialisation
    assert without.done_at > clean[0].done_at + 2 * ONE_WAY - serialisation
    # the receiver's rcv_nxt reached the end from the copy, not from a retransmission
    sb = with_rd.b.statistics()
    assert sb.timeouts == 0 and sb.snack_retransmits + sb.retransmits <= 1
    assert with_rd.a.statistics().bytes_received == len(ANSWER)


def test_a_lost_syn_with_data_costs_no_rto(clean):
    with_rd = _Run(131072, drop_ab=[0])
    without = _Run(0, drop_ab=[0])
    sa, sb = with_rd.a.statistics(), with_rd.b.statistics()
    assert sa.timeouts == 0 and sb.tfo_syn_data_accepted == len(REQUEST)
    # the copy left right behind the lost SYN: the answer is as early as in a loss-free run
    # but for the SYN's serialisation time
    assert with_rd.done_at - clean[131072].done_at < 1_000
    assert without.done_at >= clean[0].done_at + 1_000_000     # the SYN's RTO (1 s)


def test_a_lost_syn_ack_costs_no_round_trip(clean):
    with_rd = _Run(131072, drop_ba=[0])
    without = _Run(0, drop_ba=[0])
    assert with_rd.a.statistics().timeouts == 0
    assert with_rd.done_at - clean[131072].done_at < 1_000
    assert without.done_at >= clean[0].done_at + 2 * ONE_WAY


@pytest.mark.parametrize("bad", [-1, 1 << 31, True, 1.5, "64k"])
def test_config_rejects_bad_redundancy(bad):
    with pytest.raises(ValueError, match="first_flight_redundancy"):
        TcpConfig(first_flight_redundancy=bad)


def test_a_partial_segment_mid_answer_holds_neither_the_tail_nor_the_copies(clean):
    # the far box's application has the first 13189 bytes (9 segments and 157 bytes), the
    # rest 20 ms later, when that partial segment has left.  With Nagle (RFC 9293 §3.7.4,
    # Minshall's form) the 100 KB answer's partial tail would wait for the partial
    # segment's ACK, a round trip; the long leg runs without it (wan_leg_settings), and
    # even with it the copies go out while the tail is held.
    no_nagle = _Run(131072, first_chunk=13189)
    with_nagle = _Run(131072, first_chunk=13189, nagle=True)
    # without Nagle the application's own 20 ms is all the answer loses
    assert no_nagle.done_at <= clean[131072].done_at + 20_000
    assert with_nagle.done_at > clean[131072].done_at + 2 * ONE_WAY - 50_000
    # while the tail was held every full segment was copied already
    segs = with_nagle.data_from_b()
    t_tail, tail, _ = next(x for x in segs if x[1] + x[2] == len(ANSWER))
    before = [off for t, off, _ in segs if t < t_tail]
    # every segment below the tail went out twice before the tail was released
    assert set(before) == {off for _, off, _ in segs if off < tail}
    assert all(before.count(o) == 2 for o in set(before))
    assert t_tail >= clean[131072].done_at    # (only once the partial segment's ACK came)
