"""SCPS-TP congestion control, loss type and link outage (CCSDS 714.0-B-2, notes "Loss-type handling"):
Vegas (``congestion="vegas"``), the rate controller's guaranteed minimum
(``min_rate_bps``), ``loss_response="corruption"`` and link-outage persistence
(``outage_rtos``), over ``stackpep.tcp.linkmodel`` on a virtual clock: a GEO path
(300 ms each way) with a 20 Mbit/s bottleneck, as tests/test_tcp_rate.py.

The reference SCPS gateway's Vegas fell to ~3 Mbit/s on such a link at 1 % loss
(issue 10); with the loss type "corruption" stackpep's keeps the link busy.
"""
from __future__ import annotations

import random

import pytest

from stackpep._fast.tcp import TcpConnection
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.linkmodel import A_ADDR4, B_ADDR4, LinkModel, run_pair

RATE = 20_000_000
ONE_WAY = 300_000
RTT = 2 * ONE_WAY
BUF = 8 << 20
BDP_SEGMENTS = RATE / 8 * RTT / 1e6 / 1500       # 1000 full-sized packets in flight


def capacity_bps(rate, loss, mss=1448, hdr=52):
    # what the payload of the bytes the link carries can amount to (docs/testbed.md)
    return rate * (1 - loss) * mss / (mss + hdr)


class QueueLog(LinkModel):
    """LinkModel that logs (time, backlog µs) for every packet sent and when
    packets were delivered (as tests/test_tcp_rate.py's Bottleneck)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.max_backlog_us = 0
        self.backlog_log = []
        self.data_times = []
        self.delivered = []          # (time, IP bytes) of every packet delivered

    def send(self, packet, now):
        q = max(0, self._busy_until - now)
        self.max_backlog_us = max(self.max_backlog_us, q)
        self.backlog_log.append((now, q))
        super().send(packet, now)

    def deliver(self, now):
        out = super().deliver(now)
        if any(len(p) > 100 for p in out):
            self.data_times.append(now)
        self.delivered += [(now, len(p)) for p in out]
        return out

    def bytes_between(self, t0, t1):
        return sum(n for t, n in self.delivered if t0 <= t < t1)


def geo_transfer(seed, size, sender_cfg, loss=0.01):
    """tests/test_tcp_rate.py's transfer (b sends ``size`` bytes to a) with the queue logged."""
    a = TcpConnection(TcpConfig(snd_buf=BUF, rcv_buf=BUF), A_ADDR4, 40000, B_ADDR4, 80, 1000 + seed)
    b = TcpConnection(sender_cfg, B_ADDR4, 80, A_ADDR4, 40000, 7000 + seed)
    data = random.Random(seed).randbytes(size)
    ab = QueueLog(seed, delay_us=ONE_WAY, loss=loss, rate_bps=RATE)
    ba = QueueLog(seed + 1000, delay_us=ONE_WAY, loss=loss, rate_bps=RATE)
    r = run_pair(a, b, b"", data, ab, ba, max_time_us=120_000_000)
    return r, ba, data


def vegas_cfg(**kw):
    kw.setdefault("loss_response", "corruption")
    return TcpConfig(congestion="vegas", snd_buf=BUF, rcv_buf=BUF, **kw)


# -- Vegas -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2])
def test_vegas_corruption_keeps_a_lossy_geo_link_busy(seed):
    # 60 MB at 1 % loss each way: slow start (doubling every other round, CCSDS
    # 714.0-B-2, notes "Congestion control modes (reference gateway)" / Brakmo & Peterson §3.3) takes
    # ~12 s to reach the 1000-segment BDP; from then on losses are repaired without touching cwnd
    r, link, data = geo_transfer(seed, 60_000_000, vegas_cfg())
    assert r.received_by_a == data                          # byte-exact
    st = r.stats_b
    assert st.congestion == "vegas"
    assert st.state in ("CLOSED", "TIME-WAIT")
    # steady state: IP bytes the link delivered over 10 s, from 14 s after the
    # first data (seeds 1, 2 give 100 % and 89 %)
    t0 = link.data_times[0] + 14_000_000
    carried = link.bytes_between(t0, t0 + 10_000_000) * 8 / 10.0
    assert carried >= 0.80 * RATE * (1 - 0.01), carried
    # the whole transfer, slow start included (76 % / 71 %); the reference gateway's
    # ~3 Mbit/s would be 16 % of the link
    span = link.data_times[-1] - link.data_times[0]
    assert len(data) * 8 / (span / 1e6) >= 0.65 * capacity_bps(RATE, 0.01)
    # cwnd ends near the path's BDP (1000 segments), not collapsed
    assert 0.8 * BDP_SEGMENTS * st.mss <= st.cwnd <= 1.2 * BDP_SEGMENTS * st.mss, st.cwnd


