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

    cdef str name(self):
        return "cubic"


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
    """SCPS-TP rate control, "mode 0" of the reference gateway (CCSDS 714.0-B-2 §3.2):
    an open-loop token bucket at a configured rate; cwnd is never the limit, only the
    peer's window and the rate are.  The engine paces every segment, retransmissions
    included, at pacing_rate(); with loss_response="corruption" losses are repaired by
    SACK (RFC 6675) without any reduction.  Meant for a link whose rate is known and
    not shared (the long leg between two stackpep boxes)."""
    cdef uint64_t rate_bps      # bits/s counted on IP bytes, headers included
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
        self.payload_rate = <uint64_t>(self.rate_bps / 8.0 * seg / (seg + self.hdr_bytes))
        if self.payload_rate < 1:
            self.payload_rate = 1

    cdef void init(self, uint32_t mss, uint32_t iw_segments):
        CongestionControl.init(self, mss, iw_segments)
        self.cwnd = RATE_CWND
        self._update_rate()
        if self.share is not None:
            self.share._join(self)

    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us):
        if self.share is not None:
            self.share._touch(now)

    cdef void set_mss(self, uint32_t mss):
        self.mss = mss
        self._update_rate()

    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight):
        # the window is open again once data is acknowledged (after on_syn_loss's
        # one-segment first flight, RFC 5681 §3.1, or a partial-ACK deflation)
        self.cwnd = RATE_CWND

    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause):
        pass                      # open loop: the rate is configured, not probed

    cdef void on_recovery_exit(self, uint64_t now, uint64_t in_flight):
        self.cwnd = RATE_CWND

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        self.cwnd = RATE_CWND

    cdef void post_transmit(self, uint64_t now, uint64_t nbytes):
        if self.share is None:
            return
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
    if name == "newreno":
        return NewReno()
    if name == "cubic":
        return Cubic()
    if name == "rate":
        rb = RateBased()
        rb.rate_bps = config.rate_bps if config is not None and config.rate_bps else 0
        if rb.rate_bps <= 0:
            raise ValueError("congestion control 'rate' needs rate_bps")
        # RFC 9293 §3.7.1 headers: IPv4 20 / IPv6 40, TCP 20, timestamps 12 (RFC 7323)
        rb.hdr_bytes = (20 if ipver == 4 else 40) + 20 + (12 if config.timestamps else 0)
        if isinstance(config.rate_share, SharedRate):
            # owned by whoever creates the engines (the PEP dispatcher)
            rb.share = config.rate_share
            if rb.share.rate_bps != rb.rate_bps:
                raise ValueError("rate_share: the SharedRate's rate_bps differs from the config's")
        elif config.rate_share:
            rb.share = rate_share(config.rate_share, rb.rate_bps)
        return rb
    raise ValueError(f"unknown congestion control {name!r}")
