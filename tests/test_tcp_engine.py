"""Unit tests of the sans-IO TCP engine (stackpep._fast.tcp) with exact segments.

Each test plays the peer by hand: inbound segments are built with the wire
layer's ``Segment``, every outbound packet is parsed back and compared field
by field.  The packetdrill-style scripts (vectors/tcp/) cover the behaviours
one by one; these tests pin the API contract and the parts scripts cannot
reach easily (statistics, policies, congestion-control arithmetic, IPv6).
"""
from __future__ import annotations

import dataclasses

import pytest

from stackpep._fast.tcp import STATES, TcpConnection
from stackpep._fast.wire import Segment, parse_packet
from stackpep.tcp import events as ev
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.statistics import DROP_REASONS, TcpStatistics

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
L4, R4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
L6 = bytes.fromhex("fd000000000000000000000000000001")
R6 = bytes.fromhex("fd000000000000000000000000000002")
ISS = 1_000_000_000
PISS = 3_000_000_000
M32 = 1 << 32


class Peer:
    """The far end, driven by hand: builds inbound packets, parses outbound ones."""

    def __init__(self, conn: TcpConnection, local: bytes, remote: bytes, lport=8080, rport=40000):
        self.conn = conn
        self.local, self.remote = local, remote        # the engine's addresses
        self.lport, self.rport = lport, rport
        self.now = 0

    def packet(self, flags, seq, ack=0, win=65535, payload=b"", tos=0, **opts) -> bytes:
        s = Segment()
        s.src, s.dst = self.remote, self.local
        s.sport, s.dport = self.rport, self.lport
        s.seq = (PISS + seq) % M32
        s.ack = (ISS + ack) % M32 if flags & ACK else 0
        s.flags = flags
        s.window = win
        s.tos = tos
        for k, v in opts.items():
            setattr(s, k, v)
        return s.to_bytes(payload)

    def send(self, flags, seq, ack=0, win=65535, payload=b"", **opts):
        self.conn.receive_packet(self.packet(flags, seq, ack, win, payload, **opts), self.now)
        return self.out()

    def out(self):
        segs = []
        for p in self.conn.packets_to_send(self.now):
            s = parse_packet(p)            # checksums verified by the wire layer
            assert s.src == self.local and s.dst == self.remote
            assert (s.sport, s.dport) == (self.lport, self.rport)
            segs.append(s)
        return segs

    def events(self):
        out = []
        while (e := self.conn.next_event()) is not None:
            out.append(e)
        return out

    def advance(self, t_us):
        """Move the clock to t_us, firing every timer due on the way."""
        segs = []
        while True:
            t = self.conn.get_timer()
            if t is None or t > t_us:
                break
            self.now = max(self.now, t)
            self.conn.handle_timer(self.now)
            segs += self.out()
        self.now = max(self.now, t_us)
        return segs


def rel(s, base=ISS):
    return (s.seq - base) % M32


def rack(s):
    return (s.ack - PISS) % M32


def opts_of(s):
    return {"mss": s.mss, "wscale": s.wscale, "sack_perm": s.sack_perm, "ts": s.ts}


def established(cfg=None, v6=False, peer_opts=None, **kw) -> Peer:
    """A passively opened connection in ESTABLISHED (peer offered MSS 1460, WS 7, SACK)."""
    cfg = cfg or TcpConfig(timestamps=False, **kw)
    local, remote = (L6, R6) if v6 else (L4, R4)
    conn = TcpConnection(cfg, local, 8080, remote, 40000, ISS)
    peer = Peer(conn, local, remote)
    conn.listen()
    o = {"mss": 1460, "wscale": 7, "sack_perm": True}
    o.update(peer_opts or {})
    [synack] = peer.send(SYN, 0, win=65535, **o)
    assert synack.flags == SYN | ACK
    assert peer.send(ACK, 1, 1, win=1000) == []
    assert conn.state == "ESTABLISHED"
    assert [type(e) for e in peer.events()] == [ev.Connected]
    return peer


