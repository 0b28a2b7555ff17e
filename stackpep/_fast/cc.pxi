# Congestion control, included by tcp.pyx.
#
# The engine owns loss detection and recovery (RFC 5681, RFC 6582, RFC 6675) and
# tells the controller what happened through the hooks below; a CongestionControl
# object alone owns cwnd, ssthresh and the pacing rate (the engine only reads cwnd
# and pacing_rate()), as smoltcp's Controller and aioquic's congestion/base.py.
# The hooks carry what a delay-based (Vegas: on_rtt_sample) or rate-based
# controller (pacing_rate, post_transmit) needs too; the engine paces every
# segment when pacing_rate() > 0.
#
# cwnd and ssthresh are bytes (double, so fractional additive increase adds up).



cdef class CongestionControl:

    cdef void init(self, uint32_t mss, uint32_t iw_segments):
        # RFC 6928 §2: IW = min(10*MSS, max(2*MSS, 14600)) for 10 segments;
        # generalised to the configured segment count.
        self.mss = mss
        self.cwnd = <double>iw_segments * mss
        self.ssthresh = 1e18        # RFC 5681 §3.1: arbitrarily high
        self.bytes_acked = 0

    cdef void set_mss(self, uint32_t mss):
        self.mss = mss

    cdef double _ss(self, uint32_t acked):
        # RFC 5681 §3.1 slow start: cwnd += min(N, SMSS) per ACK ("at most SMSS bytes";
        # RFC 3465's L = 2*SMSS "is not allowed as part of the standard")
        cdef double inc = acked
        if inc > self.mss:
            inc = self.mss
        self.cwnd += inc
        if self.cwnd > self.ssthresh:
            # the excess is counted towards congestion avoidance
            inc = self.cwnd - self.ssthresh
            self.cwnd = self.ssthresh
            return inc
        return 0

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        """New data acknowledged outside recovery while cwnd-limited."""
        pass

    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us):
        """Every RTT sample (delay-based controllers)."""
        pass

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        """Entering loss recovery (CC_CAUSE_LOSS) or answering ECE (CC_CAUSE_ECN):
        once per window of data."""
        pass

    cdef void on_recovery_dupack(self, uint32_t inflate):
        # RFC 6582 §3.2 steps 3-4 (NewReno without SACK): every duplicate ACK means a
        # segment left the network, so the window is inflated by what it carried
        # (3 SMSS on entering recovery, 1 SMSS per further duplicate)
        self.cwnd += inflate

    cdef void on_partial_ack(self, uint64_t acked):
        # RFC 6582 §3.2 step 5: deflate by the amount acknowledged, add back one SMSS
        # if that was at least one SMSS
        self.cwnd -= acked
        if acked >= self.mss:
            self.cwnd += self.mss
        if self.cwnd < self.mss:
            self.cwnd = self.mss

    cdef void on_syn_loss(self):
        # RFC 5681 §3.1: the initial window is one segment when the SYN or SYN-ACK
        # was lost
        self.cwnd = self.mss

    cdef void post_transmit(self, uint64_t now, uint64_t nbytes):
        """After every data-carrying call of the output routine (nbytes may be 0 for
        a bare FIN), retransmissions included: what a paced controller counts."""
        pass

    cdef void take_over(self, CongestionControl old):
        """Installed in place of ``old`` (set_congestion_control): start from its
        window and threshold."""
        self.cwnd = old.cwnd
        self.ssthresh = old.ssthresh

    cdef void on_recovery_exit(self, uint64_t now, uint64_t in_flight):
        # RFC 6582 §3.2 step 3 option (1): cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS)
        cdef double w = (in_flight if in_flight > self.mss else self.mss) + self.mss
        self.cwnd = self.ssthresh if self.ssthresh < w else w
        if self.cwnd < self.mss:
            self.cwnd = self.mss

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        """Retransmission timeout; ``first`` for the first expiry of a series."""
        pass

    cdef uint64_t pacing_rate(self):
        """Bytes per second for paced sending; 0 = window-limited only.  No side
        effects (post_transmit is where sending is counted)."""
        return 0

    # -- loss taken as corruption (loss_response="corruption", CCSDS 714.0-B-2, notes "Loss-type handling") --
    cdef void on_corruption_loss(self, uint64_t now):
        """Entering loss recovery for a loss that is not a congestion signal: no
        reduction; the window is remembered so that RFC 6582's inflation (the
        engine still does the window accounting) can be undone at the end."""
        self.rec_cwnd = self.cwnd

    cdef void on_corruption_recovery_exit(self, uint64_t now):
        if self.rec_cwnd > 0:
            self.cwnd = self.rec_cwnd
            self.rec_cwnd = 0

    # -- link outage (CCSDS 714.0-B-2, notes "Loss-type handling", link-outage response) ----------------
    cdef void hold(self):
        """The first RTO of a series: remember what the path carried, so a link
        outage that follows can resume there (``resume``) instead of slow start."""
        self.held_cwnd = self.cwnd
        self.held_ssthresh = self.ssthresh

    cdef void resume(self, uint64_t now):
        """The link answered after an outage: back to the window held before it
        (no slow start; CCSDS 714.0-B-2, notes "Loss-type handling")."""
        if self.held_cwnd > self.cwnd:
            self.cwnd = self.held_cwnd
        if self.held_ssthresh > 0:
            self.ssthresh = self.held_ssthresh
        self.bytes_acked = 0

    cdef str name(self):
        return "none"


