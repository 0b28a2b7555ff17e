"""SCPS-TP in the engine (CCSDS 714.0-B-2; docs/scps.md): what the scripts in
vectors/tcp/scps/ cannot say — exact option bytes, bytes read after a BETS skip,
corruption-experienced generation, the refusal cache, and two SCPS engines over a
lossy, delayed link with byte-exact results."""
from __future__ import annotations

import hashlib
import random

import pytest

from stackpep.tcp import events as ev
from stackpep.tcp.config import ScpsSettings, TcpConfig
from stackpep.tcp.scps import ScpsRefusals
from stackpep.tcp.script import Segment, build_segment, parse_segment, payload_pattern
from stackpep.tcp.linkmodel import A_ADDR4, B_ADDR4, LinkModel, run_pair

from stackpep._fast.tcp import TcpConnection  # noqa: E402

SYN, ACK, RST, PSH = 2, 16, 4, 8
ISS, PISS = 1_000_000_000, 2_000_000_000
M32 = 1 << 32


class Peer:
    """Plays the far end with the script runner's own codec (not the wire layer)."""

    def __init__(self, conn):
        self.conn = conn
        self.now = 0

    def send(self, flags, seq, ack=0, payload=b"", options=(), win=1000):
        seg = Segment(4, B_ADDR4, A_ADDR4, 40000, 8080, (PISS + seq) % M32,
                      (ISS + ack) % M32 if flags & ACK else 0, flags, win, 0, list(options), payload)
        self.conn.receive_packet(build_segment(seg), self.now)
        return self.out()

    def out(self):
        return list(self.conn.packets_to_send(self.now))

    def events(self):
        out = []
        while (e := self.conn.next_event()) is not None:
            out.append(e)
        return out


def tcp_options(pkt: bytes) -> bytes:
    ihl = (pkt[0] & 15) * 4
    doff = (pkt[ihl + 12] >> 4) * 4
    return pkt[ihl + 20:ihl + doff]


def passive(scps, **cfg):
    conn = TcpConnection(TcpConfig(timestamps=False, scps=scps, **cfg), A_ADDR4, 8080, B_ADDR4, 40000, ISS)
    conn.listen()
    peer = Peer(conn)
    return conn, peer


def test_snack_option_bytes_exact():
    # CCSDS 714.0-B-2, notes "TCP option kinds (IANA)": NOP NOP, kind 21, length 6, hole offset 0, hole size 2
    # (two 1460-byte segments missing at RCV.NXT); layout as the reference sends it
    conn, peer = passive(ScpsSettings(snack=True), sack=False)
    [synack] = peer.send(SYN, 0, options=[("mss", 1460), ("scps", 0x40, 1)])
    assert tcp_options(synack) == bytes([2, 4, 0x05, 0xB4, 20, 4, 0x40, 0])
    peer.send(ACK, 1, 1)
    assert peer.send(ACK, 1, 1, payload_pattern("in", 0, 1460)) == []        # delayed ACK
    [a] = peer.send(ACK, 1 + 3 * 1460, 1, payload_pattern("in", 3 * 1460, 1460))
    assert tcp_options(a) == bytes([1, 1, 21, 6, 0, 0, 0, 2])
    assert parse_segment(a).ack == (PISS + 1461) % M32


def test_bets_skipped_bytes_read_as_zeros():
    conn, peer = passive(ScpsSettings(snack=False, bets=True, bets_hole_timeout_us=300_000), sack=False)
    peer.send(SYN, 0, options=[("mss", 1460), ("scps", 0x80, 1)])
    peer.send(ACK, 1, 1)
    peer.send(ACK, 1, 1, payload_pattern("in", 0, 1000))
    peer.send(ACK, 2001, 1, payload_pattern("in", 2000, 1000))
    assert conn.get_timer() == 300_000            # the hole timer (the delayed ACK went with the dup ACK)
    peer.now = 300_000
    conn.handle_timer(peer.now)
    [a] = peer.out()
    assert parse_segment(a).ack == (PISS + 3001) % M32
    evs = peer.events()
    assert ev.BytesSkipped(1000, 1000) in evs
    data = conn.recv(10_000)
    assert data == payload_pattern("in", 0, 1000) + bytes(1000) + payload_pattern("in", 2000, 1000)
    st = conn.statistics()
    assert (st.bytes_skipped, st.bets_skips, st.bytes_received) == (1000, 1, 2000)