def test_vegas_on_a_wan_leg_starts_at_the_links_bdp_paced_at_its_rate():
    # the [wan] leg's Vegas (stackpep.pep.config.wan_leg_settings): rate_bps caps
    # the pacing, the first window is 1.25 x the BDP.  20 MB at 1 % loss each way
    # then fills the link from the first round trip: no 12 s slow start
    from stackpep.pep.config import wan_leg_settings

    leg = wan_leg_settings(RATE, 0.6, congestion="vegas")
    assert leg["rate_bps"] == RATE and leg["initial_window_segments"] == 1_875_000 // 1448 + 1
    cfg = TcpConfig(congestion="vegas", loss_response="corruption", snd_buf=BUF, rcv_buf=BUF,
                    rate_bps=RATE, initial_window_segments=leg["initial_window_segments"])
    r, link, data = geo_transfer(1, 20_000_000, cfg)
    assert r.received_by_a == data
    # never paced above the link: the first window does not burst into the queue
    assert link.max_backlog_us <= 20_000, link.max_backlog_us
    span = link.data_times[-1] - link.data_times[0]
    assert len(data) * 8 / (span / 1e6) >= 0.9 * capacity_bps(RATE, 0.01)
    assert r.stats_b.congestion == "vegas"


def test_vegas_as_congestion_is_the_reference_collapse():
    # the same link with the loss type "congestion": every loss halves cwnd; the
    # corruption loss type is what keeps Vegas fast (6 MB, seed 4)
    size = 6_000_000
    r_c, link_c, data = geo_transfer(4, size, vegas_cfg())
    r_g, link_g, _ = geo_transfer(4, size, vegas_cfg(loss_response="congestion"))
    assert r_c.received_by_a == data
    t_corruption = link_c.data_times[-1]
    t_congestion = link_g.data_times[-1]
    assert t_congestion > 3 * t_corruption, (t_congestion, t_corruption)


def test_vegas_keeps_the_queue_short_newreno_fills_it():
    # no loss, an unbounded bottleneck queue: NewReno grows until the receive
    # window stops it (seconds of queue); Vegas holds alpha..beta (3..5) segments
    # queued once slow start is over
    size = 40_000_000
    r_v, link_v, data = geo_transfer(1, size, vegas_cfg(), loss=0.0)
    r_n, link_n, _ = geo_transfer(1, size, TcpConfig(congestion="newreno", snd_buf=BUF, rcv_buf=BUF), loss=0.0)
    assert r_v.received_by_a == data and r_n.received_by_a == data

    def queue_after(link, t):
        # largest backlog (µs) seen by packets sent after t, sampled by Bottleneck.send
        return max(q for when, q in link.backlog_log if when >= t)

    for link in (link_v, link_n):
        assert link.data_times[-1] - link.data_times[0] > 16_000_000
    t_steady = link_v.data_times[0] + 15_000_000
    q_vegas = queue_after(link_v, t_steady)
    q_newreno = queue_after(link_n, t_steady)
    assert q_vegas <= 10_000, q_vegas                     # 5 segments are 3 ms at 20 Mbit/s
    assert q_newreno >= 1_000_000, q_newreno
    # and the slow-start overshoot of Vegas stays well below NewReno's queue
    assert link_v.max_backlog_us * 2 < link_n.max_backlog_us
    # the queue is not bought with throughput: Vegas's steady state fills the link
    carried = link_v.bytes_between(t_steady, t_steady + 5_000_000) * 8 / 5.0
    assert carried >= 0.97 * RATE, carried