cdef class NewReno(CongestionControl):
    """RFC 5681 §3.1 / RFC 6582."""

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        cdef double extra = 0
        if self.cwnd < self.ssthresh:
            extra = self._ss(acked)
            if extra == 0:
                return
        else:
            extra = acked
        # RFC 5681 §3.1 eq. 3 variant: byte counting, one SMSS per cwnd acknowledged
        self.bytes_acked += extra
        if self.bytes_acked >= self.cwnd:
            self.bytes_acked -= self.cwnd
            self.cwnd += self.mss

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        # RFC 5681 §3.2 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS)
        cdef double half = in_flight / 2.0
        self.ssthresh = half if half > 2 * self.mss else 2 * self.mss
        self.cwnd = self.ssthresh
        self.bytes_acked = 0

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        if first:
            self.on_loss(now, in_flight, CC_CAUSE_LOSS)
        self.cwnd = self.mss        # RFC 5681 §3.1: loss window LW = 1 SMSS
        self.bytes_acked = 0

    cdef str name(self):
        return "newreno"


# RFC 9438 §4 constants
cdef double CUBIC_C = 0.4
cdef double CUBIC_BETA = 0.7
cdef double CUBIC_ALPHA = 3.0 * (1.0 - 0.7) / (1.0 + 0.7)   # §4.3 eq. 4


cdef class Cubic(CongestionControl):
    """CUBIC, RFC 9438 (window in segments inside the formulas)."""

    cdef void init(self, uint32_t mss, uint32_t iw_segments):
        CongestionControl.init(self, mss, iw_segments)
        self.w_max = 0
        self.k = 0
        self.epoch_start = 0

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        cdef double extra, cw, t, target, w_cubic, d
        if self.cwnd < self.ssthresh:
            extra = self._ss(acked)       # §4.10: slow start as RFC 5681
            if extra == 0:
                return
            acked = <uint32_t>extra
        cw = self.cwnd / self.mss
        if self.epoch_start == 0:
            # §4.2: a new congestion-avoidance epoch
            self.epoch_start = now if now > 0 else 1
            self.cwnd_epoch = cw
            self.w_est = cw
            if self.w_max < cw:
                # no loss yet (left slow start at ssthresh): plateau here, K = 0
                self.w_max = cw
                self.k = 0
            else:
                self.k = cbrt((self.w_max - cw) / CUBIC_C)   # §4.2 eq. 2
        t = (now - self.epoch_start) / 1e6
        if srtt_us > 0:
            t += srtt_us / 1e6     # §4.4: target for one RTT ahead
        d = t - self.k
        w_cubic = CUBIC_C * d * d * d + self.w_max           # §4.2 eq. 1
        # §4.3: Reno-friendly region estimate
        self.w_est += CUBIC_ALPHA * (<double>acked / self.mss) / cw
        if w_cubic < self.w_est:
            self.cwnd = self.w_est * self.mss
            return
        # §4.4/§4.5: target clamped to [cwnd, 1.5 cwnd]; grow (target - cwnd)/cwnd per SMSS acked
        target = w_cubic
        if target < cw:
            target = cw
        elif target > 1.5 * cw:
            target = 1.5 * cw
        self.cwnd += (target - cw) / cw * acked

    cdef void _reduce(self, uint64_t now):
        cdef double cw = self.cwnd / self.mss
        # §4.7 fast convergence
        if cw < self.w_max:
            self.w_max = cw * (1.0 + CUBIC_BETA) / 2.0
        else:
            self.w_max = cw
        # §4.6: ssthresh = cwnd * beta (at least 2 SMSS)
        self.ssthresh = self.cwnd * CUBIC_BETA
        if self.ssthresh < 2 * self.mss:
            self.ssthresh = 2 * self.mss
        self.epoch_start = 0

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        self._reduce(now)
        self.cwnd = self.ssthresh

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        if first:
            self._reduce(now)       # §4.8
        self.cwnd = self.mss
        self.epoch_start = 0

    cdef void resume(self, uint64_t now):
        CongestionControl.resume(self, now)
        self.epoch_start = 0        # a new epoch from the held window (RFC 9438 §4.2)

    cdef str name(self):
        return "cubic"


