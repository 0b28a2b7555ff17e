"""The rate-based congestion controller (``congestion="rate"``, stackpep/_fast/cc.pxi).

SCPS-TP rate control (CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)",
"mode 0" of the reference gateway): a token bucket at a configured rate counted on IP bytes, cwnd never the limit,
and with ``loss_response="corruption"`` losses repaired by SACK (RFC 6675)
without slowing down.  Two engines run over ``stackpep.tcp.linkmodel`` on a
virtual clock with a GEO path (300 ms each way), a 20 Mbit/s bottleneck and
1 % random loss each way, as the testbed's demo link.
"""
from __future__ import annotations

import random

import pytest

from stackpep._fast.tcp import TcpConnection
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.linkmodel import A_ADDR4, A_ADDR6, B_ADDR4, B_ADDR6, LinkModel, run_pair

RATE = 20_000_000
ONE_WAY = 300_000
BUF = 8 << 20


class Bottleneck(LinkModel):
    """LinkModel that remembers its largest backlog (µs of queued serialisation)
    and when data-carrying packets were delivered."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.max_backlog_us = 0
        self.data_times = []
        self.delivered = []          # (time, IP bytes) of every packet delivered

    def send(self, packet, now):
        if self.rate_bps:
            self.max_backlog_us = max(self.max_backlog_us, self._busy_until - now)
        super().send(packet, now)

    def deliver(self, now):
        out = super().deliver(now)
        if any(len(p) > 100 for p in out):
            self.data_times.append(now)
        self.delivered += [(now, len(p)) for p in out]
        return out

    def bytes_between(self, t0, t1):
        return sum(n for t, n in self.delivered if t0 <= t < t1)


def capacity_bps(rate, loss, mss=1448, hdr=52):
    # what the payload of the bytes the link carries can amount to (docs/testbed.md)
    return rate * (1 - loss) * mss / (mss + hdr)


def geo_transfer(seed, size, sender_cfg, receiver_cfg=None, loss=0.01, v6=False):
    """The passive side (b) sends ``size`` bytes to the active side (a), as the
    download leg between two boxes does (the sender learns the receiver's scaled
    window from the handshake's ACK).  Returns (result, link b->a, data)."""
    receiver_cfg = receiver_cfg or TcpConfig(snd_buf=BUF, rcv_buf=BUF)
    la, lb = (A_ADDR6, B_ADDR6) if v6 else (A_ADDR4, B_ADDR4)
    a = TcpConnection(receiver_cfg, la, 40000, lb, 80, 1000 + seed)
    b = TcpConnection(sender_cfg, lb, 80, la, 40000, 7000 + seed)
    data = random.Random(seed).randbytes(size)
    ab = Bottleneck(seed, delay_us=ONE_WAY, loss=loss, rate_bps=RATE)
    ba = Bottleneck(seed + 1000, delay_us=ONE_WAY, loss=loss, rate_bps=RATE)
    r = run_pair(a, b, b"", data, ab, ba, max_time_us=120_000_000)
    return r, ba, data


def rate_cfg(**kw):
    return TcpConfig(congestion="rate", rate_bps=RATE, loss_response="corruption",
                     snd_buf=BUF, rcv_buf=BUF, **kw)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_geo_lossy_goodput_near_capacity_byte_exact(seed):
    # 40 MB (~17 s) over 600 ms RTT at 1 % loss each way: rate-paced from the
    # first segment, loss repaired without slowing down
    r, link, data = geo_transfer(seed, 40_000_000, rate_cfg())
    assert r.received_by_a == data                           # byte-exact
    assert r.state_b in ("CLOSED", "TIME-WAIT") and r.state_a in ("CLOSED", "TIME-WAIT")
    st = r.stats_b
    assert st.congestion == "rate"
    # goodput from the first to the last data packet delivered
    span = link.data_times[-1] - link.data_times[0]
    goodput = len(data) * 8 / (span / 1e6)
    # the whole transfer, a tail loss's retransmission timeout included
    assert goodput >= 0.90 * capacity_bps(RATE, 0.01), goodput
    # in steady state the link carries what the rate allows: 10 s from 1 s after
    # the first data delivery, IP bytes delivered (what survived the loss)
    t0 = link.data_times[0] + 1_000_000
    carried = link.bytes_between(t0, t0 + 10_000_000) * 8 / 10.0
    assert carried >= 0.97 * RATE * (1 - 0.01), carried
    # the bucket counts headers and retransmissions: the bottleneck queue stays
    # within the pacing slack plus a few segments (sending 1500/1448 too fast
    # would have queued ~0.3 s by the end)
    assert link.max_backlog_us <= 12_000, link.max_backlog_us
    # only holes are resent: a lost retransmission (RTO) must not resend the
    # flight (go-back-N would resend ~1.5 MB per RTO)
    lost = link.lost
    assert st.bytes_retransmitted <= (2 * lost + 40) * st.mss, (st.bytes_retransmitted, lost, st.timeouts)
    assert st.cwnd >= 1 << 40          # cwnd is never the limit


def test_rate_beats_cubic_side_by_side():
    # the same lossy GEO path: cubic (loss = congestion) against rate + corruption
    size = 6_000_000
    r_rate, link_rate, data = geo_transfer(4, size, rate_cfg())
    assert r_rate.received_by_a == data
    r_cubic, link_cubic, _ = geo_transfer(4, size, TcpConfig(snd_buf=BUF, rcv_buf=BUF))
    assert r_cubic.received_by_a == data
    assert r_cubic.stats_b.congestion == "cubic"
    t_rate = link_rate.data_times[-1]
    t_cubic = link_cubic.data_times[-1]
    assert t_cubic > 3 * t_rate, (t_cubic, t_rate)


def test_rto_restarts_sack_recovery_instead_of_go_back_n():
    # a seed whose run loses retransmissions (RTOs happen): every RTO resends holes only
    total_rto = 0
    for seed in (5, 6, 7, 8):
        r, link, data = geo_transfer(seed, 20_000_000, rate_cfg())
        assert r.received_by_a == data
        st = r.stats_b
        total_rto += st.timeouts
        assert st.bytes_retransmitted <= (2 * link.lost + 40) * st.mss
    assert total_rto >= 1          # the path was exercised


def test_ipv6_headers_are_counted():
    # 72 bytes of headers per segment on IPv6 with timestamps: no loss, the queue
    # at a bottleneck of exactly the configured rate stays short
    r, link, data = geo_transfer(9, 8_000_000, rate_cfg(), loss=0.0, v6=True)
    assert r.received_by_a == data
    assert link.max_backlog_us <= 8_000, link.max_backlog_us
    span = link.data_times[-1] - link.data_times[0]
    assert len(data) * 8 / (span / 1e6) >= 0.97 * capacity_bps(RATE, 0.0, mss=1428, hdr=72)


def _established_pair(cfg_a):
    a = TcpConnection(cfg_a, A_ADDR4, 40000, B_ADDR4, 80, 1)
    b = TcpConnection(TcpConfig(), B_ADDR4, 80, A_ADDR4, 40000, 2)
    b.listen()
    a.connect(0)
    for p in a.packets_to_send(0):
        b.receive_packet(p, 0)
    for p in b.packets_to_send(0):
        a.receive_packet(p, 0)
    for p in a.packets_to_send(0):
        b.receive_packet(p, 0)
    assert a.state == b.state == "ESTABLISHED"
    return a, b


def test_departures_are_spaced_by_ip_bytes_at_the_rate():
    # 12 Mbit/s and 1448 + 52 bytes per segment: one segment every 1000 µs exactly
    a, _ = _established_pair(TcpConfig(congestion="rate", rate_bps=12_000_000, nagle=False))
    assert a.statistics().mss == 1448
    a.send(b"x" * 1448 * 6)
    now, times = 10_000, []
    while len(times) < 6:
        times += [now] * len(a.packets_to_send(now))
        now = a.get_timer()
        a.handle_timer(now)
    assert times == [10_000, 11_000, 12_000, 13_000, 14_000, 15_000]


def test_late_timer_is_made_up_but_idle_time_is_not_banked():
    a, _ = _established_pair(TcpConfig(congestion="rate", rate_bps=12_000_000, nagle=False))
    a.send(b"x" * 1448 * 40)
    # idle since the handshake: the first segment goes alone, then 1 ms apart
    assert len(a.packets_to_send(50_000)) == 1
    assert a.get_timer() == 51_000
    # the driver serves the pacing timer 3 ms late: the 3 ms owed leave at once
    # (within TcpConfig.pace_slack_us = 8 ms), so the average rate holds
    assert len(a.packets_to_send(54_000)) == 4       # due at 51, 52, 53, 54 ms
    assert a.get_timer() == 55_000
    # 10 ms late is beyond the slack: the lost time is not made up by a burst
    assert len(a.packets_to_send(65_000)) == 1
    assert a.get_timer() == 66_000


def test_config_requires_a_rate():
    with pytest.raises(ValueError):
        TcpConfig(congestion="rate")
    with pytest.raises(ValueError):
        TcpConfig(congestion="cubic", rate_bps=100)
    c = TcpConnection(TcpConfig(congestion="rate", rate_bps=RATE), A_ADDR4, 1, B_ADDR4, 2, 1)
    st = c.statistics()
    assert st.congestion == "rate" and st.cwnd >= 1 << 40


def _run_shared(n, share, size, seed=11, sizes=None, starts=None):
    """n connections, each passive side sending ``size`` bytes (or sizes[i]), over
    ONE GEO bottleneck pair (no loss); returns (received per connection, link b->a,
    data, time each transfer completed)."""
    sizes = sizes or [size] * n
    starts = starts or [0] * n

    ab = Bottleneck(seed, delay_us=ONE_WAY, rate_bps=RATE)
    ba = Bottleneck(seed + 1, delay_us=ONE_WAY, rate_bps=RATE)
    cfg = TcpConfig(congestion="rate", rate_bps=RATE, rate_share=share, loss_response="corruption",
                    snd_buf=BUF, rcv_buf=BUF)
    pairs = []
    for i in range(n):
        a = TcpConnection(TcpConfig(snd_buf=BUF, rcv_buf=BUF), A_ADDR4, 40000 + i, B_ADDR4, 80, 100 + i)
        b = TcpConnection(cfg, B_ADDR4, 80, A_ADDR4, 40000 + i, 900 + i)
        b.listen()
        pairs.append([a, b, bytearray(), 0, sizes[i], None])
    data = random.Random(seed).randbytes(max(sizes))
    now = 0
    opened = [False] * n
    by_port = {40000 + i: p for i, p in enumerate(pairs)}
    while True:
        for i, p in enumerate(pairs):
            if not opened[i] and now >= starts[i]:
                opened[i] = True
                p[0].connect(now)
        for p in pairs:
            a, b = p[0], p[1]
            if b.state == "ESTABLISHED" and p[3] < p[4]:
                p[3] += b.send(data[p[3]:min(p[3] + (1 << 20), p[4])])
                if p[3] == p[4]:
                    b.send_eof()
            for pkt in a.packets_to_send(now):
                ab.send(pkt, now)
            for pkt in b.packets_to_send(now):
                ba.send(pkt, now)
            p[2] += a.recv(1 << 22)
            if p[5] is None and len(p[2]) == p[4]:
                p[5] = now
        if all(p[5] is not None for p in pairs):
            break
        cands = [t for p in pairs for t in (p[0].get_timer(), p[1].get_timer()) if t is not None]
        cands += [t for t in (ab.next_time(), ba.next_time()) if t is not None]
        cands += [t for i, t in enumerate(starts) if not opened[i]]
        now = max(now, min(cands))
        assert now < 60_000_000
        for pkt in ab.deliver(now):
            by_port[int.from_bytes(pkt[20:22], "big")][1].receive_packet(pkt, now)
        for pkt in ba.deliver(now):
            by_port[int.from_bytes(pkt[22:24], "big")][0].receive_packet(pkt, now)
        for p in pairs:
            for c in (p[0], p[1]):
                t = c.get_timer()
                if t is not None and t <= now:
                    c.handle_timer(now)
    return [bytes(p[2]) for p in pairs], ba, data, [p[5] for p in pairs]


def test_connections_sharing_a_rate_divide_it():
    # three transfers at once over one 20 Mbit/s GEO link: with a shared rate the
    # queue stays short and the link is still filled
    got, link, data, _ = _run_shared(3, "test-share-3", 4_000_000)
    assert all(g == data for g in got)
    assert link.max_backlog_us <= 60_000, link.max_backlog_us
    span = link.data_times[-1] - link.data_times[0]
    assert 3 * len(data) * 8 / (span / 1e6) >= 0.9 * capacity_bps(RATE, 0.0)


def test_without_a_share_each_connection_takes_the_whole_rate():
    # the same three transfers, each with the rate to itself: the queue grows by
    # twice the rate for as long as all three send (the reason for rate_share)
    got, link, data, _ = _run_shared(3, None, 4_000_000)
    assert all(g == data for g in got)
    assert link.max_backlog_us >= 1_000_000, link.max_backlog_us


def test_a_member_sending_little_does_not_halve_a_busy_one():
    # as iperf3 does: a control connection exchanges 300 bytes, then an 8 MB
    # transfer starts 2 s later on the same share.  The small one stopped counting
    # as active at the first recount, so the transfer gets the whole rate
    got, link, data, done = _run_shared(2, "test-share-ctl", 0, sizes=[300, 8_000_000],
                                        starts=[0, 2_000_000])
    assert got[0] == data[:300] and got[1] == data
    _, _, _, done_alone = _run_shared(1, "test-share-alone", 8_000_000)
    # 8 MB alone takes ~3.3 s from the handshake; at half the rate it would take ~3.3 s more
    assert abs((done[1] - 2_000_000) - done_alone[0]) <= 50_000, (done, done_alone)


def test_many_short_transfers_arriving_one_after_another_share_the_rate():
    # 30 responses of 200 KB starting 30 ms apart (a page's objects, parallel
    # fetches): each counts as soon as it sends, so the queue stays short; each
    # with the whole rate to itself queues more than a second
    starts = [i * 30_000 for i in range(30)]
    got, link, data, _ = _run_shared(30, "test-share-30", 200_000, starts=starts)
    assert all(g == data for g in got)
    assert link.max_backlog_us <= 50_000, link.max_backlog_us
    got, link, data, _ = _run_shared(30, None, 200_000, starts=starts)
    assert all(g == data for g in got)
    assert link.max_backlog_us >= 500_000, link.max_backlog_us


def test_finished_fetches_do_not_slow_the_next_transfers_first_round_trip():
    # two 100 KB responses leave in a 40 ms burst each and end; 5 s later an 8 MB
    # transfer starts on the same share.  The share's clock also runs on sending,
    # so its first segments recount at once and it has the whole rate from the
    # start, not a third of it until its first RTT sample 600 ms later
    got, link, data, done = _run_shared(3, "test-share-stale", 0, sizes=[100_000, 100_000, 8_000_000],
                                        starts=[0, 0, 5_000_000])
    assert got[0] == data[:100_000] and got[2] == data
    _, _, _, done_alone = _run_shared(1, "test-share-stale-alone", 8_000_000)
    assert abs((done[2] - 5_000_000) - done_alone[0]) <= 50_000, (done, done_alone)


def test_a_shared_rate_object_divides_the_rate_as_a_named_share_does():
    # the owner (the PEP dispatcher) passes a SharedRate instead of a name: same pacing
    from stackpep._fast.tcp import SharedRate

    share = SharedRate(RATE)
    got, link, data, done = _run_shared(3, share, 1_000_000)
    got2, link2, _, done2 = _run_shared(3, "test-share-object-vs-name", 1_000_000)
    assert all(g == data for g in got)
    assert link.data_times == link2.data_times and done == done2
    assert share.members_count == 3 and share.rate_bps == RATE


def test_named_shares_are_forgotten_when_no_connection_holds_them():
    import gc

    from stackpep._fast import tcp as fast

    gc.collect()
    before = fast.named_shares_count()
    cfg = TcpConfig(congestion="rate", rate_bps=RATE, rate_share="test-share-weak")
    conns = [TcpConnection(cfg, B_ADDR4, 80, A_ADDR4, 40000 + i, 1) for i in range(2)]
    assert fast.named_shares_count() == before + 1
    assert fast.rate_share("test-share-weak", RATE).members_count == 2
    del conns
    gc.collect()
    assert fast.named_shares_count() == before


def test_shared_rate_must_match_the_configured_rate():
    from stackpep._fast.tcp import SharedRate

    cfg = TcpConfig(congestion="rate", rate_bps=RATE, rate_share=SharedRate(RATE // 2))
    with pytest.raises(ValueError, match="rate_bps"):
        TcpConnection(cfg, B_ADDR4, 80, A_ADDR4, 40000, 1)


def test_pep_builds_one_shared_rate_per_box_and_name():
    from stackpep._fast.tcp import SharedRate
    from stackpep.pep import engine as eng

    leg = {"congestion": "rate", "rate_bps": RATE, "rate_share": "wan"}
    box = {}
    a, b = eng.tcp_config(leg, box), eng.tcp_config(dict(leg), box)
    assert isinstance(a.rate_share, SharedRate) and a.rate_share is b.rate_share
    assert list(box) == [("wan", RATE)]
    other = eng.tcp_config(leg, {})                   # another box: its own share
    assert other.rate_share is not a.rate_share
    assert eng.tcp_config({"congestion": "cubic"}, box).rate_share is None