def test_vegas_parameters_reach_the_controller():
    cfg = vegas_cfg(vegas_alpha=1.5, vegas_beta=2.5, vegas_gamma=1.0)
    c = TcpConnection(cfg, A_ADDR4, 1, B_ADDR4, 2, 1)
    assert c.statistics().congestion == "vegas"
    with pytest.raises(ValueError):
        vegas_cfg(vegas_alpha=6, vegas_beta=5)
    with pytest.raises(ValueError):
        vegas_cfg(vegas_gamma=0)


# -- the rate controller's guaranteed minimum --------------------------------------------
def rate_cfg(**kw):
    kw.setdefault("loss_response", "corruption")
    return TcpConfig(congestion="rate", rate_bps=RATE, snd_buf=BUF, rcv_buf=BUF, **kw)


def test_min_rate_backs_off_on_congestion_loss_but_never_below_the_minimum():
    # loss type congestion: every loss halves the excess over min_rate; the pacing
    # never goes below it, so the transfer takes at most size / min_rate
    size = 8_000_000
    lo = 5_000_000
    r, link, data = geo_transfer(3, size, rate_cfg(min_rate_bps=lo, loss_response="congestion"))
    assert r.received_by_a == data
    span = link.data_times[-1] - link.data_times[0]
    goodput = size * 8 / (span / 1e6)
    assert goodput >= 0.9 * lo * 1448 / 1500 * (1 - 0.01)
    # open loop (no minimum) ignores congestion losses: faster than the closed loop
    r_open, link_open, _ = geo_transfer(3, size, rate_cfg(loss_response="congestion"))
    assert r_open.received_by_a == data
    assert link_open.data_times[-1] < link.data_times[-1]


def test_min_rate_with_corruption_stays_at_full_rate():
    # loss type corruption: losses are no signal, the closed loop stays at rate_bps
    size = 8_000_000
    r, link, data = geo_transfer(3, size, rate_cfg(min_rate_bps=5_000_000))
    r_open, link_open, _ = geo_transfer(3, size, rate_cfg())
    assert r.received_by_a == data
    assert link.data_times[-1] == link_open.data_times[-1]


def test_min_rate_config_checks():
    with pytest.raises(ValueError):
        rate_cfg(min_rate_bps=RATE + 1)
    with pytest.raises(ValueError):
        TcpConfig(congestion="cubic", min_rate_bps=1_000_000)


# -- link outage -----------------------------------------------------------------------------
class Blackout(QueueLog):
    """A Bottleneck that loses everything sent in [start, end): the link is down."""

    def __init__(self, *args, blackout=(0, 0), **kw):
        super().__init__(*args, **kw)
        self.blackout = blackout
        self.blacked = 0

    def send(self, packet, now):
        if self.blackout[0] <= now < self.blackout[1]:
            self.sent += 1
            self.blacked += 1
            return
        super().send(packet, now)


def outage_transfer(sender_cfg, size=40_000_000, start=8_000_000, length=30_000_000, seed=11):
    a = TcpConnection(TcpConfig(snd_buf=BUF, rcv_buf=BUF), A_ADDR4, 40000, B_ADDR4, 80, 1000 + seed)
    b = TcpConnection(sender_cfg, B_ADDR4, 80, A_ADDR4, 40000, 7000 + seed)
    data = random.Random(seed).randbytes(size)
    window = (start, start + length)
    ab = Blackout(seed, delay_us=ONE_WAY, rate_bps=RATE, blackout=window)
    ba = Blackout(seed + 1000, delay_us=ONE_WAY, rate_bps=RATE, blackout=window)
    r = run_pair(a, b, b"", data, ab, ba, max_time_us=200_000_000)
    return r, ba, data


@pytest.mark.parametrize("congestion,loss", [("rate", "corruption"), ("vegas", "corruption"),
                                             ("cubic", "congestion")])