# Vegas defaults of the SCPS reference gateway (CCSDS 714.0-B-2 allows Vegas: notes
# "Congestion control modes (reference gateway)"; Brakmo & Peterson 1995 §3.2 use alpha 1 / beta 3, in segments)
VEGAS_ALPHA = 3
VEGAS_BETA = 5
VEGAS_GAMMA = 4


cdef class Vegas(CongestionControl):
    """TCP Vegas: L. Brakmo, L. Peterson, "TCP Vegas: End to End Congestion
    Avoidance on a Global Internet", IEEE JSAC 13(8), 1995; an SCPS-TP congestion
    control option (CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)").

    Once per round trip, with BaseRTT the smallest RTT seen and RTT the smallest
    of the round (§3.2), Diff = (Expected - Actual) * BaseRTT
    = cwnd * (RTT - BaseRTT) / RTT, in segments: the data this connection keeps
    queued in the path.  Congestion avoidance adds one segment when Diff < alpha,
    takes one away when Diff > beta, holds otherwise; slow start doubles cwnd
    every other round and ends when Diff > gamma (§3.3), cwnd then set to what the
    path holds without a queue.  So the queue stays at alpha..beta segments,
    whatever the loss rate: with loss_response="corruption" a loss changes nothing
    here (the engine does not call on_loss), which is what keeps Vegas fast on a
    lossy long link where the reference gateway's fell to ~3 Mbit/s."""
    cdef public double alpha, beta, gamma  # segments
    cdef uint64_t base_rtt                 # µs, smallest sample seen (0 = none)
    cdef uint64_t round_min                # µs, smallest sample of this round (0 = none)
    cdef uint64_t round_end                # µs, when this round's decision is due
    cdef uint32_t round_samples
    cdef double round_cwnd                 # cwnd when this round began
    # slow start: rounds alternate between growth and a held window (§3.3)
    cdef bint ss_hold                      # this round keeps cwnd fixed
    cdef uint64_t hold_from, hold_to       # µs, the last held round (hold_to 0: running)
    cdef uint64_t hold_min                 # µs, smallest RTT of a segment sent in it
    cdef double hold_cwnd
    cdef uint32_t hold_samples
    # the long link's rate (TcpConfig.rate_bps, IP bytes; 0 = unknown): never paced
    # faster, as the reference gateway's token bucket holds in every mode (CCSDS
    # 714.0-B-2 §3.2; notes "Congestion control modes")
    cdef public uint64_t link_rate_bps
    cdef public uint32_t hdr_bytes          # IP + TCP headers + options per full segment

    def __cinit__(self):
        self.delay_based = 1
        self.alpha = VEGAS_ALPHA
        self.beta = VEGAS_BETA
        self.gamma = VEGAS_GAMMA

    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us):
        cdef uint64_t sent
        if rtt_us == 0:
            rtt_us = 1
        if self.base_rtt == 0 or rtt_us < self.base_rtt:
            self.base_rtt = rtt_us
        if self.round_min == 0 or rtt_us < self.round_min:
            self.round_min = rtt_us
        self.round_samples += 1
        if self.hold_from and now > rtt_us:
            # a segment sent while slow start held the window: its RTT is the path's
            # at that window (a growth round sends two segments per one acknowledged,
            # and the bursts queue for a moment whatever the path holds)
            sent = now - rtt_us
            if sent >= self.hold_from and (self.hold_to == 0 or sent < self.hold_to):
                if self.hold_min == 0 or rtt_us < self.hold_min:
                    self.hold_min = rtt_us
                self.hold_samples += 1

    cdef uint64_t pacing_rate(self):
        # Paced at 2 cwnd / BaseRTT in slow start, 1.25 cwnd / BaseRTT after (Linux's
        # pacing ratios): an ACK-clocked slow start sends its doubling as trains at
        # twice the bottleneck rate, whose brief queues Vegas would read as the
        # path's (on a GEO path an early exit leaves cwnd far below the BDP, and
        # congestion avoidance adds one segment per round trip).  BaseRTT, not
        # SRTT: never slower than cwnd per round trip, whatever the queue.
        # With the link's rate known, at most that (payload bytes/s of full segments,
        # as RateBased): a first window sized to the link (wan_leg_settings) leaves
        # at link speed rather than as one burst into the link's queue.
        cdef uint64_t cap = 0, own
        if self.link_rate_bps:
            cap = <uint64_t>(self.link_rate_bps / 8.0 * self.mss / (self.mss + self.hdr_bytes))
            if cap < 1:
                cap = 1
        if self.base_rtt == 0:
            return cap
        own = <uint64_t>(self.cwnd * (2.0 if self.cwnd < self.ssthresh else 1.25) * 1e6 / self.base_rtt)
        return cap if cap and own > cap else own

    cdef void _leave_slow_start(self):
        # §3.3: Diff for the window held last round, from the RTTs of what it sent;
        # above gamma: the window the path holds without a queue, plus one segment
        cdef double segs = self.hold_cwnd / self.mss
        cdef double target
        if segs * (<double>self.hold_min - self.base_rtt) / self.hold_min <= self.gamma:
            return
        target = (segs * self.base_rtt / self.hold_min + 1) * self.mss
        if target < self.cwnd:
            self.cwnd = target
        if self.cwnd < 2 * self.mss:
            self.cwnd = 2 * self.mss
        self.ssthresh = self.cwnd - self.mss
        if self.ssthresh < 2 * self.mss:
            self.ssthresh = 2 * self.mss
        self.hold_from = 0

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        cdef double diff, segs
        if self.round_end == 0:
            self.round_end = now + (<uint64_t>srtt_us if srtt_us > 0 else 1)
            self.round_cwnd = self.cwnd
        elif now >= self.round_end and self.round_samples > 0:
            # one decision per round trip (Brakmo & Peterson §3.2)
            if self.cwnd < self.ssthresh:
                if self.ss_hold:
                    self.hold_to = now          # the held round ends; growth again
                    self.ss_hold = 0
                else:
                    if self.hold_samples:
                        self._leave_slow_start()
                    if self.cwnd < self.ssthresh:
                        self.ss_hold = 1        # hold this window for a round
                        self.hold_from = now
                        self.hold_to = 0
                        self.hold_min = 0
                        self.hold_samples = 0
                        self.hold_cwnd = self.cwnd
            else:
                segs = self.round_cwnd / self.mss
                diff = segs * (<double>self.round_min - self.base_rtt) / self.round_min
                if diff > self.beta:
                    self.cwnd -= self.mss
                    if self.cwnd < 2 * self.mss:
                        self.cwnd = 2 * self.mss
                    if self.ssthresh > self.cwnd:
                        self.ssthresh = self.cwnd
                elif diff < self.alpha:
                    self.cwnd += self.mss
            self.round_end = now + self.round_min
            self.round_min = 0
            self.round_samples = 0
            self.round_cwnd = self.cwnd
            return
        if self.cwnd < self.ssthresh and not self.ss_hold:
            if self.hold_samples >= 3:
                # the held window's RTTs arrive during the growth round: judged as
                # soon as there are a few (Linux tcp_vegas: more than 2), not a round
                # later, when cwnd would have doubled into the queue once more
                self._leave_slow_start()
                if self.cwnd >= self.ssthresh:
                    return
            # a growth round: cwnd doubles (the bytes acknowledged, up to 2 SMSS per
            # ACK: RFC 3465 §2.2 L = 2*SMSS, as delayed ACKs cover two segments)
            self.cwnd += acked if acked < 2 * self.mss else 2 * self.mss
            if self.cwnd > self.ssthresh:
                self.cwnd = self.ssthresh

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        # a congestion loss (loss_response="congestion") or ECE: halve as RFC 5681
        # §3.2 eq. 4 (Brakmo & Peterson keep Reno's response to a detected loss)
        cdef double half = in_flight / 2.0
        self.ssthresh = half if half > 2 * self.mss else 2 * self.mss
        self.cwnd = self.ssthresh
        self._new_rounds()

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        if first:
            self.on_loss(now, in_flight, CC_CAUSE_LOSS)
        self.cwnd = self.mss        # RFC 5681 §3.1: loss window
        self._new_rounds()

    cdef void _new_rounds(self):
        self.ss_hold = 0
        self.hold_from = 0
        self.hold_min = 0
        self.hold_samples = 0
        self.round_end = 0
        self.round_min = 0
        self.round_samples = 0

    cdef void resume(self, uint64_t now):
        CongestionControl.resume(self, now)
        self._new_rounds()

    cdef str name(self):
        return "vegas"