# -- API surface -------------------------------------------------------------------------

def test_states_spelled_as_rfc():
    assert STATES == ("CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                      "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT")


@pytest.mark.parametrize("kw", [
    {"congestion": "bbr"}, {"loss_response": "ignore"}, {"delayed_ack_us": 200_001},
    {"window_scale": 15}, {"min_rto_us": 2_000_000}, {"snd_buf": 0}, {"delayed_ack_segments": 0},
])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        TcpConfig(**kw)


def test_config_is_frozen_and_defaults_follow_rfcs():
    c = TcpConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.mss = 1000
    assert c.initial_rto_us == 1_000_000            # RFC 6298 §2.1
    assert c.initial_window_segments == 10          # RFC 6928
    assert c.delayed_ack_us <= 200_000
    assert c.keepalive is False                     # RFC 9293 §3.8.4: off by default
    assert c.snd_buf >= 4 << 20 and c.rcv_buf >= 4 << 20


def test_bad_addresses_rejected():
    with pytest.raises(ValueError):
        TcpConnection(TcpConfig(), L4, 1, R6, 2, 0)
    with pytest.raises(ValueError):
        TcpConnection(TcpConfig(), L4, 0, R4, 2, 0)


# -- handshake ------------------------------------------------------------------------------

def test_active_open_exact_syn_and_ack():
    conn = TcpConnection(TcpConfig(ecn=True), L4, 8080, R4, 40000, ISS, ts_offset=7)
    peer = Peer(conn, L4, R4)
    peer.now = 5_000
    conn.connect(peer.now)
    [syn] = peer.out()
    assert syn.flags == SYN | ECE | CWR                     # RFC 3168 §6.1.1 ECN-setup SYN
    assert (syn.seq, syn.window) == (ISS, 65535)            # RFC 7323 §2.2: SYN window unscaled
    # 4 MiB receive buffer needs shift 7 (RFC 7323 §2.3); TS clock = now/1000 + offset
    assert opts_of(syn) == {"mss": 1460, "wscale": 7, "sack_perm": True, "ts": (5 + 7, 0)}
    assert syn.ip_df and syn.ecn == 0                       # RFC 1191 DF; SYN is not ECT
    assert conn.state == "SYN-SENT"
    assert conn.get_timer() == 5_000 + 1_000_000            # RFC 6298 §2.1 initial RTO
    peer.now = 45_000
    [ack] = peer.send(SYN | ACK | ECE, 0, 1, win=5000, mss=1400, wscale=9, sack_perm=True, ts=(777, 12))
    assert ack.flags == ACK and rel(ack) == 1 and rack(ack) == 1
    assert ack.ts == (45 + 7, 777) and ack.window == (4 << 20) >> 7
    assert conn.state == "ESTABLISHED" and conn.irs == PISS
    assert [type(e) for e in peer.events()] == [ev.Connected]
    st = conn.statistics()
    assert isinstance(st, TcpStatistics)
    assert (st.snd_wscale, st.rcv_wscale, st.sack, st.timestamps, st.ecn) == (9, 7, True, True, True)
    assert st.peer_mss == 1400 and st.mss == 1400 - 12      # TS option takes 12 bytes (RFC 6691)
    assert st.snd_wnd == 5000                               # the SYN-ACK window is not scaled
    assert st.rtt_us == 40_000 and st.srtt_us == 40_000 and st.rttvar_us == 20_000
    assert st.rto_us == 200_000                             # 40 ms + 4*20 ms -> min_rto
    assert st.cwnd == 10 * st.mss                           # RFC 6928


def test_passive_open_declines_unoffered_options_and_ecn():
    conn = TcpConnection(TcpConfig(ecn=False, sack=False), L4, 8080, R4, 40000, ISS)
    peer = Peer(conn, L4, R4)
    conn.listen()
    [synack] = peer.send(SYN | ECE | CWR, 0, mss=1200, sack_perm=True, ts=(50, 0))
    assert synack.flags == SYN | ACK                         # ECN declined: no ECE (RFC 3168 §6.1.1)
    assert rack(synack) == 1 and synack.seq == ISS
    # peer sent no WS: we send none either (RFC 7323 §2.2); SACK disabled locally
    assert opts_of(synack) == {"mss": 1460, "wscale": None, "sack_perm": False, "ts": (0, 50)}
    assert conn.state == "SYN-RECEIVED"
    assert peer.send(ACK, 1, 1, win=100, ts=(51, 0)) == []
    st = conn.statistics()
    assert (st.snd_wscale, st.sack, st.timestamps, st.ecn, st.snd_wnd) == (-1, False, True, False, 100)


def test_mss_clamped_to_mtu_ipv6():
    conn = TcpConnection(TcpConfig(mtu=1400), L6, 8080, R6, 40000, ISS)
    conn.connect(0)
    [syn] = Peer(conn, L6, R6).out()
    assert syn.ip_version == 6 and syn.mss == 1400 - 60


# -- data, ACKs, SACK ---------------------------------------------------------------------------

def test_delayed_ack_every_second_segment_and_timer():
    peer = established()
    data = bytes(range(256)) * 8
    assert peer.send(ACK | PSH, 1, 1, payload=data[:1000]) == []     # first: delayed
    assert peer.conn.get_timer() == peer.now + 40_000
    [a] = peer.send(ACK | PSH, 1001, 1, payload=data[1000:2000])     # second full one: ACK now
    assert a.flags == ACK and rack(a) == 2001 and peer.conn.get_timer() is None
    assert peer.send(ACK, 2001, 1, payload=data[:10]) == []
    [a] = peer.advance(peer.now + 40_000)                            # delayed-ACK timer
    assert rack(a) == 2011
    assert peer.conn.recv(5000) == data[:2000] + data[:10]
    # coalesced: one DataReadable until the application reads, then a new one
    assert [type(e) for e in peer.events()] == [ev.DataReadable]
    peer.send(ACK, 2011, 1, payload=b"n")
    assert [type(e) for e in peer.events()] == [ev.DataReadable]


def test_out_of_order_sack_blocks_most_recent_first():
    peer = established()
    p = b"x" * 100
    [a] = peer.send(ACK, 201, 1, payload=p)          # hole at 1..201
    assert rack(a) == 1 and a.sack == (((PISS + 201), (PISS + 301)),)
    [a] = peer.send(ACK, 501, 1, payload=p)
    assert a.sack == ((PISS + 501, PISS + 601), (PISS + 201, PISS + 301))
    [a] = peer.send(ACK, 301, 1, payload=p)          # extends the first block: now most recent
    assert a.sack == ((PISS + 201, PISS + 401), (PISS + 501, PISS + 601))
    for s in (701, 901, 1101):
        [a] = peer.send(ACK, s, 1, payload=p)
    assert len(a.sack) == 4                          # RFC 2018 §3: at most 4 without timestamps
    assert a.sack[0] == (PISS + 1101, PISS + 1201)
    [a] = peer.send(ACK, 1, 1, payload=b"y" * 200)   # fills the first hole: ACK at once
    assert rack(a) == 401 and a.sack[0] == (PISS + 1101, PISS + 1201)
    assert peer.conn.recv(1000) == b"y" * 200 + b"x" * 200


def test_sack_limited_to_three_blocks_with_timestamps():
    conn = TcpConnection(TcpConfig(), L4, 8080, R4, 40000, ISS)
    peer = Peer(conn, L4, R4)
    conn.listen()
    peer.send(SYN, 0, mss=1460, sack_perm=True, ts=(1, 0), wscale=0)
    peer.send(ACK, 1, 1, ts=(2, 0))
    for i, s in enumerate((101, 301, 501, 701, 901)):
        [a] = peer.send(ACK, s, 1, payload=b"z" * 50, ts=(3 + i, 0))
    assert len(a.sack) == 3 and a.sack[0] == (PISS + 901, PISS + 951)     # RFC 2018 §3


def test_send_buffer_bounded_and_sendspace_event():
    peer = established(TcpConfig(timestamps=False, snd_buf=3000, nagle=False))
    conn = peer.conn
    assert conn.send(b"a" * 5000) == 3000 and conn.send_space() == 0
    segs = peer.out()
    assert [(rel(s), len(s.payload), s.flags) for s in segs] == [
        (1, 1460, ACK), (1461, 1460, ACK), (2921, 80, ACK | PSH)]
    assert conn.statistics().send_buffered == 3000
    peer.send(ACK, 1, 1461, win=1000)
    assert peer.events() == []                           # only a third free: no SendSpace yet
    peer.send(ACK, 1, 3001, win=1000)
    assert [type(e) for e in peer.events()] == [ev.SendSpace]
    assert conn.send_space() == 3000


def test_zero_window_probe_and_backoff():
    peer = established(TcpConfig(timestamps=False, nagle=False))
    conn = peer.conn
    conn.send(b"q" * 3000)
    segs = peer.out()
    # the handshake ACK offered 1000 << 7 bytes: everything leaves
    assert sum(len(s.payload) for s in segs) == 3000
    peer.send(ACK, 1, 3001, win=0)
    conn.send(b"q" * 2000)
    assert peer.out() == []
    t0 = peer.now
    t1 = conn.get_timer()
    assert t1 == t0 + 200_000                            # persist timer = RTO (min_rto)
    [probe] = peer.advance(t1)
    assert rel(probe) == 3001 and probe.payload == b"q"  # RFC 9293 §3.8.6.1: one octet
    t2 = conn.get_timer()
    assert t2 - t1 == 400_000                            # backed off
    [probe2] = peer.advance(t2)
    assert rel(probe2) == 3001
    [a] = peer.send(ACK, 1, 3001, win=10)                # window opens: 10 << 7 = 1280 bytes
    assert (rel(a), len(a.payload)) == (3001, 1280)
    assert conn.statistics().zero_window_probes == 2


# -- RFC 5961, drops -------------------------------------------------------------------------------

def test_rfc5961_challenge_acks_and_drop_counters():
    peer = established()
    conn = peer.conn
    [c] = peer.send(RST, 100, 0)                 # in window, not at RCV.NXT
    assert c.flags == ACK and rack(c) == 1 and conn.state == "ESTABLISHED"
    [c] = peer.send(SYN, 5, 0)                   # SYN in a synchronized state
    assert c.flags == ACK and rack(c) == 1
    assert peer.send(RST, 10_000_000, 0) == []   # outside the window: silently dropped
    [c] = peer.send(ACK, 1, 5000)                # acknowledges unsent data
    assert c.flags == ACK
    bad = bytearray(peer.packet(ACK, 1, 1, payload=b"abc"))
    bad[-1] ^= 0xFF
    conn.receive_packet(bytes(bad), peer.now)
    d = conn.statistics().drops
    assert d == {"rst_challenged": 1, "syn_challenged": 1, "rst_out_of_window": 1,
                 "ack_unsent": 1, "bad_checksum": 1}
    assert set(d) <= set(DROP_REASONS)
    assert conn.statistics().challenge_acks == 2
    assert peer.send(RST, 1, 0) == []            # exactly at RCV.NXT: reset
    assert [type(e) for e in peer.events()] == [ev.ConnectionReset, ev.ConnectionClosed]
    assert conn.state == "CLOSED"


@pytest.mark.parametrize("v6", [False, True])
def test_checked_packets_are_not_summed_again(v6):
    """receive_packet(..., checked=True): the caller (a port: the capture verified
    the checksums) vouches for them, so the engine does not verify them a second
    time -- shown with a wrong TCP checksum, which it then takes -- while by default
    it verifies (RFC 9293 §3.1) and drops."""
    peer = established(v6=v6)
    conn = peer.conn
    bad = bytearray(peer.packet(ACK | PSH, 1, 1, payload=b"abc"))
    ihl = 40 if v6 else 20
    bad[ihl + 16] ^= 0xFF                        # the TCP checksum field only: the data is intact
    conn.receive_packet(bytes(bad), peer.now)
    assert conn.statistics().drops == {"bad_checksum": 1}
    assert conn.recv(100) == b""
    conn.receive_packet(bytes(bad), peer.now, True)
    assert conn.statistics().drops == {"bad_checksum": 1}
    assert conn.recv(100) == b"abc"
    [a] = peer.advance(conn.get_timer())          # the delayed ACK covers the three bytes
    assert a.flags == ACK and rack(a) == 4


def test_wrong_flow_is_dropped():
    peer = established()
    peer.rport = 40001
    assert peer.send(ACK, 1, 1, payload=b"x") == []
    assert peer.conn.statistics().drops == {"wrong_flow": 1}


# -- closing ------------------------------------------------------------------------------------------

def test_close_sequence_events_and_time_wait():
    peer = established(TcpConfig(timestamps=False, time_wait_us=1_000_000))
    conn = peer.conn
    conn.send(b"bye")
    conn.send_eof()
    assert conn.state == "FIN-WAIT-1"
    [s] = peer.out()
    assert s.flags == ACK | PSH | FIN and rel(s) == 1 and s.payload == b"bye"
    peer.send(ACK, 1, 5)
    assert conn.state == "FIN-WAIT-2"
    [a] = peer.send(ACK | FIN, 1, 5)
    assert rack(a) == 2 and conn.state == "TIME-WAIT"
    assert conn.at_eof() and conn.recv(10) == b""
    assert conn.get_timer() == peer.now + 1_000_000
    peer.advance(peer.now + 1_000_000)
    assert conn.state == "CLOSED"
    evs = peer.events()
    assert [type(e) for e in evs] == [ev.EofReceived, ev.ConnectionClosed]
    assert evs[-1].reason == ev.CloseReason.NORMAL


def test_abort_sends_rst():
    peer = established()
    peer.conn.abort()
    [r] = peer.out()
    assert r.flags == RST | ACK and rel(r) == 1 and rack(r) == 1
    evs = peer.events()
    assert evs == [ev.ConnectionClosed(ev.CloseReason.ABORTED)]
    with pytest.raises(ConnectionError):
        peer.conn.send(b"x")


# -- PMTU, congestion control, loss-response policy ------------------------------------------------------

def test_icmp_ptb_resends_at_new_size():
    peer = established(TcpConfig(timestamps=False, nagle=False))
    conn = peer.conn
    peer.send(ACK, 1, 1, win=100)            # 12800 bytes of window
    conn.send(b"m" * 2920)
    assert [len(s.payload) for s in peer.out()] == [1460, 1460]
    conn.icmp_packet_too_big(1280, peer.now)
    assert [len(s.payload) for s in peer.out()] == [1240, 1240, 440]
    conn.icmp_packet_too_big(1500, peer.now)        # larger: ignored
    assert conn.statistics().mss == 1240 and conn.statistics().timeouts == 0


def _fast_retransmit(cfg):
    peer = established(cfg)
    conn = peer.conn
    peer.send(ACK, 1, 1, win=1000)                  # 128000 bytes of window
    conn.send(b"d" * 20000)
    segs = peer.out()
    assert len(segs) == 10                          # IW = 10 segments
    cwnd0 = conn.statistics().cwnd
    sack = []
    for i in range(1, 4):                           # segment 1 lost, 2..4 SACKed
        blk = ((ISS + 1 + 1460), (ISS + 1 + 1460 * (i + 1)))
        out = peer.send(ACK, 1, 1, win=1000, sack=(blk,))
        sack.append(out)
    return conn, cwnd0, sack[-1]


@pytest.mark.parametrize("cc,policy,factor", [
    ("newreno", "congestion", 0.5), ("cubic", "congestion", 0.7), ("cubic", "corruption", 1.0)])
def test_fast_retransmit_reduction_per_cc_and_policy(cc, policy, factor):
    conn, cwnd0, out = _fast_retransmit(TcpConfig(timestamps=False, congestion=cc, loss_response=policy))
    assert out and rel(out[0]) == 1 and len(out[0].payload) == 1460   # the hole is resent at once
    st = conn.statistics()
    assert st.fast_retransmits == 1 and st.retransmits == 1
    # NewReno: ssthresh = FlightSize/2 (RFC 5681 eq. 4); CUBIC: cwnd*0.7 (RFC 9438 §4.6);
    # the corruption policy (SCPS-TP) keeps cwnd
    assert st.cwnd == int(cwnd0 * factor)


def test_set_loss_response_validates():
    conn = TcpConnection(TcpConfig(), L4, 1, R4, 2, 0)
    conn.set_loss_response("corruption")
    with pytest.raises(ValueError):
        conn.set_loss_response("whatever")


def test_rto_backoff_and_karn():
    peer = established(TcpConfig(timestamps=False, min_rto_us=1_000_000))
    conn = peer.conn
    conn.send(b"r" * 100)
    [s] = peer.out()
    t0 = peer.now
    assert conn.get_timer() == t0 + 1_000_000
    [r1] = peer.advance(t0 + 1_000_000)
    assert rel(r1) == 1 and r1.payload == b"r" * 100
    assert conn.get_timer() == t0 + 3_000_000              # RFC 6298 §5.5: doubled
    [r2] = peer.advance(t0 + 3_000_000)
    peer.now = t0 + 3_100_000
    peer.send(ACK, 1, 101)
    st = conn.statistics()
    assert st.timeouts == 2 and st.retransmits == 2
    assert st.rtt_us == 0       # still the handshake's sample: Karn, none from retransmissions
    assert st.cwnd == st.mss                               # RFC 5681 §3.1 loss window, then
    assert conn.get_timer() is None


def test_ecn_marks_data_and_echoes_ce():
    conn = TcpConnection(TcpConfig(timestamps=False, ecn=True), L4, 8080, R4, 40000, ISS)
    peer = Peer(conn, L4, R4)
    conn.listen()
    [sa] = peer.send(SYN | ECE | CWR, 0, mss=1460)
    assert sa.flags == SYN | ACK | ECE
    peer.send(ACK, 1, 1)
    conn.send(b"e" * 10)
    [d] = peer.out()
    assert d.ecn == 2                                       # ECT(0) on new data (RFC 3168 §6.1.5)
    [a] = peer.send(ACK, 1, 11, payload=b"c" * 10, tos=3)   # CE-marked: ECE at once
    assert a.flags & ECE and a.ecn == 0
    peer.send(ACK, 11, 11, payload=b"c" * 10)
    [a2] = peer.advance(peer.now + 40_000)
    assert a2.flags & ECE                                   # until CWR arrives (§6.1.3)
    peer.send(ACK | CWR, 21, 11, payload=b"c" * 10)
    [a3] = peer.advance(peer.now + 40_000)
    assert not a3.flags & ECE
    assert conn.statistics().ecn_ce_received == 1


def test_sequence_numbers_wrap():
    # ISS two below 2**32: the data crosses the wrap on the engine's side
    conn = TcpConnection(TcpConfig(timestamps=False, nagle=False), L4, 8080, R4, 40000, M32 - 2)
    peer = Peer(conn, L4, R4)
    conn.listen()
    peer.send(SYN, 0, mss=1000)
    s = Segment()
    s.src, s.dst, s.sport, s.dport = R4, L4, 40000, 8080
    s.seq, s.ack, s.flags, s.window = PISS + 1, M32 - 1, ACK, 65535
    conn.receive_packet(s.to_bytes(b""), 0)
    assert conn.state == "ESTABLISHED"
    conn.send(b"w" * 3000)
    segs = peer.out()
    assert [x.seq for x in segs] == [M32 - 1, 999, 1999]
    s.ack = 3000 - 1
    conn.receive_packet(s.to_bytes(b""), 0)
    st = conn.statistics()
    assert st.snd_una == 2999 and st.bytes_acked == 3000 and st.send_buffered == 0


def test_pure_ack_after_go_back_n_uses_highest_sequence_sent():
    # After an RTO rewinds SND.NXT, an ACK with SEQ = SND.NXT could fall below the
    # peer's RCV.NXT and be refused; it carries the highest sequence sent (as BSD).
    peer = established(TcpConfig(timestamps=False, nagle=False, delayed_ack_us=0))
    conn = peer.conn
    conn.send(b"g" * 3000)
    assert [rel(s) for s in peer.out()] == [1, 1461, 2921]
    [r] = peer.advance(conn.get_timer())
    assert rel(r) == 1 and len(r.payload) == 1460          # go-back-N from SND.UNA
    [a] = peer.send(ACK, 1, 1, payload=b"h" * 10)
    assert a.flags == ACK and rel(a) == 3001 and rack(a) == 11


def test_no_rtt_sample_from_timestamp_echo_older_than_rto():
    conn = TcpConnection(TcpConfig(min_rto_us=1_000_000), L4, 8080, R4, 40000, ISS)
    peer = Peer(conn, L4, R4)
    conn.listen()
    peer.send(SYN, 0, mss=1460, ts=(1, 0), wscale=0, sack_perm=True)
    peer.now = 100_000
    peer.send(ACK, 1, 1, ts=(2, 0))
    rtt0 = conn.statistics().srtt_us
    conn.send(b"t" * 100)
    [d] = peer.out()
    first_ts = d.ts[0]
    [r] = peer.advance(conn.get_timer())              # RTO at 1.1 s
    assert r.ts[0] == first_ts + 1000
    peer.now += 10_000
    # the ACK of the lost original arrives late, echoing its timestamp
    peer.send(ACK, 1, 101, ts=(3, first_ts))
    st = conn.statistics()
    assert st.bytes_acked == 100 and st.srtt_us == rtt0


def test_icmp_ptb_validated_against_flight():
    peer = established(TcpConfig(timestamps=False, nagle=False))
    conn = peer.conn
    conn.send(b"v" * 1460)
    peer.out()
    assert conn.icmp_packet_too_big(1280, peer.now, quoted_seq=ISS + 5000) is False   # beyond SND.MAX
    assert conn.icmp_packet_too_big(1280, peer.now, quoted_seq=ISS) is False          # before SND.UNA
    assert conn.icmp_packet_too_big(1280, peer.now, quoted_seq=ISS + 1) is True
    assert conn.statistics().drops == {"icmp_stale": 2}
    assert conn.statistics().mss == 1240
    listener = TcpConnection(TcpConfig(), L4, 1, R4, 2, 0)
    listener.listen()
    assert listener.icmp_packet_too_big(1280, 0) is False


def test_drop_names_match_statistics():
    from stackpep._fast.tcp import DROP_NAMES
    assert DROP_NAMES == DROP_REASONS


def test_set_congestion_control_keeps_window():
    from stackpep._fast.tcp import Cubic, NewReno
    peer = established(TcpConfig(timestamps=False, congestion="cubic"))
    conn = peer.conn
    cwnd = conn.statistics().cwnd
    conn.set_congestion_control(NewReno())
    st = conn.statistics()
    assert st.congestion == "newreno" and st.cwnd == cwnd
    conn.set_congestion_control(Cubic())
    assert conn.statistics().congestion == "cubic"
    with pytest.raises(TypeError):
        conn.set_congestion_control("vegas")
