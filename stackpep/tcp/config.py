"""Configuration of one TCP engine connection (immutable).

Times are integer microseconds.  Defaults follow the RFCs, or Linux where the
RFCs leave a choice (noted per field).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["TcpConfig", "ScpsSettings", "CONGESTION_CONTROLS", "LOSS_RESPONSES",
           "SCPS_BETS", "SCPS_SNACK1", "SCPS_SNACK2", "SCPS_COMPRESS", "SCPS_NLTS"]

#: congestion-control algorithms the engine implements (stackpep/_fast/cc.pxi)
CONGESTION_CONTROLS = ("newreno", "cubic", "rate", "vegas")
#: how a detected loss is answered (the SCPS-TP "loss type"): "congestion" (RFC 5681
#: §3.2: reduce cwnd; RFC 6298 §5.5 RTO backoff) or "corruption" (retransmit keeping
#: cwnd / the rate and the RTO; CCSDS 714.0-B-2, notes "Loss-type handling").  ECE is congestion either way.
LOSS_RESPONSES = ("congestion", "corruption")


# -- SCPS-TP capability bits (CCSDS 714.0-B-2 §3.2.3, SCPS capabilities option, kind 20) --------
SCPS_BETS = 0x80       # best-effort transport service
SCPS_SNACK1 = 0x40     # selective negative acknowledgement (the 6-byte SNACK option, kind 21)
SCPS_SNACK2 = 0x20     # (long-form SNACK; offered only if asked for, never used by the engine)
SCPS_COMPRESS = 0x10   # header compression (IP protocol 105)
SCPS_NLTS = 0x08       # network-layer timestamps


@dataclass(frozen=True)
class ScpsSettings:
    """SCPS-TP extensions of one connection (CCSDS 714.0-B-2); ``TcpConfig.scps``.

    The engine offers these in option 20 of its SYN / SYN-ACK; a feature is used
    only when both ends offered it (the AND of the two bitmaps).  See docs/scps.md."""

    snack: bool = True
    """Offer SNACK (bit 0x40): report holes with option 21, repair reported holes at once."""
    bets: bool = False
    """Offer BETS (bit 0x80, best-effort transport): see ``bets_hole_timeout_us``."""
    compression: bool = False
    """Offer header compression (bit 0x10).  The engine only negotiates the bit; the
    compressed form (IP protocol 105) is the caller's layer."""
    extra_bits: int = 0
    """Further bits to offer as they are (e.g. 0x08 network-layer timestamps)."""
    conn_id: int = 0
    """Connection id of option 20 (0..255), chosen by the caller (header compression
    names the connection by it); the engine has no randomness."""
    record_boundary: bool = False
    """Put a record-boundary option (kind 22) on the segment that ends each send()
    call, towards an SCPS peer (segments are cut at record ends)."""
    corruption_experienced: bool = False
    """Allow ``report_corruption()`` to put a corruption-experienced option (kind 23) on
    the next ACK, towards an SCPS peer."""
    snack_repeat: int = 3
    """ACKs that report the same hole (the reference gateway repeats it 3 times)."""
    syn_retries_with_option: int = 2
    """Active open: SYN retransmissions that still carry option 20; the next one goes
    without it (a middlebox or stack that drops such SYNs).  0 = the first retransmission
    already goes without."""
    retry_on_rst: bool = True
    """Active open: a RST answering a SYN with option 20 makes the engine send the SYN
    again without it instead of reporting the connection refused."""
    bets_hole_timeout_us: Optional[int] = None
    """BETS receiver: deliver past a hole at RCV.NXT that stayed unrepaired this long
    (the skipped bytes read as zeros; ``BytesSkipped`` says where).  None = never."""
    bets_max_retransmits: Optional[int] = None
    """BETS sender: stop retransmitting the segment at SND.UNA after this many
    retransmissions of it (the receiver's hole timeout moves the ACK on).  None = never."""

    @property
    def offered_bits(self) -> int:
        return ((SCPS_SNACK1 if self.snack else 0) | (SCPS_BETS if self.bets else 0)
                | (SCPS_COMPRESS if self.compression else 0) | (self.extra_bits & 0xFF))

    def __post_init__(self) -> None:
        if not 0 <= self.conn_id <= 255:
            raise ValueError("scps conn_id must be 0..255 (one byte of option 20)")
        if not 0 <= self.extra_bits <= 255:
            raise ValueError("scps extra_bits must be 0..255")
        if not 0 <= self.snack_repeat <= 100:
            raise ValueError("scps snack_repeat must be 0..100")
        if self.syn_retries_with_option < 0:
            raise ValueError("scps syn_retries_with_option must be >= 0")
        if self.bets_hole_timeout_us is not None and self.bets_hole_timeout_us <= 0:
            raise ValueError("scps bets_hole_timeout_us must be > 0 or None")
        if self.bets_max_retransmits is not None and self.bets_max_retransmits < 1:
            raise ValueError("scps bets_max_retransmits must be >= 1 or None")