# cwnd of the rate-based controller: never the limit (1 TiB)
cdef double RATE_CWND = <double>(1 << 40)


cdef class SharedRate:
    """One rate shared by a group of connections (TcpConfig.rate_share), as the
    SCPS reference gateway's token bucket is per route, not per connection: each
    active member paces at rate / (number of active members).

    A member counts as active from its handshake and whenever it sends a segment
    while not counted.  Every RECOUNT_US (on an RTT sample of any member: the
    share's clock) it stops counting unless it sent at least a quarter of its fair
    share in the last interval, so a connection carrying a few control messages
    (iperf3's, a keep-alive HTTP connection between requests) halves the others for
    at most an interval or so, and a finished transfer frees its share."""
    cdef readonly uint64_t rate_bps
    cdef readonly uint64_t now          # latest time a member reported
    cdef readonly int n_active
    # active members in the box's other worker processes (stackpep.pep.workers
    # publishes it): the rate is one budget for the box, each member paces at
    # rate / (n_active + others_active)
    cdef public int others_active
    cdef uint64_t recount_at, last_recount
    cdef list members
    cdef object __weakref__

    def __cinit__(self, uint64_t rate_bps):
        self.rate_bps = rate_bps
        self.members = []

    @property
    def members_count(self):
        return len(self.members)

    cdef void _join(self, RateBased m):
        if not m.registered:
            m.registered = 1
            self.members.append(m)
        m.last_active = self.now
        if not m.counted:
            m.counted = 1
            self.n_active += 1

    cdef void _touch(self, uint64_t now):
        cdef RateBased x
        cdef list keep
        cdef int n = 0
        cdef double fair_segs, threshold
        if now > self.now:
            self.now = now
        if now < self.recount_at:
            return
        self.recount_at = now + RECOUNT_US
        if self.last_recount == 0 or now <= self.last_recount:
            self.last_recount = now
            return
        # a full-sized segment is ~1500 IP bytes; the threshold is in segments
        fair_segs = (self.rate_bps / 8.0 / 1500.0) * ((now - self.last_recount) / 1e6)
        fair_segs /= max(1, self.n_active + self.others_active)
        threshold = fair_segs / 4 if fair_segs > 4 else 1
        self.last_recount = now
        keep = []
        for x in self.members:
            x.counted = x.sent_segs >= threshold
            x.sent_segs = 0
            n += x.counted
            if x.counted:
                x.last_active = now
            if x.last_active + 30_000_000 >= now:
                keep.append(x)
            else:
                x.registered = 0       # idle for 30 s: forgotten until it sends again
        self.members = keep
        self.n_active = n