def test_bets_not_negotiated_never_skips():
    # BETS offered here but not by the peer (0x40 only): the hole waits for its repair
    conn, peer = passive(ScpsSettings(snack=True, bets=True, bets_hole_timeout_us=300_000), sack=False)
    peer.send(SYN, 0, options=[("mss", 1460), ("scps", 0x40, 1)])
    peer.send(ACK, 1, 1)
    peer.send(ACK, 2001, 1, payload_pattern("in", 2000, 1000))
    assert conn.scps_features == 0x40
    t = conn.get_timer()
    assert t is None or t != 300_000
    peer.now = 10_000_000
    conn.handle_timer(peer.now)
    assert conn.statistics().bytes_skipped == 0 and conn.recv_available() == 0


@pytest.mark.parametrize("configured, peer_scps, sent", [(True, True, True), (False, True, False),
                                                           (True, False, False)])
def test_corruption_experienced_generated_when_configured(configured, peer_scps, sent):
    conn, peer = passive(ScpsSettings(corruption_experienced=configured))
    opts = [("mss", 1460)] + ([("scps", 0x40, 1)] if peer_scps else [])
    peer.send(SYN, 0, options=opts)
    peer.send(ACK, 1, 1)
    assert conn.report_corruption() is sent
    out = peer.out()
    assert len(out) == (1 if sent else 0)
    if sent:
        assert tcp_options(out[0]) == bytes([1, 1, 23, 2])
        assert peer.out() == []                   # once
        assert conn.statistics().corruption_sent == 1


def test_connect_without_scps_offer_for_a_remembered_destination():
    cache = ScpsRefusals(ttl_us=60_000_000)
    cfg = TcpConfig(timestamps=False, scps=ScpsSettings())
    a = TcpConnection(cfg, A_ADDR4, 8080, B_ADDR4, 40000, ISS)
    a.connect(0)
    [syn] = a.packets_to_send(0)
    assert ("scps", 0x40, 0) in parse_segment(syn).options
    rst = Segment(4, B_ADDR4, A_ADDR4, 40000, 8080, 0, (ISS + 1) % M32, RST | ACK, 0)
    a.receive_packet(build_segment(rst), 1000)
    [syn2] = a.packets_to_send(1000)
    assert not any(o[0] == "scps" for o in parse_segment(syn2).options)
    fallback = [e for e in iter(a.next_event, None) if isinstance(e, ev.ScpsFallback)]
    assert fallback == [ev.ScpsFallback("rst")]
    cache.remember((B_ADDR4, 40000), 1000)
    # the next connection to that destination goes without option 20 from the start
    b = TcpConnection(cfg, A_ADDR4, 8081, B_ADDR4, 40000, ISS)
    b.connect(2000, scps_offer=not cache.refused((B_ADDR4, 40000), 2000))
    [syn3] = b.packets_to_send(2000)
    assert not any(o[0] == "scps" for o in parse_segment(syn3).options)


def test_refusal_cache_expires_and_is_bounded():
    c = ScpsRefusals(ttl_us=1000, max_entries=2)
    c.remember("a", 0)
    assert c.refused("a", 999) and not c.refused("a", 1000)
    assert len(c) == 0                              # expired entries are dropped when seen
    c.remember("a", 0)
    c.remember("b", 10)
    c.remember("c", 20)                             # "a" is evicted
    assert (c.refused("a", 30), c.refused("b", 30), c.refused("c", 30)) == (False, True, True)
    assert c.evicted == 1
    assert c.expire(1015) == 1 and len(c) == 1
    c.forget("c")
    assert len(c) == 0
    with pytest.raises(ValueError):
        ScpsRefusals(0)


@pytest.mark.parametrize("kw", [dict(conn_id=256), dict(conn_id=-1), dict(extra_bits=512),
                                dict(bets_hole_timeout_us=0), dict(bets_max_retransmits=0),
                                dict(syn_retries_with_option=-1), dict(snack_repeat=-1)])
def test_scps_settings_validated(kw):
    with pytest.raises(ValueError):
        ScpsSettings(**kw)


def test_offered_bits():
    assert ScpsSettings().offered_bits == 0x40
    assert ScpsSettings(snack=False, bets=True, compression=True, extra_bits=0x08).offered_bits == 0x98


