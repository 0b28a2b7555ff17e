"""Immutable statistics snapshot of one ``TcpConnection`` (``statistics()``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

__all__ = ["TcpStatistics", "DROP_REASONS"]

#: every reason the engine discards an inbound segment (names of ``drops`` keys).
#: The one list of names: the engine's counters are the D_* codes of
#: stackpep/_fast/tcp.pxd in this order (tests/test_tcp_states.py checks it).
DROP_REASONS = (
    "malformed",          # the wire layer rejected it (counted there too, by error)
    "bad_checksum",       # TCP or IPv4 header checksum wrong
    "wrong_flow",         # addresses/ports are not this connection's
    "closed",             # arrived in CLOSED (answered by RST, RFC 9293 §3.10.7.1)
    "listen_rst",         # RST in LISTEN (RFC 9293 §3.10.7.2)
    "listen_ack",         # ACK in LISTEN (answered by RST)
    "listen_no_syn",      # neither SYN nor ACK/RST in LISTEN
    "syn_sent_bad_ack",   # unacceptable ACK in SYN-SENT (answered by RST, §3.10.7.3)
    "syn_sent_rst",       # RST without acceptable ACK in SYN-SENT
    "syn_sent_no_syn",    # neither SYN nor RST in SYN-SENT
    "paws",               # RFC 7323 §5.3 timestamp older than TS.Recent
    "no_timestamp",       # non-RST segment without TS after negotiation (RFC 7323 §3.2)
    "out_of_window",      # sequence not acceptable (RFC 9293 §3.10.7.4, answered by ACK)
    "rst_out_of_window",  # RST outside the window (RFC 5961 §3.2)
    "rst_challenged",     # RST in window but not at RCV.NXT: challenge ACK (RFC 5961 §3.2)
    "syn_challenged",     # SYN in a synchronized state: challenge ACK (RFC 5961 §4.2)
    "no_ack",             # non-SYN segment without ACK in a synchronized state
    "ack_too_old",        # SEG.ACK before SND.UNA - MAX.SND.WND (RFC 5961 §5.2)
    "ack_unsent",         # SEG.ACK after SND.NXT (RFC 9293 §3.10.7.4, answered by ACK)
    "syn_received_bad_ack",  # unacceptable ACK in SYN-RECEIVED (answered by RST)
    "beyond_window",      # payload bytes past the receive window (trimmed)
    "after_fin",          # data after the peer's FIN
    "ofo_full",           # out-of-order queue full
    "challenge_ack_limit",  # challenge ACK not sent: rate limit (RFC 5961 §7)
    "icmp_stale",         # packet-too-big ignored: no connection yet, or quoted SEQ not in flight (RFC 5927 §4.1)
    "syn_copy",           # the peer's redundant SYN copy in SYN-RECEIVED, already answered (first-flight redundancy)
)


@dataclass(frozen=True)
class TcpStatistics:
    state: str
    # RTT estimation (RFC 6298), µs; None before the first sample
    rtt_us: Optional[int]
    srtt_us: Optional[int]
    rttvar_us: Optional[int]
    min_rtt_us: Optional[int]
    rto_us: int
    # congestion control (bytes)
    congestion: str
    cwnd: int
    ssthresh: int
    in_flight: int            # RFC 6675 pipe / RFC 5681 FlightSize
    # sequence space (absolute values)
    snd_una: int
    snd_nxt: int
    snd_wnd: int              # peer's window, scaled
    rcv_nxt: int
    rcv_wnd: int              # what we advertise, unscaled bytes
    # negotiated
    mss: int                  # effective send MSS (payload bytes)
    peer_mss: int
    snd_wscale: int           # peer's shift (-1 = not negotiated)
    rcv_wscale: int           # our shift (-1 = not negotiated)
    sack: bool
    timestamps: bool
    ecn: bool
    # counters
    segments_sent: int
    segments_received: int
    bytes_sent: int           # payload bytes sent, retransmissions included
    bytes_retransmitted: int
    bytes_acked: int          # payload bytes acknowledged by the peer
    bytes_received: int       # in-order payload bytes delivered to the receive buffer
    retransmits: int          # segments retransmitted (any cause)
    timeouts: int             # RTO expiries
    fast_retransmits: int     # entries into fast recovery (RFC 5681 / 6582 / 6675)
    dup_acks: int             # duplicate ACKs received (RFC 5681 §2)
    challenge_acks: int       # RFC 5961 challenge ACKs sent
    zero_window_probes: int
    keepalives_sent: int
    ecn_ce_received: int      # packets received with CE (RFC 3168)
    cwr_reductions: int       # cwnd reductions answering ECE
    send_buffered: int        # bytes in the send buffer (unacknowledged + unsent)
    recv_buffered: int        # bytes readable by recv()
    drops: Dict[str, int] = field(default_factory=dict)
    """Discarded inbound segments by reason (names in DROP_REASONS); zeros omitted."""
    illegal_transitions: int = 0
    """State changes the engine refused (not in stackpep.tcp.states.TRANSITIONS): a bug if > 0."""
    events_lost: int = 0
    """Events not queued because the bounded event queue was full (next_event() not called)."""
    # -- SCPS-TP (CCSDS 714.0-B-2), docs/scps.md --------------------------------------------
    scps_peer: bool = False           # option 20 exchanged both ways
    scps_features: int = 0            # negotiated capability bits (AND of both offers)
    scps_syn_fallbacks: int = 0       # SYNs re-sent without option 20 (RST or timeout)
    snacks_sent: int = 0              # SNACK options (holes) sent
    snacks_received: int = 0          # SNACK options (holes) received
    snack_retransmits: int = 0        # segments retransmitted because a SNACK asked for them
    records_sent: int = 0             # segments sent with the record-boundary option
    records_received: int = 0         # record-boundary options received on new data
    corruption_sent: int = 0          # corruption-experienced options sent
    corruption_received: int = 0      # corruption-experienced options received
    bets_skips: int = 0               # BETS: holes delivered past (receiver)
    bytes_skipped: int = 0            # BETS: bytes delivered as zeros (receiver)
    bets_abandoned: int = 0           # BETS: retransmissions not sent after bets_max_retransmits (sender)
    records_merged: int = 0           # record ends not marked: 64 unacknowledged records already kept
    # link outage (CCSDS 714.0-B-2, notes "Loss-type handling"; TcpConfig.outage_rtos / outage_silence_us)
    outage: bool = False
    """In a link outage now: no new data, SND.UNA probed every outage_probe_us."""
    outage_entered: int = 0
    outage_probes: int = 0    # probes sent during outages (not counted as RTOs)
    outage_exited: int = 0    # outages ended by an acceptable ACK
    # -- TCP Fast Open (RFC 7413), docs/tcp-engine.md ---------------------------------------------
    tfo_syn_data_sent: int = 0        # bytes our SYN carried (active)
    tfo_syn_data_acked: int = 0       # of them, bytes the SYN-ACK acknowledged (active)
    tfo_syn_data_accepted: int = 0    # bytes accepted from a SYN whose cookie verified (passive)
    tfo_cookie_rejected: int = 0      # SYNs with data or a cookie whose cookie did not verify (passive)
    tfo_data_retransmitted_after_handshake: int = 0   # SYN bytes not acknowledged, sent again (active)
    tx_redundant_segments: int = 0   # second copies sent by first-flight redundancy (SYN / SYN-ACK included)
    tx_redundant_bytes: int = 0      # ... their bytes (payload; whole packet for a SYN copy)
    redundant_dupacks_ignored: int = 0   # duplicate ACKs answering those copies, not taken as dupacks