cdef enum:
    RECOUNT_US = 100_000


# the former name
RateShare = SharedRate

# Shares by name, for configs that name one (rate_share="wan") instead of passing a
# SharedRate: weak, so a share lives only as long as a connection (or a caller)
# holds it.  Whoever creates the engines should own its SharedRate objects
# instead (the PEP dispatcher does: stackpep.pep.engine.tcp_config).
_NAMED_SHARES = weakref.WeakValueDictionary()


def rate_share(str name, uint64_t rate_bps):
    """The SharedRate that connections configured with ``rate_share=name`` and this
    rate divide between them (created on first use, forgotten when unused)."""
    key = (name, rate_bps)
    sh = _NAMED_SHARES.get(key)
    if sh is None:
        sh = SharedRate(rate_bps)
        _NAMED_SHARES[key] = sh
    return sh


def named_shares_count():
    """How many named shares are alive (tests: the registry shrinks)."""
    return len(_NAMED_SHARES)


cdef class RateBased(CongestionControl):
    """SCPS-TP rate control, "mode 0" of the reference gateway (CCSDS 714.0-B-2,
    notes "Congestion control modes (reference gateway)"): an open-loop token bucket at a configured rate; cwnd is never the limit, only the
    peer's window and the rate are.  The engine paces every segment, retransmissions
    included, at pacing_rate(); with loss_response="corruption" losses are repaired by
    SACK (RFC 6675) without any reduction.  Meant for a link whose rate is known and
    not shared (the long leg between two stackpep boxes).

    With a guaranteed minimum (min_rate_bps > 0) the part above it is closed
    loop, as the reference gateway's "minimum rate" option: never paced below
    min_rate_bps; a congestion signal (ECE, or a loss when the loss type is
    congestion) halves the excess over the minimum, an RTO (loss type congestion)
    drops to the minimum, and every RTT sample probes back up towards rate_bps by
    1/8 of (rate_bps - min_rate_bps) per round trip."""
    cdef uint64_t rate_bps      # bits/s counted on IP bytes, headers included
    cdef uint64_t min_rate_bps  # 0 = open loop at rate_bps
    cdef double cur_rate_bps    # the closed-loop rate (= rate_bps when open loop)
    cdef double held_rate_bps   # at the first RTO of a series (link outage)
    cdef uint64_t last_probe    # µs, last increase towards rate_bps
    cdef uint32_t hdr_bytes     # IP + TCP headers + options per full-sized segment
    cdef uint64_t payload_rate  # bytes of payload per second
    cdef SharedRate share       # None: the rate is this connection's alone
    cdef uint64_t last_active   # µs, for the share
    cdef uint32_t sent_segs     # data segments sent since the share's last recount
    cdef bint registered, counted

    def __cinit__(self):
        self.rate_bps = 0
        self.hdr_bytes = 52

    cdef void _update_rate(self):
        # the link counts whole IP packets; the engine paces payload bytes
        cdef double seg = self.mss if self.mss > 0 else 1
        cdef double r = self.cur_rate_bps if self.min_rate_bps else self.rate_bps
        self.payload_rate = <uint64_t>(r / 8.0 * seg / (seg + self.hdr_bytes))
        if self.payload_rate < 1:
            self.payload_rate = 1

    cdef void init(self, uint32_t mss, uint32_t iw_segments):
        CongestionControl.init(self, mss, iw_segments)
        self.cwnd = RATE_CWND
        self._update_rate()
        if self.share is not None:
            self.share._join(self)

    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us):
        cdef double dt
        if self.share is not None:
            self.share._touch(now)
        if self.min_rate_bps and self.cur_rate_bps < self.rate_bps:
            # probe up: (rate - min) / 8 per round trip of elapsed time
            dt = (now - self.last_probe) if now > self.last_probe else 0
            if dt > rtt_us:
                dt = rtt_us
            self.last_probe = now
            if rtt_us > 0:
                self.cur_rate_bps += (self.rate_bps - self.min_rate_bps) / 8.0 * dt / rtt_us
            if self.cur_rate_bps > self.rate_bps:
                self.cur_rate_bps = self.rate_bps
            self._update_rate()
        else:
            self.last_probe = now

    cdef void set_mss(self, uint32_t mss):
        self.mss = mss
        self._update_rate()

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        # the window is open again once data is acknowledged (after on_syn_loss's
        # one-segment first flight, RFC 5681 §3.1, or a partial-ACK deflation)
        self.cwnd = RATE_CWND

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        # open loop (no minimum): the rate is configured, not probed
        if self.min_rate_bps:
            self.cur_rate_bps = self.min_rate_bps + (self.cur_rate_bps - self.min_rate_bps) / 2.0
            self.last_probe = now
            self._update_rate()

    cdef void on_recovery_exit(self, uint64_t now, uint64_t in_flight):
        self.cwnd = RATE_CWND

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        self.cwnd = RATE_CWND
        if self.min_rate_bps:
            self.cur_rate_bps = self.min_rate_bps     # the guaranteed floor
            self.last_probe = now
            self._update_rate()

    cdef void hold(self):
        CongestionControl.hold(self)
        self.held_rate_bps = self.cur_rate_bps

    cdef void on_corruption_recovery_exit(self, uint64_t now):
        self.cwnd = RATE_CWND

    cdef void resume(self, uint64_t now):
        self.cwnd = RATE_CWND
        if self.min_rate_bps and self.held_rate_bps > self.cur_rate_bps:
            self.cur_rate_bps = self.held_rate_bps
            self._update_rate()
        self.last_probe = now

    cdef void post_transmit(self, uint64_t now, uint64_t nbytes):
        if self.share is None:
            return
        # the share's clock runs on sending too, not only on RTT samples: after a
        # quiet spell the first segments of a new transfer recount at once, so
        # members that finished (closed fetches) stop halving it for its whole
        # first round trip (there is no RTT sample before then)
        self.share._touch(now)
        self.sent_segs += 1
        if not self.counted:
            self.share._join(self)     # sending again: counts at once (the others slow down)

    cdef uint64_t pacing_rate(self):
        cdef int n
        if self.share is None:
            return self.payload_rate
        n = self.share.n_active + self.share.others_active
        return self.payload_rate // n if n > 1 else self.payload_rate

    cdef str name(self):
        return "rate"