def test_30s_outage_persists_and_resumes_at_full_rate(congestion, loss):
    kw = {"rate_bps": RATE} if congestion == "rate" else {}
    cfg = TcpConfig(congestion=congestion, loss_response=loss, snd_buf=BUF, rcv_buf=BUF,
                    outage_rtos=3, outage_probe_us=1_000_000, **kw)
    r, link, data = outage_transfer(cfg)
    assert r.received_by_a == data                       # intact
    assert r.state_a in ("CLOSED", "TIME-WAIT") and r.state_b in ("CLOSED", "TIME-WAIT")
    for events in (r.events_a, r.events_b):
        assert "ConnectionReset" not in events
        assert not any(e.startswith("ConnectionClosed(") and e != "ConnectionClosed(normal)" for e in events)
    st = r.stats_b
    assert (st.outage_entered, st.outage_exited, st.outage) == (1, 1, False)
    assert r.events_b.count("OutageEntered") == 1 and r.events_b.count("OutageExited") == 1
    assert r.events_b.index("OutageEntered") < r.events_b.index("OutageExited")
    # probes at a fixed 1 s: about 30 s of outage minus the 3 RTOs before it
    assert 20 <= st.outage_probes <= 32, st.outage_probes
    # the RTOs before the outage only; probes are not timeouts
    assert st.timeouts <= 3 + 2, st.timeouts
    # full rate within about one RTT of the link's return: the first data delivered
    # after the blackout, then 5 s at (nearly) the link rate from one RTT later
    back = [t for t in link.data_times if t >= 38_000_000 + ONE_WAY]
    t_first = back[0]
    assert t_first <= 38_000_000 + 1_000_000 + 2 * RTT       # the next probe and its answer
    t0 = t_first + RTT + 100_000
    carried = link.bytes_between(t0, t0 + 5_000_000) * 8 / 5.0
    assert carried >= 0.85 * RATE, carried                   # Vegas 91 %, rate and cubic 100 %


def test_outage_without_outage_rtos_gives_up():
    # the same blackout with outage handling off and the loss type corruption (no
    # RTO backoff): max_retransmits RTOs in a row end the connection (timeout)
    cfg = TcpConfig(congestion="rate", rate_bps=RATE, loss_response="corruption", snd_buf=BUF, rcv_buf=BUF)
    r, link, data = outage_transfer(cfg, size=6_000_000, start=2_000_000)   # all in the send buffer
    assert r.received_by_a != data
    assert r.stats_b.outage_entered == 0
    assert "ConnectionClosed(timeout)" in r.events_b


def test_outage_max_gives_up_after_the_limit():
    cfg = TcpConfig(congestion="rate", rate_bps=RATE, loss_response="corruption", snd_buf=BUF, rcv_buf=BUF,
                    outage_rtos=3, outage_max_us=10_000_000)
    r, link, data = outage_transfer(cfg, size=6_000_000, start=2_000_000)
    st = r.stats_b
    assert (st.outage_entered, st.outage_exited) == (1, 0)
    assert "ConnectionClosed(timeout)" in r.events_b
    assert 9 <= st.outage_probes <= 11, st.outage_probes


def test_outage_config_checks():
    with pytest.raises(ValueError):
        TcpConfig(outage_rtos=0)
    with pytest.raises(ValueError):
        TcpConfig(outage_probe_us=10)
    with pytest.raises(ValueError):
        TcpConfig(outage_silence_us=0)


def test_outage_after_silence():
    # outage_silence_us instead of a count: the first RTO after 2 s without
    # anything received enters the outage (the loss type corruption keeps the RTO
    # at ~SRTT, so a few RTOs come first)
    cfg = TcpConfig(congestion="rate", rate_bps=RATE, loss_response="corruption", snd_buf=BUF, rcv_buf=BUF,
                    outage_silence_us=2_000_000)
    r, link, data = outage_transfer(cfg)
    assert r.received_by_a == data
    st = r.stats_b
    assert (st.outage_entered, st.outage_exited) == (1, 1)
    assert 2 <= st.timeouts <= 4, st.timeouts
    assert 25 <= st.outage_probes <= 30, st.outage_probes