def _pair(seed, loss, scps_a, scps_b, size=600_000, **cfg):
    rng = random.Random(seed)
    a = TcpConnection(TcpConfig(scps=scps_a, **cfg), A_ADDR4, 40000, B_ADDR4, 80, rng.getrandbits(32))
    b = TcpConnection(TcpConfig(scps=scps_b, **cfg), B_ADDR4, 80, A_ADDR4, 40000, rng.getrandbits(32))
    data = rng.randbytes(size)
    res = run_pair(a, b, data, b"", LinkModel(seed * 2, 100_000, 0, loss, rate_bps=20_000_000),
                   LinkModel(seed * 2 + 1, 100_000, 0, loss, rate_bps=20_000_000))
    assert hashlib.sha256(res.received_by_b).hexdigest() == hashlib.sha256(data).hexdigest()
    assert res.stats_a.bytes_acked == size
    return res


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sack", [True, False])
def test_two_scps_engines_repair_by_snack(seed, sack):
    sc = ScpsSettings(snack=True, record_boundary=True)
    res = _pair(10 + seed, 0.02, sc, sc, sack=sack)
    sa, sb = res.stats_a, res.stats_b
    assert sa.scps_peer and sb.scps_peer and sa.scps_features == sb.scps_features == 0x40
    assert sb.snacks_sent > 0 and sa.snacks_received > 0 and sa.snack_retransmits > 0
    assert sa.records_sent > 0 and sb.records_received > 0


def _data_seq(pkt):
    ihl = (pkt[0] & 15) * 4
    total = int.from_bytes(pkt[2:4], "big")
    doff = (pkt[ihl + 12] >> 4) * 4
    return int.from_bytes(pkt[ihl + 4:ihl + 8], "big") if total - ihl - doff > 0 else None


@pytest.mark.parametrize("seed,loss,slack", [(seed, 0.01, 1) for seed in range(8)]
                         + [(seed, 0.05, 2) for seed in (0, 2, 4)])
def test_a_lost_segment_is_repaired_once_on_a_geo_link(seed, loss, slack):
    """A rate-based SCPS sender over a 600 ms, 50 Mbit/s link with 1 % loss on the data
    path: every lost segment is sent again once (plus at most one RFC 6675 rescue
    retransmission, which may be spurious by design), not once by the SNACK repair and
    again by SACK recovery.  The receiver repeats its SNACK for snack_repeat ACKs and
    a new recovery restarts HighRxt at SND.UNA below repairs still in flight: what
    was resent less than an SRTT ago is not resent (before: 46 lost, 68 resent, 21
    delivered twice for seed 0).  At 5 % loss (~130 holes a round trip, with SACK) the
    receiver's out-of-order queue holds them all (256 intervals; with 64 it dropped the
    rest and 2,886 segments were resent for 296 lost); one more resend may come from a
    retransmission timeout there."""
    rng = random.Random(seed)
    cfg = dict(congestion="rate", rate_bps=50_000_000, loss_response="corruption", snd_buf=16 << 20,
               rcv_buf=16 << 20, scps=ScpsSettings(snack=True), sack=seed % 2 == 0)
    a = TcpConnection(TcpConfig(**cfg), A_ADDR4, 40000, B_ADDR4, 80, rng.getrandbits(32))
    b = TcpConnection(TcpConfig(**cfg), B_ADDR4, 80, A_ADDR4, 40000, rng.getrandbits(32))
    data = rng.randbytes(4_000_000)
    ab = LinkModel(seed * 2, 300_000, 0, loss, rate_bps=50_000_000)
    sent, delivered = {}, {}
    send, deliver = ab.send, ab.deliver

    def counting_send(pkt, now):
        q = _data_seq(pkt)
        if q is not None:
            sent[q] = sent.get(q, 0) + 1
        return send(pkt, now)

    def counting_deliver(now):
        out = deliver(now)
        for pkt in out:
            q = _data_seq(pkt)
            if q is not None:
                delivered[q] = delivered.get(q, 0) + 1
        return out

    ab.send, ab.deliver = counting_send, counting_deliver
    res = run_pair(a, b, data, b"", ab, LinkModel(seed * 2 + 1, 300_000, 0, 0.0, rate_bps=50_000_000))
    assert res.received_by_b == data
    lost = sum(sent.values()) - sum(delivered.values())
    assert lost > 0
    assert lost <= res.stats_a.retransmits <= lost + slack
    assert sum(1 for n in delivered.values() if n > 1) <= 1


def test_scps_against_plain_peer_is_plain_tcp():
    res = _pair(3, 0.02, ScpsSettings(record_boundary=True), None)
    sa, sb = res.stats_a, res.stats_b
    assert not sa.scps_peer and not sb.scps_peer
    assert (sa.snacks_received, sb.snacks_sent, sa.records_sent, sa.snack_retransmits) == (0, 0, 0, 0)