cdef CongestionControl make_cc(str name, object config=None, int ipver=4):
    cdef RateBased rb
    cdef Vegas vg
    if name == "newreno":
        return NewReno()
    if name == "cubic":
        return Cubic()
    if name == "vegas":
        vg = Vegas()
        if config is not None:
            vg.alpha = getattr(config, "vegas_alpha", VEGAS_ALPHA)
            vg.beta = getattr(config, "vegas_beta", VEGAS_BETA)
            vg.gamma = getattr(config, "vegas_gamma", VEGAS_GAMMA)
            if getattr(config, "rate_bps", None):
                vg.link_rate_bps = config.rate_bps
                vg.hdr_bytes = (20 if ipver == 4 else 40) + 20 + (12 if config.timestamps else 0)
        return vg
    if name == "rate":
        rb = RateBased()
        rb.rate_bps = config.rate_bps if config is not None and config.rate_bps else 0
        if rb.rate_bps <= 0:
            raise ValueError("congestion control 'rate' needs rate_bps")
        # RFC 9293 §3.7.1 headers: IPv4 20 / IPv6 40, TCP 20, timestamps 12 (RFC 7323)
        rb.hdr_bytes = (20 if ipver == 4 else 40) + 20 + (12 if config.timestamps else 0)
        rb.min_rate_bps = getattr(config, "min_rate_bps", None) or 0
        if rb.min_rate_bps > rb.rate_bps:
            raise ValueError("min_rate_bps must not exceed rate_bps")
        rb.cur_rate_bps = rb.rate_bps
        if isinstance(config.rate_share, SharedRate):
            # owned by whoever creates the engines (the PEP dispatcher)
            rb.share = config.rate_share
            if rb.share.rate_bps != rb.rate_bps:
                raise ValueError("rate_share: the SharedRate's rate_bps differs from the config's")
        elif config.rate_share:
            rb.share = rate_share(config.rate_share, rb.rate_bps)
        return rb
    raise ValueError(f"unknown congestion control {name!r}")
