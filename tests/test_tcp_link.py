"""Two engines joined by the seeded in-memory link model (stackpep.tcp.linkmodel):
bulk transfers in both directions at once arrive byte-exact (sha256) for many
seeds, loss rates up to 5 %, with reordering and duplication, for both
congestion controls, with and without SACK/timestamps, IPv4 and IPv6, and
both connections end in TIME-WAIT/CLOSED with a normal close."""
from __future__ import annotations

import hashlib
import random

import pytest

from stackpep._fast.tcp import TcpConnection
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.linkmodel import A_ADDR4, A_ADDR6, B_ADDR4, B_ADDR6, LinkModel, run_pair


def transfer(seed, loss, size_ab, size_ba, reorder=0.0, duplicate=0.0, v6=False, jitter_us=0,
             rate_bps=50_000_000, delay_us=20_000, iss_a=None, iss_b=None, **cfg):
    config = TcpConfig(**cfg)
    la, lb = (A_ADDR6, B_ADDR6) if v6 else (A_ADDR4, B_ADDR4)
    rng = random.Random(seed)
    a = TcpConnection(config, la, 40000 + seed, lb, 80, rng.getrandbits(32) if iss_a is None else iss_a)
    b = TcpConnection(config, lb, 80, la, 40000 + seed, rng.getrandbits(32) if iss_b is None else iss_b)
    data_ab = rng.randbytes(size_ab)
    data_ba = rng.randbytes(size_ba)
    link_ab = LinkModel(seed * 2, delay_us, jitter_us, loss, duplicate, reorder, rate_bps=rate_bps)
    link_ba = LinkModel(seed * 2 + 1, delay_us, jitter_us, loss, duplicate, reorder, rate_bps=rate_bps)
    res = run_pair(a, b, data_ab, data_ba, link_ab, link_ba, max_time_us=600_000_000)
    assert hashlib.sha256(res.received_by_b).hexdigest() == hashlib.sha256(data_ab).hexdigest()
    assert hashlib.sha256(res.received_by_a).hexdigest() == hashlib.sha256(data_ba).hexdigest()
    assert res.state_a in ("TIME-WAIT", "CLOSED") and res.state_b in ("TIME-WAIT", "CLOSED")
    assert "EofReceived" in res.events_a and "EofReceived" in res.events_b
    assert res.stats_a.bytes_acked == size_ab and res.stats_b.bytes_acked == size_ba
    assert res.stats_b.bytes_received == size_ab and res.stats_a.bytes_received == size_ba
    return res, link_ab, link_ba


@pytest.mark.parametrize("loss", [0.0, 0.01, 0.03, 0.05])
@pytest.mark.parametrize("seed", range(25))
def test_bulk_both_ways_lossy(seed, loss):
    cc = "cubic" if seed % 2 else "newreno"
    res, lab, lba = transfer(seed, loss, 400_000, 250_000, reorder=0.01, duplicate=0.01, congestion=cc)
    if loss >= 0.03:
        assert lab.lost > 0 and res.stats_a.retransmits > 0      # the loss was real and repaired


@pytest.mark.parametrize("seed", range(10))
def test_bulk_without_sack_newreno(seed):
    # RFC 6582 recovery alone (no SACK, no timestamps)
    res, lab, _ = transfer(100 + seed, 0.03, 300_000, 100_000, reorder=0.01, sack=False, timestamps=False,
                           congestion="newreno")
    assert not res.stats_a.sack and res.stats_a.fast_retransmits > 0


@pytest.mark.parametrize("seed", range(10))
def test_bulk_ipv6_jitter_reordering(seed):
    transfer(200 + seed, 0.02, 300_000, 300_000, reorder=0.05, duplicate=0.02, jitter_us=3000, v6=True)


def test_bulk_across_sequence_wrap_small_buffers():
    # both ISNs just below 2**32, buffers smaller than the BDP: window-limited, wraps at once
    res, _, _ = transfer(300, 0.02, 500_000, 500_000, iss_a=(1 << 32) - 1000, iss_b=(1 << 32) - 5,
                         snd_buf=32_768, rcv_buf=20_000)
    assert res.stats_a.rcv_wscale == 0


def test_bulk_geo_bdp_large_buffers():
    # 600 ms RTT at 20 Mbit/s: the 1.5 MB bandwidth-delay product only fits with
    # multi-MB buffers and window scaling (RFC 7323 §2)
    res, _, _ = transfer(400, 0.0, 6_000_000, 50_000, delay_us=300_000, rate_bps=20_000_000,
                         snd_buf=8 << 20, rcv_buf=8 << 20)
    st = res.stats_a
    assert st.snd_wscale == 8 and st.rcv_wscale == 8
    assert st.cwnd > 1_500_000 and st.snd_wnd > 4_000_000
    assert st.retransmits == 0 and st.timeouts == 0
    # slow start from IW10 takes ~11 round trips of 0.6 s; the rest runs at the link rate
    assert res.end_us < 12_000_000


def test_loss_as_corruption_policy_transfers():
    res, _, _ = transfer(500, 0.05, 300_000, 10_000, loss_response="corruption", congestion="newreno")
    assert res.stats_a.retransmits > 0


def test_link_model_is_deterministic():
    def run():
        link = LinkModel(7, 1000, 500, loss=0.2, duplicate=0.2, reorder=0.2)
        for i in range(200):
            link.send(bytes([i]), i * 10)
        return [link.deliver(t) for t in range(0, 5000, 100)]
    first = run()
    assert first == run()
    delivered = [p for batch in first for p in batch]
    assert 100 < len(delivered) < 260 and delivered != sorted(delivered)


@pytest.mark.parametrize("seed", range(60))
def test_bulk_randomised_configurations(seed):
    # every option and odd size at once: tiny MSS and buffers, no/long delayed ACKs,
    # ECN, Nagle, IPv6, heavy reordering; found the go-back-N ACK and TS-RTT bugs
    r = random.Random(10_000 + seed)
    delay = r.choice([100, 5_000, 20_000])
    transfer(
        10_000 + seed, r.choice([0.0, 0.01, 0.05]), r.choice([0, 1, 1000, 60_000, 150_000]),
        r.choice([0, 5000, 60_000]), reorder=r.choice([0.0, 0.05, 0.2]), duplicate=r.choice([0.0, 0.05]),
        jitter_us=r.choice([0, 3000]), delay_us=delay, rate_bps=r.choice([None, 2_000_000, 100_000_000]),
        v6=r.random() < 0.3, congestion=r.choice(["newreno", "cubic"]), sack=r.random() < 0.7,
        timestamps=r.random() < 0.7, snd_buf=r.choice([3000, 65536, 1 << 20]),
        rcv_buf=r.choice([2000, 65536, 1 << 20]), mss=r.choice([100, 536, 1460]), nagle=r.random() < 0.5,
        ecn=r.random() < 0.5, delayed_ack_us=r.choice([0, 40_000, 200_000]),
        loss_response=r.choice(["congestion", "corruption"]))