@dataclass(frozen=True)
class TcpConfig:
    # -- segment sizes ----------------------------------------------------
    mss: int = 1460
    """Largest payload we send and advertise; clamped to ``mtu`` minus the
    40 (IPv4) / 60 (IPv6) bytes of headers (RFC 9293 §3.7.1, RFC 6691)."""
    mtu: int = 1500
    """Egress MTU of the interface towards the peer."""

    # -- buffers (bytes); several MB covers a GEO bandwidth-delay product ----
    snd_buf: int = 4 << 20
    rcv_buf: int = 4 << 20
    window_scale: Optional[int] = None
    """RFC 7323 §2 shift we offer: None = smallest shift that lets ``rcv_buf``
    be advertised, 0..14 = that shift, -1 = do not send the option."""

    # -- options -----------------------------------------------------------
    sack: bool = True            # RFC 2018 (offer / accept SACK-permitted)
    timestamps: bool = True      # RFC 7323 §3 (TS option, RTTM, PAWS)
    ecn: bool = False            # RFC 3168 §6.1.1: request in SYN, accept in SYN-ACK; False declines
    nagle: bool = True           # RFC 9293 §3.7.4 (RFC 896)

    # -- acknowledgements (RFC 9293 §3.8.6.3, RFC 5681 §4.2) ----------------
    delayed_ack_us: int = 40_000
    """Delayed-ACK timeout; must be <= 200 ms (RFC 9293 §3.8.6.3 / RFC 5681 §4.2
    allow 500 ms; 200 ms is Linux's TCP_DELACK_MAX).  0 disables delayed ACKs."""
    delayed_ack_segments: int = 2
    """ACK at least every this many full-sized segments (RFC 5681 §4.2)."""

    # -- retransmission (RFC 6298) -------------------------------------------
    initial_rto_us: int = 1_000_000      # RFC 6298 §2.1
    min_rto_us: int = 200_000            # RFC 6298 §2.4 says 1 s; Linux uses 200 ms
    max_rto_us: int = 120_000_000        # RFC 6298 §2.5 (>= 60 s); Linux TCP_RTO_MAX
    syn_retries: int = 6                 # SYN / SYN-ACK retransmissions before giving up (Linux)
    max_retransmits: int = 15            # consecutive RTO expiries before giving up (Linux tcp_retries2)
    user_timeout_us: Optional[int] = None
    """RFC 9293 §3.8.3 / RFC 5482 USER TIMEOUT: give up when data stays unacknowledged
    this long (overrides ``max_retransmits``).  None = not set."""

    # -- congestion control ------------------------------------------------------
    initial_window_segments: int = 10    # RFC 6928
    congestion: str = "cubic"            # one of CONGESTION_CONTROLS
    loss_response: str = "congestion"    # one of LOSS_RESPONSES
    rate_bps: Optional[int] = None
    """For ``congestion="rate"`` (SCPS-TP rate control, CCSDS 714.0-B-2,
    notes "Congestion control modes (reference gateway)"): the sending rate in bits/s counted on IP bytes (headers included), as a link rate
    is; cwnd is then not the limit.  Required with "rate", ignored otherwise."""
    rate_share: Optional[Any] = None
    """With "rate": connections whose configs give the same
    ``stackpep._fast.tcp.SharedRate`` (owned by whoever creates the engines, e.g. the
    PEP dispatcher) share its rate, each active one pacing at rate / active (CCSDS
    714.0-B-2, notes "Congestion control modes (reference gateway)"; the reference gateway's bucket
    is per route).  A name (str) is looked up in a process-wide weak registry by (name, rate_bps) instead.  None =
    the rate is per connection."""

    # -- SCPS-TP congestion control, loss type, link outage ---------------------------------
    # (CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)", "Loss-type handling")
    # (the loss type is ``loss_response`` above: "corruption" retransmits without
    # reducing cwnd / the rate and without backing off the RTO)
    vegas_alpha: float = 3.0
    """With ``congestion="vegas"`` (Brakmo & Peterson 1995): grow cwnd by one segment
    per RTT while fewer than alpha segments are queued in the path (the SCPS
    reference gateway's defaults 3 / 5 / 4)."""
    vegas_beta: float = 5.0
    """... shrink it by one while more than beta are queued."""
    vegas_gamma: float = 4.0
    """... leave slow start once more than gamma are queued."""
    min_rate_bps: Optional[int] = None
    """With ``congestion="rate"``: a guaranteed minimum (bits/s, IP bytes); the rate
    above it is closed loop (halved excess on ECE, or on a loss when loss_response
    is "congestion"; probes back up to ``rate_bps``).  None = open loop at rate_bps."""
    outage_rtos: Optional[int] = None
    """Link outage: this many retransmission timeouts in a row mean the link is
    down: no new data, SND.UNA probed every ``outage_probe_us`` without backoff and
    without counting towards max_retransmits / user_timeout_us; the first
    acceptable ACK resumes at the window / rate held before (no slow start).
    None = no outage handling (RFC 6298 backoff, then give up)."""
    outage_probe_us: int = 1_000_000
    outage_silence_us: Optional[int] = None
    """Also enter the outage at an RTO when nothing was received for this long."""
    outage_max_us: Optional[int] = None
    """Give up (CLOSED, timeout) after this long in an outage; None = never."""

    # -- keep-alive (RFC 9293 §3.8.4; off by default as the RFC requires) -----------
    keepalive: bool = False
    keepalive_idle_us: int = 7_200_000_000
    keepalive_interval_us: int = 75_000_000
    keepalive_count: int = 9

    # -- closing ---------------------------------------------------------------------
    time_wait_us: int = 60_000_000
    """TIME-WAIT duration, 2*MSL (RFC 9293 §3.4.2 MSL = 2 min; Linux holds 60 s)."""
    fin_wait2_timeout_us: Optional[int] = None
    """Give up on a peer that never closes after we did (Linux tcp_fin_timeout; None = wait forever)."""

    # -- RFC 5961 §7: challenge ACKs per second per connection -----------------------
    challenge_ack_limit: int = 1000

    # -- IP header of what we send ------------------------------------------------------
    ttl: int = 64
    tos: int = 0                         # DSCP << 2; the ECN bits are the engine's

    # -- SCPS-TP (CCSDS 714.0-B-2): capabilities, SNACK, record boundary, BETS ----------
    scps: Optional[ScpsSettings] = None
    """SCPS-TP extensions offered in option 20 (None = plain TCP, no option 20 sent or
    answered).  See ScpsSettings and docs/scps.md."""

    # -- TCP Fast Open (RFC 7413) with a cookie derived from a shared key ------------------
    tfo_key: Optional[bytes] = None
    """16-byte key shared by the two PEP boxes: the Fast Open cookie is SipHash-2-4 under
    it of (client address, server address), so it is valid on the first connection
    (``stackpep._fast.tcp.fast_open_cookie``).  None = no Fast Open."""
    tfo_client: bool = False
    """Active open: the first SYN carries the cookie and up to ``tfo_max_syn_data`` bytes
    sent before or right after ``connect()`` (RFC 7413 §4.2)."""
    tfo_server: bool = False
    """Passive open: data in a SYN whose cookie verifies is acknowledged by the SYN-ACK and
    readable at once, in SYN-RECEIVED (RFC 7413 §4.2.2); SYN data without such a cookie
    is ignored (``tfo_cookie_rejected``).  A cookie request gets our cookie."""
    tfo_max_syn_data: Optional[int] = None
    tfo_synrcvd_send: Optional[int] = None
    """Passive open, Fast Open data accepted (so the peer holds our key: another box
    configured with it): send up to this many bytes of our answer in SYN-RECEIVED,
    before the handshake's final ACK (RFC 7413 §4.2.2 lets a server send then).  The
    peer's SYN window is unscaled (RFC 7323 §2.2, at most 64 KiB), so this stands for
    the receive window the key holder is configured with.  None = nothing before the ACK."""

    pace_slack_us: int = 8000
    """How late a pacing deadline may be served and still be made up (the timer slack of
    the loop that drives the engine: the splitter wakes on a grid of up to 4 ms,
    ``capture.hold_us``); a sender idle for longer banks nothing (no burst after idle)."""

    # -- first-flight redundancy (docs/scps.md "First-flight redundancy") ---------------
    first_flight_redundancy: int = 0
    """Bytes at the start of the connection that are each sent twice (the second copy
    after the new data, paced like it), and the first SYN / SYN-ACK twice: on a lossy
    long-delay leg a single loss in a short transfer then costs no round trip.  Meant
    for the long leg between two boxes; 0 = off."""
    """Most data bytes in a SYN; None = one MSS (the MSS we advertise).  Always capped
    so that the SYN fits the MTU."""

    def __post_init__(self) -> None:
        if self.congestion not in CONGESTION_CONTROLS:
            raise ValueError(f"congestion must be one of {CONGESTION_CONTROLS}, not {self.congestion!r}")
        if self.congestion == "rate" and not (isinstance(self.rate_bps, int) and self.rate_bps >= 8000):
            raise ValueError("congestion \"rate\" needs rate_bps, an integer >= 8000 (bits/s)")
        if self.rate_bps is not None and not (isinstance(self.rate_bps, int) and 8000 <= self.rate_bps <= 10 ** 12):
            raise ValueError("rate_bps must be an integer between 8000 and 10**12 bits/s")
        if self.loss_response not in LOSS_RESPONSES:
            raise ValueError(f"loss_response must be one of {LOSS_RESPONSES}, not {self.loss_response!r}")
        if not 0 < self.vegas_alpha <= self.vegas_beta:
            raise ValueError("vegas_alpha / vegas_beta must satisfy 0 < alpha <= beta (segments)")
        if not self.vegas_gamma > 0:
            raise ValueError("vegas_gamma must be > 0 (segments)")
        if self.min_rate_bps is not None:
            if self.congestion != "rate":
                raise ValueError("min_rate_bps needs congestion \"rate\"")
            if not (isinstance(self.min_rate_bps, int) and 8000 <= self.min_rate_bps <= (self.rate_bps or 0)):
                raise ValueError("min_rate_bps must be an integer between 8000 and rate_bps (bits/s)")
        if self.outage_rtos is not None and not (isinstance(self.outage_rtos, int) and self.outage_rtos >= 1):
            raise ValueError("outage_rtos must be None or an integer >= 1")
        if not (isinstance(self.outage_probe_us, int) and self.outage_probe_us >= 1000):
            raise ValueError("outage_probe_us must be an integer >= 1000 µs")
        if self.outage_silence_us is not None and self.outage_silence_us <= 0:
            raise ValueError("outage_silence_us must be None or > 0")
        if self.outage_max_us is not None and self.outage_max_us <= 0:
            raise ValueError("outage_max_us must be None or > 0")
        if not 0 <= self.delayed_ack_us <= 200_000:
            raise ValueError("delayed_ack_us must be within 0..200000 µs")
        if self.delayed_ack_segments < 1:
            raise ValueError("delayed_ack_segments must be >= 1")
        if self.window_scale is not None and not -1 <= self.window_scale <= 14:
            raise ValueError("window_scale must be None, -1 or 0..14 (RFC 7323 §2.3)")
        if self.mss < 64 or self.mtu < 68 + 20:
            raise ValueError("mss must be >= 64 and mtu >= 88")
        if self.snd_buf < 1 or self.rcv_buf < 1:
            raise ValueError("buffers must hold at least one byte")
        if self.snd_buf > (1 << 30) or self.rcv_buf > (1 << 30):
            raise ValueError("buffers are limited to 1 GiB (RFC 7323 §2.3 window limit)")
        if not 0 < self.min_rto_us <= self.initial_rto_us <= self.max_rto_us:
            raise ValueError("need 0 < min_rto_us <= initial_rto_us <= max_rto_us")
        if self.initial_window_segments < 1:
            raise ValueError("initial_window_segments must be >= 1")
        if self.keepalive_count < 1 or self.keepalive_interval_us <= 0 or self.keepalive_idle_us <= 0:
            raise ValueError("keepalive idle/interval must be > 0 and count >= 1")
        if self.time_wait_us < 0:
            raise ValueError("time_wait_us must be >= 0")
        if self.scps is not None and not isinstance(self.scps, ScpsSettings):
            raise ValueError("scps must be a ScpsSettings or None")
        if self.tfo_key is not None and not (isinstance(self.tfo_key, bytes) and len(self.tfo_key) == 16):
            raise ValueError("tfo_key must be 16 bytes (or None)")
        if (self.tfo_client or self.tfo_server) and self.tfo_key is None:
            raise ValueError("tfo_client / tfo_server need tfo_key (the cookie is derived from it)")
        if self.tfo_synrcvd_send is not None and not 1 <= self.tfo_synrcvd_send <= 1 << 30:
            raise ValueError("tfo_synrcvd_send must be 1..2**30 bytes or None")
        if isinstance(self.pace_slack_us, bool) or not isinstance(self.pace_slack_us, int) \
                or not 0 <= self.pace_slack_us <= 1_000_000:
            raise ValueError("pace_slack_us must be 0..1000000 µs")
        if isinstance(self.first_flight_redundancy, bool) or not isinstance(self.first_flight_redundancy, int) \
                or not 0 <= self.first_flight_redundancy <= 1 << 30:
            raise ValueError("first_flight_redundancy must be 0..2**30 bytes (0 = off)")
        if self.tfo_max_syn_data is not None and not 1 <= self.tfo_max_syn_data <= 65535:
            raise ValueError("tfo_max_syn_data must be 1..65535 bytes or None (one MSS)")