class DropSeq(LinkModel):
    """A link that loses every copy of the data segment at one stream offset."""

    def __init__(self, *a, iss, offset, **kw):
        super().__init__(*a, **kw)
        self.iss, self.offset, self.dropped = iss, offset, 0

    def send(self, packet, now):
        s = parse_segment(packet)
        if s.payload and (s.seq - self.iss - 1) % M32 == self.offset:
            self.dropped += 1
            return
        super().send(packet, now)


def test_bets_both_ends_move_past_an_unrepairable_hole():
    # BETS sender gives the segment up after 2 retransmissions; the receiver delivers
    # past the hole after 3 s; the transfer ends without a timeout or reset and the
    # receiver says exactly which bytes it skipped
    sc = ScpsSettings(snack=True, bets=True, bets_hole_timeout_us=3_000_000, bets_max_retransmits=2)
    cfg = TcpConfig(scps=sc, sack=True)
    a = TcpConnection(cfg, A_ADDR4, 40000, B_ADDR4, 80, ISS)
    b = TcpConnection(cfg, B_ADDR4, 80, A_ADDR4, 40000, PISS)
    data = random.Random(5).randbytes(300_000)
    lab = DropSeq(1, 100_000, 0, 0.0, rate_bps=20_000_000, iss=ISS, offset=10 * 1448)
    res = run_pair(a, b, data, b"", lab, LinkModel(2, 100_000, 0, 0.0, rate_bps=20_000_000))
    sb, sa = res.stats_b, res.stats_a
    assert res.state_a in ("TIME-WAIT", "CLOSED") and res.state_b in ("TIME-WAIT", "CLOSED")
    assert (sb.bets_skips, sb.bytes_skipped) == (1, 1448)
    assert res.received_by_b == data[:10 * 1448] + bytes(1448) + data[11 * 1448:]
    assert sa.bets_abandoned > 0 and sa.timeouts < 15
    assert lab.dropped == 3                      # the original and 2 retransmissions, no more


def test_script_codec_agrees_with_wire_layer_on_scps_options():
    import stackpep._fast.wire as wire
    opts = [("scps", 0xC0, 7), ("nop",), ("nop",), ("snack", 3, 2), ("nop",), ("nop",), ("snack", 9, 1),
            ("nop",), ("nop",), ("rb",), ("nop",), ("nop",), ("ce",)]
    pkt = build_segment(Segment(4, B_ADDR4, A_ADDR4, 40000, 8080, 1, 2, ACK, 100, 0, opts))
    w = wire.parse_packet(pkt, 1)
    assert w.scps[:2] == (0xC0, 7)
    assert tuple(w.snack_holes) == ((3, 2), (9, 1))
    assert w.record_boundary and w.corruption_experienced
    assert [o for o in parse_segment(pkt).options if o[0] != "nop"] == [
        ("scps", 0xC0, 7), ("snack", 3, 2), ("snack", 9, 1), ("rb",), ("ce",)]


def _pcap(path, packets):
    import struct
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))   # LINKTYPE_RAW
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", i, 0, len(p), len(p)) + p)


def test_emitted_scps_options_decode_in_tshark(tmp_path):
    # what the engine emits (option 20 in the SYN-ACK, a SNACK on an ACK) read back by
    # an independent dissector (tshark 4.0 flags well-formed SNACKs as malformed: only
    # the decoded values are checked)
    import shutil
    import subprocess
    if not shutil.which("tshark"):
        pytest.skip("tshark not installed")
    conn, peer = passive(ScpsSettings(snack=True, conn_id=0x2A), sack=False)
    [synack] = peer.send(SYN, 0, options=[("mss", 1460), ("scps", 0x40, 1)])
    peer.send(ACK, 1, 1)
    [ack] = peer.send(ACK, 1 + 2 * 1460, 1, payload_pattern("in", 2 * 1460, 1460))
    path = tmp_path / "scps.pcap"
    _pcap(path, [synack, ack])
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "tcp.options.scps.binding",
                          "-e", "tcp.options.scps.vector", "-e", "tcp.options.snack.offset",
                          "-e", "tcp.options.snack.size"],
                         capture_output=True, text=True, timeout=60)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) == 2, out
    assert rows[0][1] in ("0x40", "64", "0x00000040") and rows[0][0] in ("42", "0x2a", "0x0000002a"), rows
    assert rows[1][2:] == ["0", "2"], rows
