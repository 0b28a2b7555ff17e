# Congestion control, included by tcp.pyx.
#
# The engine owns loss detection and recovery (RFC 5681, RFC 6582, RFC 6675);
# a CongestionControl object owns cwnd/ssthresh and how they react.  The hooks
# carry what a delay-based (Vegas: on_rtt_sample) or rate-based controller
# (pacing_rate) needs too; the engine paces new data when pacing_rate() > 0.
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

    cdef void on_congestion(self, uint64_t now, uint64_t in_flight, int cause):
        """Entering loss recovery or answering ECE: once per window of data."""
        pass

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
        """Bytes per second for paced sending; 0 = window-limited only."""
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

    cdef void on_congestion(self, uint64_t now, uint64_t in_flight, int cause):
        # RFC 5681 §3.2 eq. 4: ssthresh = max(FlightSize / 2, 2*SMSS)
        cdef double half = in_flight / 2.0
        self.ssthresh = half if half > 2 * self.mss else 2 * self.mss
        self.cwnd = self.ssthresh
        self.bytes_acked = 0

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        if first:
            self.on_congestion(now, in_flight, CC_CAUSE_LOSS)
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

    cdef void on_congestion(self, uint64_t now, uint64_t in_flight, int cause):
        self._reduce(now)
        self.cwnd = self.ssthresh

    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first):
        if first:
            self._reduce(now)       # §4.8
        self.cwnd = self.mss
        self.epoch_start = 0

    cdef str name(self):
        return "cubic"


cdef CongestionControl make_cc(str name):
    if name == "newreno":
        return NewReno()
    if name == "cubic":
        return Cubic()
    raise ValueError(f"unknown congestion control {name!r}")
