# cython: language_level=3
"""The sans-IO TCP engine (RFC 9293 and the RFCs it builds on).

One ``TcpConnection`` is one connection's TCB.  Inputs: IP packets, the
application's send/recv/EOF/abort, timer expiry; outputs: IP packets with
checksums, events, the next deadline.  Time is integer microseconds passed in.

Sequence space is handled as 64-bit *offsets* on each side (send side: offset
0 = the first data byte, ISS+1; receive side: offset 0 = IRS+1; the SYN sits at
-1), so buffers, SACK scoreboards and windows never compare wrapped numbers;
32-bit sequence numbers appear only on the wire and are converted relative to
SND.UNA / RCV.NXT (wrap-safe, ``seq_lt`` & co. for the rest).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.math cimport cbrt
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE

from stackpep._fast.wire cimport (
    tcp_seg_t, tcp_opts_t, parse_ip_tcp, emit_ip_tcp, tcp_opts_len, seg_init,
    TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK, TH_URG, TH_ECE, TH_CWR,
    WIRE_OK, WIRE_TCP_CHECKSUM, WIRE_IPV4_CHECKSUM,
)

import os
import weakref
from stackpep.tcp import events as _ev
from stackpep.tcp import states as _states
from stackpep.tcp import statistics as _stats
from stackpep.tcp.statistics import TcpStatistics as _TcpStatistics

include "cc.pxi"
include "ivset.pxi"
include "chunkbuf.pxi"
include "rtt.pxi"
include "timers.pxi"
include "siphash.pxi"
include "tfo.pxi"

# -- wrap-safe sequence comparisons (RFC 9293 §3.4; Linux before()/after()) --------
cdef inline bint seq_lt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) < 0

cdef inline bint seq_le(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) <= 0

cdef inline bint seq_gt(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) > 0

cdef inline bint seq_ge(uint32_t a, uint32_t b) noexcept nogil:
    return <int32_t>(a - b) >= 0

# -- states, RFC 9293 §3.3.2 ------------------------------------------------------------

# The names, codes and legal transitions come from stackpep.tcp.states (one table,
# readable as h11's _state.py); the C codes in tcp.pxd must equal TcpState's values.
STATES = tuple(s.rfc_name for s in _states.TcpState)
TcpState = _states.TcpState
assert len(STATES) == N_STATES and all(int(_states.TcpState[n.replace("-", "_")]) == i
                                       for i, n in enumerate(STATES))
assert (_states.TcpState.CLOSED == CLOSED and _states.TcpState.LISTEN == LISTEN
        and _states.TcpState.SYN_SENT == SYN_SENT and _states.TcpState.SYN_RECEIVED == SYN_RECEIVED
        and _states.TcpState.ESTABLISHED == ESTABLISHED and _states.TcpState.FIN_WAIT_1 == FIN_WAIT_1
        and _states.TcpState.FIN_WAIT_2 == FIN_WAIT_2 and _states.TcpState.CLOSE_WAIT == CLOSE_WAIT
        and _states.TcpState.CLOSING == CLOSING and _states.TcpState.LAST_ACK == LAST_ACK
        and _states.TcpState.TIME_WAIT == TIME_WAIT), "tcp.pxd state codes differ from TcpState"

# _legal[from] has bit (1 << to) set for every legal transition; _seen likewise for
# every transition taken in this process (coverage, tests/test_tcp_states.py)
cdef uint16_t _legal[N_STATES]
cdef uint16_t _seen[N_STATES]
cdef bint _strict = 0
memset(_legal, 0, sizeof(_legal))
memset(_seen, 0, sizeof(_seen))
for _frm, _to, _why, _src in _states.TRANSITIONS:
    _legal[<int>_frm] |= <uint16_t>(1 << <int>_to)
_strict = os.environ.get("STACKPEP_TCP_STRICT", "") not in ("", "0")


def set_strict_transitions(bint on):
    """Raise AssertionError on an illegal state transition (else: refuse and count it)."""
    global _strict
    _strict = on


def transitions_seen():
    """Every (from, to) TcpState pair some connection of this process went through."""
    cdef int i, j
    return frozenset((_states.TcpState(i), _states.TcpState(j))
                     for i in range(N_STATES) for j in range(N_STATES) if _seen[i] >> j & 1)


def reset_transitions_seen():
    memset(_seen, 0, sizeof(_seen))

# -- events (stackpep.tcp.events), queued as codes ------------------------------------------


_CLOSE_REASONS = (_ev.CloseReason.NORMAL, _ev.CloseReason.RESET, _ev.CloseReason.REFUSED,
                  _ev.CloseReason.ABORTED, _ev.CloseReason.TIMEOUT, _ev.CloseReason.KEEPALIVE)

# -- drop reasons: one counter each ----------------------------------------------------------
# One list of names, stackpep.tcp.statistics.DROP_REASONS, in the order of the D_* codes of
# tcp.pxd (tests/test_tcp_states.py checks the two against each other).

DROP_NAMES = _stats.DROP_REASONS
assert len(DROP_NAMES) == D_COUNT, "tcp.pxd D_* codes and statistics.DROP_REASONS differ"


cdef inline int64_t i64min(int64_t a, int64_t b) noexcept nogil:
    return a if a < b else b

cdef inline int64_t i64max(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


# Scratch shared by every engine (one runs at a time, under the GIL): the packet
# packets_to_send() builds, and a payload that spans two buffer chunks made
# contiguous (_emit_data).  Per engine they were 2 x ~1.6 KB of every idle connection.
cdef uint8_t* g_out_buf = NULL
cdef uint8_t* g_pl_buf = NULL
cdef Py_ssize_t g_scratch_cap = 0


cdef int scratch_reserve(Py_ssize_t cap) except -1:
    global g_out_buf, g_pl_buf, g_scratch_cap
    cdef uint8_t* o
    cdef uint8_t* p
    if cap <= g_scratch_cap:
        return 0
    o = <uint8_t*>realloc(g_out_buf, cap)
    if o == NULL:
        raise MemoryError()
    g_out_buf = o
    p = <uint8_t*>realloc(g_pl_buf, cap)
    if p == NULL:
        raise MemoryError()
    g_pl_buf = p
    g_scratch_cap = cap
    return 0


def buffer_statistics():
    """The send/receive buffer storage of every engine of this process (chunkbuf.pxi):
    bytes and chunks held now, chunks kept free for reuse, chunks taken from and
    given back to malloc so far."""
    return {"bytes": cb_chunks_held * CB_CHUNK, "chunks": cb_chunks_held, "chunk_size": CB_CHUNK,
            "pool_chunks": cb_pool_n, "chunks_allocated": cb_chunks_allocated, "chunks_freed": cb_chunks_freed}


def release_memory():
    """Give the free chunks back to malloc and ask it to return free pages to the
    kernel (malloc_trim): for a box whose connections are gone.  Returns the
    bytes of chunks given back."""
    cdef int64_t n = cb_pool_n
    cb_trim_pool()
    return n * CB_CHUNK


# The out-of-order queue and the SACK scoreboard of a connection that has none
# (~1.5 KB each): every engine points here until it adds an interval (_ivset_own);
# nothing writes to a set with no interval.
cdef ivset_t g_ivset_empty


cdef ivset_t* ivset_new() except NULL:
    cdef ivset_t* s = <ivset_t*>malloc(sizeof(ivset_t))
    if s == NULL:
        raise MemoryError()
    s.n = 0
    s.clock = 0
    return s


cdef inline void ivset_release(ivset_t** p) noexcept:
    # back to the shared empty set once no interval is left
    if p[0] != &g_ivset_empty and p[0].n == 0:
        free(p[0])
        p[0] = &g_ivset_empty


cdef class TcpConnection:
    def __cinit__(self):
        self.ofo = &g_ivset_empty
        self.sb = &g_ivset_empty
        self.rd_pkt = NULL
        self.srep = NULL

    def __dealloc__(self):
        cb_free_all(&self.sbuf)
        cb_free_all(&self.rbuf)
        if self.ofo != &g_ivset_empty:
            free(self.ofo)
        if self.sb != &g_ivset_empty:
            free(self.sb)
        free(self.rd_pkt)
        free(self.srep)

    def __init__(self, config, bytes local_addr, int local_port, bytes remote_addr, int remote_port,
                 iss, ts_offset=0):
        if len(local_addr) not in (4, 16) or len(remote_addr) != len(local_addr):
            raise ValueError("addresses must both be 4 (IPv4) or 16 (IPv6) bytes")
        if not (0 < local_port < 65536 and 0 < remote_port < 65536):
            raise ValueError("ports must be 1..65535")
        self.config = config
        self._laddr = local_addr
        self._raddr = remote_addr
        self.lport = local_port
        self.rport = remote_port
        self.ipver = 4 if len(local_addr) == 4 else 6
        self._iss = <uint32_t>(int(iss) & 0xFFFFFFFF)
        self.ts_offset = <uint32_t>(int(ts_offset) & 0xFFFFFFFF)
        seg_init(&self.tmpl)
        self.tmpl.ip_version = self.ipver
        self.tmpl.tos = <uint8_t>(config.tos & 0xFC)
        self.tmpl.ttl = config.ttl
        memcpy(self.tmpl.src, <const char*>local_addr, len(local_addr))
        memcpy(self.tmpl.dst, <const char*>remote_addr, len(remote_addr))
        self.tmpl.sport = local_port
        self.tmpl.dport = remote_port
        self.tmpl.ip_df = 1          # RFC 1191 §3: path-MTU discovery sets DF
        # self.st is CLOSED (0) from allocation; _set_state writes it from here on
        # buffers
        self.sb_cap = config.snd_buf
        self.rb_cap = config.rcv_buf
        cb_init(&self.sbuf, self.sb_cap)     # no storage until data is queued (chunkbuf.pxi)
        cb_init(&self.rbuf, self.rb_cap)
        self.pmtu = config.mtu
        self.out_cap = config.mtu + 128
        if self.out_cap < 1500 + 128:
            self.out_cap = 1500 + 128
        scratch_reserve(self.out_cap)
        # MSS we advertise: clamped to the egress MTU (RFC 9293 §3.7.1, RFC 6691)
        cdef int hdrs = (20 if self.ipver == 4 else 40) + 20
        self.adv_mss = min(config.mss, config.mtu - hdrs)
        # RFC 9293 §3.7.1 default send MSS: 536 (IPv4) / 1220 (IPv6, RFC 8200 §5)
        self.peer_mss = 536 if self.ipver == 4 else 1220
        # RFC 7323 §2.3: the shift that lets the receive buffer be advertised
        cdef int ws
        if config.window_scale is None:
            ws = 0
            while ws < 14 and (self.rb_cap >> ws) > 65535:
                ws += 1
        else:
            ws = config.window_scale
        self.wscale_offer = ws
        self.snd_wscale = 0
        self.rcv_wscale = 0
        # hot config copies
        self.cfg_nagle = config.nagle
        self.cfg_delack_us = config.delayed_ack_us
        self.cfg_delack_segs = config.delayed_ack_segments
        self.cfg_syn_retries = config.syn_retries
        self.cfg_max_retrans = config.max_retransmits
        self.cfg_user_timeout = config.user_timeout_us if config.user_timeout_us is not None else 0
        self.cfg_iw = config.initial_window_segments
        self.cfg_keepalive = config.keepalive
        self.cfg_ka_idle = config.keepalive_idle_us
        self.cfg_ka_intvl = config.keepalive_interval_us
        self.cfg_ka_count = config.keepalive_count
        self.cfg_tw = config.time_wait_us
        self.cfg_fw2 = config.fin_wait2_timeout_us if config.fin_wait2_timeout_us is not None else 0
        self.cfg_chal_limit = config.challenge_ack_limit
        self.cc = make_cc(config.congestion, config, self.ipver)
        self.loss_corruption = config.loss_response == "corruption"
        # link outage (CCSDS 714.0-B-2, notes "Loss-type handling"): off unless outage_rtos / outage_silence_us
        self.cfg_outage_rtos = config.outage_rtos or 0
        self.cfg_outage_probe = config.outage_probe_us
        self.cfg_outage_silence = config.outage_silence_us or 0
        self.cfg_outage_max = config.outage_max_us or 0
        # sequence state
        self.snd_una = -1
        self.snd_nxt = -1
        self.snd_max = -1
        self.recover = -1
        self.rcv_fin_off = -1
        rtt_init(&self.rtt, config.initial_rto_us, config.min_rto_us, config.max_rto_us)
        self._update_smss()
        self.cc.init(self.smss, self.cfg_iw)
        self._scps_init(getattr(config, "scps", None))
        self._tfo_init(config)
        self.cfg_rd = getattr(config, "first_flight_redundancy", 0) or 0
        self.cfg_pace_slack = getattr(config, "pace_slack_us", 8000)
        if self.cfg_rd:
            self.rd_pkt = <uint8_t*>malloc(self.out_cap)
            if self.rd_pkt == NULL:
                raise MemoryError()

    # ================================================================================
    # helpers
    # ================================================================================
    cdef uint32_t _sseq(self, int64_t off) noexcept:
        return <uint32_t>(self._iss + 1 + <uint32_t>off)

    cdef int64_t _soff(self, uint32_t seq) noexcept:
        # send-side offset of a sequence number, relative to SND.UNA (wrap-safe)
        return self.snd_una + <int32_t>(seq - self._sseq(self.snd_una))

    cdef uint32_t _rseq(self, int64_t off) noexcept:
        return <uint32_t>(self._irs + 1 + <uint32_t>off)

    cdef int64_t _roff(self, uint32_t seq) noexcept:
        return self.rcv_nxt + <int32_t>(seq - self._rseq(self.rcv_nxt))

    cdef uint32_t _ts_now(self, uint64_t now) noexcept:
        # RFC 7323 §5.4: a 1 ms timestamp clock
        return <uint32_t>(now // 1000) + self.ts_offset

    cdef void _update_smss(self):
        # RFC 9293 §3.7.1 / RFC 6691: Eff.snd.MSS = min(SendMSS+20, MMS_S) - TCP header - options
        cdef int iph = 20 if self.ipver == 4 else 40
        cdef int64_t m = self.peer_mss + 20
        if self.pmtu - iph < m:
            m = self.pmtu - iph
        m -= 20
        if self.ts_ok:
            m -= TS_OPT_LEN
        if m < 8:
            m = 8
        self.smss = <uint32_t>m

    cdef void _drop(self, int reason) noexcept:
        self.drops[reason] += 1

    cdef int _set_state(self, int new) except -1:
        """The only writer of the state (RFC 9293 §3.3.2), checked against
        stackpep.tcp.states.TRANSITIONS: an illegal change is an engine bug, refused
        and counted (raised when strict)."""
        cdef int old = self.st
        if not (_legal[old] >> new) & 1:
            self.n_illegal_transitions += 1
            if _strict:
                raise AssertionError(f"illegal TCP state transition {STATES[old]} -> {STATES[new]}")
            return 0
        _seen[old] |= <uint16_t>(1 << new)
        self.st = new
        return 0

    cdef void _push_event(self, int code):
        # bounded queue: an event that does not fit is counted, not silently lost
        if self.ev_n < EVQ_SIZE:
            self.evq[(self.ev_head + self.ev_n) % EVQ_SIZE] = code
            self.ev_n += 1
        else:
            self.n_events_lost += 1

    cdef void _push_event_ab(self, int code, int64_t a, int64_t b):
        # an event with arguments (the SCPS events)
        cdef int i
        if self.ev_n < EVQ_SIZE:
            i = (self.ev_head + self.ev_n) % EVQ_SIZE
            self.evq[i] = code
            self.evq_a[i] = a
            self.evq_b[i] = b
            self.ev_n += 1
        else:
            self.n_events_lost += 1

    cdef void _queue_rst(self, uint32_t seq, uint32_t ack, uint8_t flags):
        if self.n_rstq < RSTQ_MAX:
            self.rstq_seq[self.n_rstq] = seq
            self.rstq_ack[self.n_rstq] = ack
            self.rstq_flags[self.n_rstq] = flags
            self.n_rstq += 1

    cdef void _challenge_ack(self, uint64_t now):
        # RFC 5961 §7: rate-limit challenge ACKs (per connection, per second)
        if now - self.chal_window_start >= 1000000 or self.chal_window_start == 0:
            self.chal_window_start = now if now > 0 else 1
            self.chal_count = 0
        if self.chal_count >= self.cfg_chal_limit:
            self._drop(D_CHALLENGE_ACK_LIMIT)
            return
        self.chal_count += 1
        self.n_chal += 1
        self.ack_now = 1

    cdef void _enter_closed(self, int reason):
        if self.st == CLOSED:
            return
        self._set_state(CLOSED)
        self.close_reason = reason
        timers_clear(&self.tm)
        self.ack_now = 0
        self.syn_pending = 0
        self.probe_pending = 0
        self.keepalive_pending = 0
        self.rexmit_pending = 0
        cb_free_all(&self.sbuf)         # nothing more goes out (received bytes stay readable)
        if reason == CR_RESET or reason == CR_REFUSED:
            self._push_event(EV_RESET)
        self._push_event(EV_CLOSED)

    cdef void _enter_time_wait(self, uint64_t now):
        # RFC 9293 §3.6: 2 MSL, nothing else pending
        self._set_state(TIME_WAIT)
        cdef uint64_t pace = self.tm.pace
        timers_clear(&self.tm)
        self.tm.pace = pace
        self.tm.time_wait = now + self.cfg_tw
        if self.tm.time_wait == 0:
            self.tm.time_wait = 1

    cdef void _rtt_sample(self, int64_t r, uint64_t now):
        if rtt_sample(&self.rtt, r) and not (self.cc.delay_based and self.ts_ok):
            # (with timestamps a delay-based controller takes the RFC 7323 samples of
            # every ACK instead, _process_ack: a timed segment held behind a repaired
            # hole would count the repair as queueing delay)
            self.cc.on_rtt_sample(now, <uint64_t>r)

    cdef int64_t _rcv_data_end(self) noexcept:
        return self.rcv_nxt - (1 if self.fin_rcvd else 0)

    cdef void _sb_release(self):
        # chunks of acknowledged bytes back to the pool (chunkbuf.pxi)
        cdef int64_t lo = self._sb_head()
        if lo > self.sb_rel or lo >= self.wr_end:
            cb_release(&self.sbuf, self.sb_rel, lo, self.wr_end)
            self.sb_rel = lo
        ivset_release(&self.sb)

    cdef void _rb_release(self, int64_t old_lo):
        # chunks of bytes the application read back to the pool; out-of-order data
        # beyond RCV.NXT keeps its chunks
        cdef int64_t hi = self._rcv_data_end()
        if self.ofo.n and self.ofo.r[self.ofo.n - 1] > hi:
            hi = self.ofo.r[self.ofo.n - 1]
        cb_release(&self.rbuf, old_lo, self.rd_off, hi)
        ivset_release(&self.ofo)

    @property
    def buffer_bytes(self):
        """Bytes of send and receive buffer storage this connection holds now: whole
        chunks (chunkbuf.pxi) while data is queued or unread, 0 when both are empty."""
        return cb_bytes(&self.sbuf) + cb_bytes(&self.rbuf)

    cdef int64_t _flight(self) noexcept:
        return self.snd_nxt - self.snd_una if self.snd_nxt > self.snd_una else 0

    # ================================================================================
    # application interface
    # ================================================================================
    def connect(self, uint64_t now, bint scps_offer=True, bint fast_open=True):
        """Active open (RFC 9293 §3.10.1): CLOSED -> SYN-SENT.  ``scps_offer=False``: no
        SCPS option 20 in the SYN although TcpConfig.scps is set (a destination known
        to refuse it, stackpep.tcp.scps.ScpsRefusals).  ``fast_open=False``: no data in
        the SYN although TcpConfig.tfo_client is set (RFC 7413; data sent before
        connect() waits for the handshake then)."""
        if self.st != CLOSED or self.opened:
            raise RuntimeError(f"connect() in state {STATES[self.st]}")
        self.opened = 1
        self.passive = 0
        self._set_state(SYN_SENT)
        self.syn_pending = 1
        self.syn_ecn = bool(self.config.ecn)   # RFC 3168 §6.1.1: ECN-setup SYN (ECE|CWR)
        self.last_rcv_time = now
        self.scps_syn_opt = self.scps_cfg and scps_offer
        self.tfo_syn_opt = self.tfo_client and fast_open

    def listen(self):
        """Passive open (RFC 9293 §3.10.1): CLOSED -> LISTEN."""
        if self.st != CLOSED or self.opened:
            raise RuntimeError(f"listen() in state {STATES[self.st]}")
        self.opened = 1
        self.passive = 1
        self._set_state(LISTEN)

    def send(self, data):
        """Copy up to len(data) bytes into the send buffer; returns how many (RFC 9293 §3.10.2)."""
        cdef Py_buffer view
        cdef int64_t n, free_, pos, first
        if self.fin_requested or (self.st == CLOSED and self.opened) or self.st in (TIME_WAIT, CLOSING, LAST_ACK, FIN_WAIT_1, FIN_WAIT_2):
            if self.st == CLOSED and self.opened:
                raise ConnectionError("connection closed")
            return 0
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = view.len
            free_ = self.sb_cap - (self.wr_end - self._sb_head())
            if n > free_:
                n = free_
                self.send_blocked = 1
            if n <= 0:
                return 0
            cb_write(&self.sbuf, self.wr_end, <const uint8_t*>view.buf, n)
            self.wr_end += n
            if self.scps_rb or (self.scps_rb_cfg and not self.have_irs):
                self._scps_record_push()         # (before the SYN exchange: the peer may be SCPS)
            return n
        finally:
            PyBuffer_Release(&view)

    cdef int64_t _ack_seq(self) noexcept:
        # Sequence offset for a segment without data, SYN or FIN: after a go-back-N
        # rewind of SND.NXT the peer may already hold data up to snd_hi, and an
        # ACK below its RCV.NXT would be unacceptable (BSD uses snd_max the same way).
        return self.snd_nxt if self.snd_nxt > self.snd_hi else self.snd_hi

    cdef int64_t _sb_head(self) noexcept:
        cdef int64_t h = self.snd_una
        if h < 0:
            h = 0
        if h > self.wr_end:
            h = self.wr_end
        return h

    def send_space(self):
        if self.fin_requested or self.st == CLOSED and self.opened:
            return 0
        if self.st in (TIME_WAIT, CLOSING, LAST_ACK, FIN_WAIT_1, FIN_WAIT_2):
            return 0
        return self.sb_cap - (self.wr_end - self._sb_head())

    @property
    def send_buffered(self):
        return self.wr_end - self._sb_head()

    def send_eof(self):
        """RFC 9293 §3.10.4 CLOSE: FIN after the queued data."""
        cdef int st = self.st
        if self.fin_requested:
            return
        if st == LISTEN or st == SYN_SENT:
            self.fin_requested = 1
            self._enter_closed(CR_NORMAL)
            return
        if st == CLOSED:
            return
        self.fin_requested = 1
        if st == ESTABLISHED:
            self._set_state(FIN_WAIT_1)
        elif st == CLOSE_WAIT:
            self._set_state(LAST_ACK)
        elif st == SYN_RECEIVED and self.wr_end == 0:
            # §3.10.4: no data queued -> form a FIN now and enter FIN-WAIT-1
            self._set_state(FIN_WAIT_1)
        # SYN-RECEIVED with data queued: FIN-WAIT-1 once ESTABLISHED (§3.10.4)

    def abort(self):
        """RFC 9293 §3.10.5 ABORT: RST in synchronized states, then CLOSED."""
        cdef int st = self.st
        if st == CLOSED:
            return
        if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self.n_rstq = 0
            self._queue_rst(self._sseq(self._ack_seq()), self._rseq(self.rcv_nxt), TH_RST | TH_ACK)
        self._enter_closed(CR_ABORTED)

    def set_congestion_control(self, CongestionControl cc not None):
        """Install another controller (e.g. a subclass of CongestionControl from a
        cimporting module); it starts from the current cwnd and ssthresh."""
        cc.init(self.smss, self.cfg_iw)
        cc.take_over(self.cc)
        self.cc = cc

    def set_loss_response(self, str policy):
        if policy == "congestion":
            self.loss_corruption = 0
        elif policy == "corruption":
            self.loss_corruption = 1
        else:
            raise ValueError("loss response is 'congestion' or 'corruption'")

    cdef int64_t _readable(self) noexcept:
        if self.st == LISTEN or self.st == SYN_SENT or (self.st == SYN_RECEIVED and not self.tfo_accepted):
            return 0
        return self._rcv_data_end() - self.rd_off

    def recv_available(self):
        return self._readable()

    def at_eof(self):
        return bool(self.fin_rcvd and self._readable() == 0)

    cdef int64_t _recv_copy(self, uint8_t* dst, int64_t n):
        cdef int64_t avail = self._readable()
        cdef int64_t pos, first
        if n > avail:
            n = avail
        if n <= 0:
            return 0
        cb_read(&self.rbuf, self.rd_off, dst, n)
        self.rd_off += n
        self._rb_release(self.rd_off - n)
        self.readable_notified = 0
        self._window_update_check()
        return n

    def recv(self, Py_ssize_t max_bytes):
        cdef int64_t n = self._readable()
        if max_bytes < n:
            n = max_bytes
        if n <= 0:
            self.readable_notified = 0
            return b""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
        self._recv_copy(<uint8_t*>PyBytes_AS_STRING(out), n)
        return out

    def relay_to(self, TcpConnection dst not None, Py_ssize_t chunk):
        """Move readable bytes straight into dst's send buffer, as many as dst
        takes now, in pieces of at most ``chunk`` (each piece one send(), so one
        SCPS record end): recv() + dst.send() without a bytes object in between.
        Returns how many moved.  The split connection's relay (stackpep.pep.splitter)."""
        return self._relay_into(dst, chunk)

    cdef int64_t _relay_into(self, TcpConnection dst, int64_t chunk):
        """relay_to (also split_turn's relay)."""
        cdef int64_t moved = 0, n, piece, k
        cdef uint8_t tmp[16384]
        if chunk <= 0:
            return 0
        if dst.fin_requested or (dst.st == CLOSED and dst.opened) or dst.st in (TIME_WAIT, CLOSING, LAST_ACK,
                                                                                 FIN_WAIT_1, FIN_WAIT_2):
            return 0
        while True:
            n = dst.sb_cap - (dst.wr_end - dst._sb_head())
            if n <= 0:
                break
            piece = self._readable()
            if piece <= 0:
                self.readable_notified = 0  # as recv() finding nothing
                break
            if piece > chunk:
                piece = chunk
            if piece > n:
                piece = n
            n = piece
            while n > 0:
                k = n if n < <int64_t>sizeof(tmp) else <int64_t>sizeof(tmp)
                k = self._recv_copy(tmp, k)
                cb_write(&dst.sbuf, dst.wr_end, tmp, k)
                dst.wr_end += k
                n -= k
            moved += piece
            if dst.scps_rb or (dst.scps_rb_cfg and not dst.have_irs):
                dst._scps_record_push()
        return moved

    def next_event_not_flow(self):
        """next_event(), passing over DataReadable and SendSpace (a relay that looks
        at both buffers every turn needs neither): None when nothing else is queued,
        without making an object for what it passes over."""
        cdef int code
        while self.ev_n:
            code = self.evq[self.ev_head]
            if code != EV_READABLE and code != EV_SENDSPACE:
                return self.next_event()
            self.ev_head = (self.ev_head + 1) % EVQ_SIZE
            self.ev_n -= 1
        return None

    cdef bint _skip_flow_events(self) noexcept:
        """next_event_not_flow() without the event: pass over DataReadable and
        SendSpace; True if another event is queued (left for next_event)."""
        while self.ev_n:
            if self.evq[self.ev_head] != EV_READABLE and self.evq[self.ev_head] != EV_SENDSPACE:
                return 1
            self.ev_head = (self.ev_head + 1) % EVQ_SIZE
            self.ev_n -= 1
        return 0

    def recv_into(self, buffer):
        cdef Py_buffer view
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            return self._recv_copy(<uint8_t*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef void _window_update_check(self):
        # RFC 9293 §3.8.6.2.2 receiver SWS avoidance: announce a window opened by at
        # least min(RCV.BUFF/2, Eff.MSS); like Linux, only when it at least doubles
        # what the peer currently may send (else the next ACK carries it anyway).
        if self.st < ESTABLISHED or self.fin_rcvd:
            return
        cdef int64_t cur = self.rcv_adv - self.rcv_nxt
        cdef int64_t avail = self.rd_off + self.rb_cap - self.rcv_nxt
        cdef int64_t thresh = self.rb_cap // 2
        cdef int64_t wmax = (<int64_t>65535) << self.rcv_wscale
        if avail > wmax:
            avail = wmax    # the 16-bit field cannot announce more (RFC 7323 §2.2)
        if cur < 0:
            cur = 0
        if self.adv_mss < thresh:
            thresh = self.adv_mss
        # The peer is only held up by a window below about two segments; a larger
        # one is refreshed by the ACKs of the data still arriving.
        if avail - cur >= thresh and avail >= 2 * cur and cur < 2 * thresh:
            self.ack_now = 1

    # ================================================================================
    # input
    # ================================================================================
    def receive_packet(self, packet, uint64_t now, bint checked=False):
        """An IP packet carrying TCP for this connection (RFC 9293 §3.10.7).

        The IPv4 header checksum (RFC 791 §3.1) and the TCP checksum (RFC 9293
        §3.1, RFC 8200 §8.1) are verified here, unless `checked`: the caller
        already verified both, or the kernel vouched for them -- what every
        packet a stackpep.io.ports port yields is (the capture checks each
        segment before it builds a flow key), so the splitter does not sum every
        byte twice (nor undo the device's receive checksum offload)."""
        cdef tcp_seg_t seg
        cdef const uint8_t* p
        cdef Py_ssize_t n
        cdef Py_buffer view
        cdef int rc
        cdef int verify = 0 if checked else 1
        if type(packet) is bytes:
            p = <const uint8_t*>PyBytes_AS_STRING(packet)
            n = PyBytes_GET_SIZE(packet)
            rc = parse_ip_tcp(p, n, &seg, verify)
            if rc != WIRE_OK:
                self._drop(D_BAD_CHECKSUM if rc == WIRE_TCP_CHECKSUM or rc == WIRE_IPV4_CHECKSUM else D_MALFORMED)
                return
            self.receive_seg(&seg, p, now)
            return
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
        try:
            p = <const uint8_t*>view.buf
            rc = parse_ip_tcp(p, view.len, &seg, verify)
            if rc != WIRE_OK:
                self._drop(D_BAD_CHECKSUM if rc == WIRE_TCP_CHECKSUM or rc == WIRE_IPV4_CHECKSUM else D_MALFORMED)
                return
            self.receive_seg(&seg, p, now)
        finally:
            PyBuffer_Release(&view)

    cdef int receive_ptr(self, const uint8_t* p, Py_ssize_t n, uint64_t now) except -1:
        """receive_packet(packet, now, checked=True) for an IP packet in the
        caller's memory -- the capture ring's frame (stackpep._fast.capture
        FastFlows: an opened leg's segments go from the ring to its engine
        without a bytes object).  The same parse, drops and input as
        receive_packet; the caller verified the checksums."""
        cdef tcp_seg_t seg
        cdef int rc = parse_ip_tcp(p, n, &seg, 0)
        if rc != WIRE_OK:
            self._drop(D_BAD_CHECKSUM if rc == WIRE_TCP_CHECKSUM or rc == WIRE_IPV4_CHECKSUM else D_MALFORMED)
            return 0
        return self.receive_seg(&seg, p, now)

    cdef int receive_seg(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now) except -1:
        """C-level input: a segment already parsed (and checksum-verified) by the wire layer;
        ``pkt`` is the IP packet it was parsed from."""
        cdef int alen = 4 if self.ipver == 4 else 16
        self.segs_in += 1
        if (s.ip_version != self.ipver or s.sport != self.rport or s.dport != self.lport
                or memcmp_(s.src, self.tmpl.dst, alen) or memcmp_(s.dst, self.tmpl.src, alen)):
            self._drop(D_WRONG_FLOW)
            return 0
        cdef int st = self.st
        if st == CLOSED:
            self._input_closed(s)
            return 0
        if st == LISTEN:
            self._input_listen(s, pkt, now)
            return 0
        if st == SYN_SENT:
            self._input_syn_sent(s, pkt, now)
        else:
            self._input_sync(s, pkt, now)
            if self.scps_bets and self.cfg_bets_timeout:
                self._scps_after_input(now)
        if self.sbuf.held or self.sb.n == 0 and self.sb != &g_ivset_empty:
            self._sb_release()
        return 0

    cdef void _input_closed(self, tcp_seg_t* s):
        # RFC 9293 §3.10.7.1: an incoming RST is discarded; anything else gets a RST
        self._drop(D_CLOSED)
        if s.flags & TH_RST:
            return
        if s.flags & TH_ACK:
            self._queue_rst(s.ack, 0, TH_RST)
        else:
            self._queue_rst(0, <uint32_t>(s.seq + s.payload_len + (1 if s.flags & TH_SYN else 0)
                                          + (1 if s.flags & TH_FIN else 0)), TH_RST | TH_ACK)

    cdef void _syn_options(self, tcp_seg_t* s, bint active):
        """Options of the peer's SYN / SYN-ACK (RFC 9293 §3.7.1, RFC 7323 §2-3, RFC 2018 §2)."""
        cdef int cfg_ws = self.wscale_offer
        if s.opts.mss:
            self.peer_mss = s.opts.mss
        if cfg_ws >= 0 and s.opts.wscale >= 0:
            self.ws_ok = 1
            # RFC 7323 §2.3: a shift above 14 is used as 14
            self.snd_wscale = s.opts.wscale if s.opts.wscale <= 14 else 14
            self.rcv_wscale = cfg_ws
        else:
            self.ws_ok = 0
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_ok = bool(self.config.sack) and s.opts.sack_perm
        if self.config.timestamps and s.opts.has_ts:
            self.ts_ok = 1
            self.ts_recent = s.opts.ts_val
            self.ts_recent_time = self.last_rcv_time
        else:
            self.ts_ok = 0
        self._update_smss()
        self.cc.set_mss(self.smss)
        self.cc.init(self.smss, self.cfg_iw)
        if self.scps_cfg:
            self._scps_syn_received(s)

    cdef void _input_listen(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now):
        # RFC 9293 §3.10.7.2
        cdef uint8_t f = s.flags
        if f & TH_RST:
            self._drop(D_LISTEN_RST)
            return
        if f & TH_ACK:
            self._drop(D_LISTEN_ACK)
            self._queue_rst(s.ack, 0, TH_RST)
            return
        if not (f & TH_SYN):
            self._drop(D_LISTEN_NO_SYN)
            return
        self._irs = s.seq
        self.have_irs = 1
        self.rcv_nxt = 0
        self.rd_off = 0
        self.last_rcv_time = now
        self._syn_options(s, 0)
        # RFC 3168 §6.1.1: an ECN-setup SYN has ECE and CWR; answer with ECE only if we do ECN
        self.ecn_ok = bool(self.config.ecn) and (f & (TH_ECE | TH_CWR)) == (TH_ECE | TH_CWR)
        self.syn_ecn = self.ecn_ok
        self.snd_wnd = s.window             # RFC 7323 §2.2: never scaled in a SYN
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = -1
        self.snd_wl2 = -1
        self._set_state(SYN_RECEIVED)
        self.syn_pending = 1
        self.rcv_adv = self.rcv_nxt + min(self.rb_cap, 65535)
        if self.tfo_server:
            # RFC 7413 §4.2.2: data only with a cookie that verifies; delivered at once
            if self._tfo_syn_received(s):
                self._rcv_data(0, pkt + s.payload_off, s.payload_len, now)
                self.syn_data = 1
                self._tfo_accepted(s.payload_len)
        elif s.payload_len:
            # §3.10.7.2: "any other control or text should be queued for processing later"
            self._rcv_data(0, pkt + s.payload_off, s.payload_len, now)
            self.syn_data = 1
        if f & TH_FIN:
            self._rcv_fin(s.payload_len, now)

    cdef void _input_syn_sent(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now):
        # RFC 9293 §3.10.7.3
        cdef uint8_t f = s.flags
        cdef int64_t ack_off = 0
        if f & TH_ACK:
            ack_off = self._soff(s.ack)
            # first check: SEG.ACK =< ISS or SEG.ACK > SND.NXT is unacceptable
            if ack_off <= -1 or ack_off > self.snd_max:
                self._drop(D_SYN_SENT_BAD_ACK)
                if not (f & TH_RST):
                    self._queue_rst(s.ack, 0, TH_RST)
                return
        if f & TH_RST:
            # second check: only with an acceptable ACK (RFC 5961 §3.2 keeps this for SYN-SENT)
            if f & TH_ACK:
                if self.scps_syn_opt and self._scps_syn_rst(now):
                    return
                self._enter_closed(CR_REFUSED)
            else:
                self._drop(D_SYN_SENT_RST)
            return
        if not (f & TH_SYN):
            self._drop(D_SYN_SENT_NO_SYN)
            return
        # fourth check: SYN
        self._irs = s.seq
        self.have_irs = 1
        self.rcv_nxt = 0
        self.rd_off = 0
        self.last_rcv_time = now
        self.rcv_adv = min(self.rb_cap, 65535)     # the window in our SYN
        self._syn_options(s, 1)
        if f & TH_ACK:
            # RFC 3168 §6.1.1: ECN-setup SYN-ACK has ECE without CWR
            self.ecn_ok = self.syn_ecn and (f & (TH_ECE | TH_CWR)) == TH_ECE
            self.snd_una = ack_off
            if self.tfo_syn_len:
                self._tfo_synack(ack_off)
            self.snd_wnd = s.window           # RFC 7323 §2.2
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = 0
            self.snd_wl2 = ack_off
            if not self.syn_retransmitted and self.rtt.timing:
                self._rtt_sample(<int64_t>(now - self.rtt.timed_at), now)
            self.rtt.timing = 0
            self._established(now)
            self.ack_now = 1
            if s.payload_len:
                self._rcv_data(0, pkt + s.payload_off, s.payload_len, now)
            if f & TH_FIN:
                self._rcv_fin(s.payload_len, now)
        else:
            # simultaneous open (RFC 9293 §3.5 figure 8): SYN-ACK with our ISS
            self.ecn_ok = self.syn_ecn and (f & (TH_ECE | TH_CWR)) == (TH_ECE | TH_CWR)
            self.snd_wnd = s.window
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = -1
            self.snd_wl2 = -1
            self._set_state(SYN_RECEIVED)
            self.syn_pending = 1
            self.tm.rtx = 0
            if s.payload_len:
                self._rcv_data(0, pkt + s.payload_off, s.payload_len, now)
                self.syn_data = 1

    cdef void _established(self, uint64_t now):
        self._set_state(ESTABLISHED)
        self.retries = 0
        # data sent in SYN-RECEIVED (Fast Open, tfo_synrcvd_send) may still be outstanding
        self.tm.rtx = 0 if self.snd_una >= self.snd_max else now + self.rtt.rto
        self.syn_pending = 0
        if self.snd_una < 0:
            self.snd_una = 0
        if self.snd_nxt < 0:
            self.snd_nxt = 0
        if self.snd_max < self.snd_nxt:
            self.snd_max = self.snd_nxt
        self.recover = self.snd_una
        self.high_rxt = self.snd_una
        self.ecn_recover = self.snd_una
        if self.syn_retransmitted:
            rtt_after_syn_loss(&self.rtt)
        if self.syn_retransmitted:
            self.cc.on_syn_loss()       # RFC 5681 §3.1: IW of one segment after a lost SYN / SYN-ACK
        self._push_event(EV_CONNECTED)
        if self.syn_data and self._readable() > 0 and not self.readable_notified:
            self.readable_notified = 1
            self._push_event(EV_READABLE)
        if self.fin_requested:
            self._set_state(FIN_WAIT_1)
        if self.fin_rcvd:
            self._set_state(CLOSE_WAIT if self.st == ESTABLISHED else CLOSING)
            self._push_event(EV_EOF)

    cdef void _input_sync(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now):
        """SYN-RECEIVED and the synchronized states: RFC 9293 §3.10.7.4."""
        cdef uint8_t f = s.flags
        cdef int st = self.st
        cdef int64_t seg_off, seg_len, wnd, ack_off
        cdef uint32_t plen = s.payload_len
        cdef bint ok
        # RFC 7323 §3.2 / §5.3 (R1): timestamps before the sequence check
        if self.ts_ok and not (f & TH_RST):
            if not s.opts.has_ts:
                self._drop(D_NO_TIMESTAMP)
                return
            if seq_lt(s.opts.ts_val, self.ts_recent) and now - self.ts_recent_time > 24 * 86400 * 1000000ULL:
                # RFC 7323 §5.5: TS.Recent idle for more than 24 days is invalid, not a PAWS test
                self.ts_recent = s.opts.ts_val
                self.ts_recent_time = now
            elif seq_lt(s.opts.ts_val, self.ts_recent):
                self._drop(D_PAWS)
                self.ack_now = 1          # R1: send an acknowledgment
                return
        seg_off = self._roff(s.seq)
        # simultaneous open: the peer's SYN-ACK completes our SYN-RECEIVED (Linux does the same)
        if f & TH_SYN:
            if st == SYN_RECEIVED and s.seq == self._irs:
                if (f & TH_ACK) and self._soff(s.ack) == self.snd_max and self.snd_max >= 0 and not self.passive:
                    seg_off += 1
                    f = f & ~TH_SYN
                elif self.cfg_rd and self.rd_syn_done and not self.syn_retransmitted \
                        and now - self.rd_syn_time < <uint64_t>self.rtt.min_rto:
                    # first-flight redundancy on both ends: the peer's second copy of its SYN,
                    # sent with the first; our SYN-ACK and its copy answered it already.  A
                    # real retransmission comes no sooner than the peer's RTO (RFC 6298 §2.1,
                    # §2.4: at least min_rto), and our own SYN-ACK timer covers their loss.
                    self._drop(D_SYN_COPY)
                    return
                else:
                    # a retransmitted SYN: send the SYN-ACK again
                    self.syn_pending = 1
                    return
            else:
                # RFC 5961 §4.2: any SYN in a synchronized state gets a challenge ACK
                self._drop(D_SYN_CHALLENGED)
                self._challenge_ack(now)
                return
        seg_len = plen + (1 if f & TH_FIN else 0)
        # first check, sequence number acceptability (RFC 9293 §3.10.7.4 table)
        wnd = self.rcv_adv - self.rcv_nxt
        if wnd < 0:
            wnd = 0
        if seg_len == 0:
            if wnd == 0:
                ok = seg_off == self.rcv_nxt
            else:
                ok = self.rcv_nxt <= seg_off < self.rcv_nxt + wnd
        else:
            if wnd == 0:
                ok = 0
                # "special allowance" for valid ACKs, URGs and RSTs at RCV.NXT
                if seg_off == self.rcv_nxt:
                    ok = 1
            else:
                ok = ((self.rcv_nxt <= seg_off < self.rcv_nxt + wnd) or
                      (self.rcv_nxt <= seg_off + seg_len - 1 < self.rcv_nxt + wnd))
        if not ok:
            if f & TH_RST:
                self._drop(D_RST_OUT_OF_WINDOW)
                return
            self._drop(D_OUT_OF_WINDOW)
            if st == TIME_WAIT and (f & TH_FIN):
                # a retransmitted FIN: ACK it and restart 2 MSL (RFC 9293 §3.10.7.4 eighth)
                self.tm.time_wait = now + self.cfg_tw
            self.ack_now = 1
            return
        self.last_rcv_time = now
        self.ka_probes = 0
        # RFC 7323 §4.3: TS.Recent update for a segment covering Last.ACK.sent
        if self.ts_ok and s.opts.has_ts and seg_off <= self.last_ack_sent and seq_ge(s.opts.ts_val, self.ts_recent):
            self.ts_recent = s.opts.ts_val
            self.ts_recent_time = now
        # RFC 3168 §6.1.3: CE -> ECE on our ACKs until CWR
        if self.ecn_ok:
            if f & TH_CWR:
                self.ece_pending = 0
            if (s.tos & 3) == ECN_CE:
                self.n_ce += 1
                if not self.ece_pending:
                    self.ack_now = 1
                self.ece_pending = 1
        # second check, RST (RFC 5961 §3.2)
        if f & TH_RST:
            if seg_off != self.rcv_nxt:
                self._drop(D_RST_CHALLENGED)
                self._challenge_ack(now)
                return
            if st == SYN_RECEIVED and self.passive and not self.tfo_accepted:
                # back to LISTEN (RFC 9293 §3.10.7.4 second check); not once Fast Open
                # data went to the application: it must hear of the reset
                self._back_to_listen()
                return
            if st == SYN_RECEIVED:
                self._enter_closed(CR_REFUSED)
            elif st == TIME_WAIT:
                self._enter_closed(CR_NORMAL)
            else:
                self._enter_closed(CR_RESET)
            return
        # fifth check, ACK
        if not (f & TH_ACK):
            self._drop(D_NO_ACK)
            return
        ack_off = self._soff(s.ack)
        if st == SYN_RECEIVED or self.snd_una < 0:
            # our SYN is not acknowledged yet (also FIN-WAIT-1 after a CLOSE in SYN-RECEIVED)
            if self.snd_una < ack_off <= self.snd_max:
                self.snd_una = ack_off
                self.snd_wnd = (<int64_t>s.window) << self.snd_wscale
                if self.snd_wnd > self.max_snd_wnd:
                    self.max_snd_wnd = self.snd_wnd
                self.snd_wl1 = seg_off
                self.snd_wl2 = ack_off
                if not self.syn_retransmitted and self.rtt.timing:
                    self._rtt_sample(<int64_t>(now - self.rtt.timed_at), now)
                self.rtt.timing = 0
                if st == SYN_RECEIVED:
                    self._established(now)
                else:
                    self._push_event(EV_CONNECTED)
                    self.retries = 0
                    self.tm.rtx = 0 if self.snd_una >= self.snd_max else now + self.rtt.rto
                st = self.st
                if self.fin_requested and self.snd_una > self.wr_end and st == FIN_WAIT_1:
                    self._set_state(FIN_WAIT_2)
                    if self.cfg_fw2:
                        self.tm.fin_wait2 = now + self.cfg_fw2
                    st = self.st
            else:
                self._drop(D_SYN_RECEIVED_BAD_ACK)
                self._queue_rst(s.ack, 0, TH_RST)
                return
        else:
            if ack_off > self.snd_max:
                self._drop(D_ACK_UNSENT)
                self.ack_now = 1
                return
            if ack_off < self.snd_una - self.max_snd_wnd:
                # RFC 5961 §5.2
                self._drop(D_ACK_TOO_OLD)
                self._challenge_ack(now)
                return
            self._process_ack(s, ack_off, seg_off, plen, now)
            if self.fin_requested and self.snd_una > self.wr_end:
                # our FIN is acknowledged
                if st == FIN_WAIT_1:
                    self._set_state(FIN_WAIT_2)
                    if self.cfg_fw2:
                        self.tm.fin_wait2 = now + self.cfg_fw2
                elif st == CLOSING:
                    self._enter_time_wait(now)
                    return
                elif st == LAST_ACK:
                    self._enter_closed(CR_NORMAL)
                    return
            st = self.st
        if self.scps_on:
            self._scps_input(s, seg_off, ack_off, now)
        # sixth: URG is tolerated, its data is delivered inline (RFC 6093 §6)
        # seventh: segment text
        if plen:
            if st == ESTABLISHED or st == FIN_WAIT_1 or st == FIN_WAIT_2:
                self._rcv_data(seg_off, pkt + s.payload_off, plen, now)
            else:
                # §3.10.7.4 seventh check, CLOSE-WAIT and later: ignore the text
                self._drop(D_AFTER_FIN)
        # eighth: FIN
        if f & TH_FIN:
            if st == TIME_WAIT:
                self.ack_now = 1
                self.tm.time_wait = now + self.cfg_tw
            elif not self.fin_rcvd:
                self._rcv_fin(seg_off + plen, now)
            else:
                self.ack_now = 1

    cdef void _back_to_listen(self):
        self._set_state(LISTEN)
        self.syn_pending = 0
        self.tm.rtx = 0
        self.tm.delack = 0
        self.ack_now = 0
        self.retries = 0
        self.syn_retransmitted = 0
        self.rcv_nxt = 0
        self.have_irs = 0
        self.rd_off = 0
        self.ofo.n = 0
        ivset_release(&self.ofo)
        cb_free_all(&self.rbuf)         # (SYN data of the connection that went)
        self.fin_rcvd = 0
        self.rcv_fin_off = -1
        self.syn_data = 0
        self.snd_una = -1
        self.snd_nxt = -1
        self.snd_max = -1
        self.rtt.timing = 0
        self.rtt.rto = self.rtt.init_rto
        self.ws_ok = self.sack_ok = self.ts_ok = self.ecn_ok = 0
        self.scps_on = self.scps_snack = self.scps_bets = self.scps_rb = 0
        self.scps_feat = 0
        self.tfo_send_cookie = 0

    # ---------------------------------------------------------------------------------
    cdef void _rcv_fin(self, int64_t fin_off, uint64_t now):
        """The peer's FIN at receive offset fin_off (RFC 9293 §3.10.7.4 eighth check)."""
        if fin_off > self.rcv_nxt:
            self.rcv_fin_off = fin_off   # out of order: take it when the gap fills
            self.ack_now = 1
            return
        if fin_off < self.rcv_nxt:
            self.ack_now = 1
            return
        self.rcv_nxt += 1
        self.fin_rcvd = 1
        self.rcv_fin_off = -1
        self.ack_now = 1
        self.tm.delack = 0
        cdef int st = self.st
        if st == SYN_RECEIVED:
            return           # EOF reported once ESTABLISHED (_established)
        self._push_event(EV_EOF)
        if st == ESTABLISHED:
            self._set_state(CLOSE_WAIT)
        elif st == FIN_WAIT_1:
            if self.fin_requested and self.snd_una > self.wr_end:
                self._enter_time_wait(now)
            else:
                self._set_state(CLOSING)
        elif st == FIN_WAIT_2:
            self._enter_time_wait(now)

    cdef void _rcv_data(self, int64_t off, const uint8_t* p, int64_t n, uint64_t now):
        """In-window payload at receive offset ``off`` (RFC 9293 §3.10.7.4 seventh check)."""
        cdef int64_t skip, limit, pos, first, end, before
        cdef bint in_order
        if self.fin_rcvd:
            self._drop(D_AFTER_FIN)
            return
        if off < self.rcv_nxt:
            skip = self.rcv_nxt - off
            if skip >= n:
                self.ack_now = 1       # a duplicate: ACK at once (RFC 5681 §4.2)
                return
            p += skip
            n -= skip
            off = self.rcv_nxt
            self.ack_now = 1
        limit = self.rcv_adv
        if limit > self.rd_off + self.rb_cap:
            limit = self.rd_off + self.rb_cap
        if off + n > limit:
            self._drop(D_BEYOND_WINDOW)
            n = limit - off
            self.ack_now = 1
            if n <= 0:
                return
        if n > self.rcv_seg_max:
            self.rcv_seg_max = <uint32_t>n
        cb_write(&self.rbuf, off, p, n)
        end = off + n
        if off == self.rcv_nxt:
            self.rcv_nxt = end
            self.bytes_in += n
            if self.ofo.n:
                # filled all or part of a gap: ACK at once (RFC 5681 §4.2), also when
                # the gap is not closed (its sender times the repair from this ACK)
                self.ack_now = 1
                before = self.rcv_nxt
                if ivset_merge_front(self.ofo, &self.rcv_nxt):
                    self.bytes_in += self.rcv_nxt - before
            if self.rcv_fin_off >= 0 and self.rcv_fin_off == self.rcv_nxt:
                self._rcv_fin(self.rcv_fin_off, now)
            if not self.readable_notified and self.st != SYN_RECEIVED:
                self.readable_notified = 1
                self._push_event(EV_READABLE)
            # delayed ACK (RFC 9293 §3.8.6.3, RFC 5681 §4.2): every 2nd full-sized segment
            self.rcv_unacked += n
            if not self.ack_now:
                if self.cfg_delack_us == 0 or self.rcv_unacked >= <int64_t>self.cfg_delack_segs * self.rcv_seg_max:
                    self.ack_now = 1
                elif self.tm.delack == 0:
                    self.tm.delack = now + self.cfg_delack_us
        else:
            if self.ofo == &g_ivset_empty:
                self.ofo = ivset_new()
            if not ivset_add(self.ofo, off, end):
                self._drop(D_OFO_FULL)
            self.ack_now = 1               # out of order: duplicate ACK at once (RFC 5681 §4.2)

    # ---------------------------------------------------------------------------------
    cdef void _process_ack(self, tcp_seg_t* s, int64_t ack_off, int64_t seg_off, uint32_t plen, uint64_t now):
        """ACK processing in the synchronized states (RFC 9293 §3.10.7.4 fifth check)."""
        cdef int64_t win, acked, data_acked, prior_flight, newly_sacked = 0, a, b, trimmed = 0
        cdef bint window_changed = 0
        cdef uint8_t f = s.flags
        if self.outage:
            self._exit_outage(now)      # the link answered
        # window update: SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK)
        if self.snd_wl1 < seg_off or (self.snd_wl1 == seg_off and self.snd_wl2 <= ack_off):
            win = (<int64_t>s.window) << self.snd_wscale
            window_changed = win != self.snd_wnd
            self.snd_wnd = win
            self.snd_wl1 = seg_off
            self.snd_wl2 = ack_off
            if win > self.max_snd_wnd:
                self.max_snd_wnd = win
            if win > 0:
                self.persist_backoff = 0
                self.tm.persist = 0
        if self.sack_ok and s.opts.n_sack:
            newly_sacked = self._sack_update(s, ack_off)
            if newly_sacked > 0 and self.rtt.timing and ivset_skip(self.sb, self.rtt.timed_off) > self.rtt.timed_off:
                # the timed segment arrived (SACKed now): sample it now, not when a hole
                # below it is repaired, which would add the repair time to SRTT and the
                # RTO (Linux tcp_sacktag_one does the same; Karn's rule still holds)
                self.rtt.timing = 0
                self._rtt_sample(<int64_t>(now - self.rtt.timed_at), now)
        prior_flight = self._flight()
        if ack_off > self.snd_una:
            acked = ack_off - self.snd_una
            # payload bytes acknowledged (the FIN takes one sequence number, not a byte)
            a = self.snd_una if self.snd_una > 0 else 0
            b = ack_off if ack_off < self.wr_end else self.wr_end
            data_acked = b - a if b > a else 0
            self.bytes_acked += data_acked
            self.snd_una = ack_off
            if self.snd_nxt < ack_off:
                self.snd_nxt = ack_off
            if self.high_rxt < ack_off:
                self.high_rxt = ack_off
            self.una_time = now
            self.retries = 0
            if self.sb.n:
                trimmed = ivset_trim_below(self.sb, self.snd_una)
                self.sacked_bytes -= trimmed
            # RTT (RFC 6298 §3 Karn: timed segment not retransmitted; RFC 7323 §4 RTTM otherwise)
            if self.rtt.timing and ack_off > self.rtt.timed_off:
                self.rtt.timing = 0
                self._rtt_sample(<int64_t>(now - self.rtt.timed_at), now)
            elif (self.ts_ok and s.opts.has_ts and (not self.rtt.timing or self.next_send_time) and
                  (not self.rtt.ts_floor_set or seq_ge(s.opts.ts_ecr, self.rtt.ts_floor))):
                # (a paced, rate-based sender (next_send_time set) retransmits all the
                # time, so Karn's rule leaves its timed segment few samples: it takes
                # RFC 7323 §4 RTTM from every ACK that advances the left edge, as Linux does)
                # an echo older than the last RTO belongs to an original transmission
                # whose ACK was lost: as ambiguous as Karn's case, so no sample
                self._rtt_sample(<int64_t>(<uint32_t>(self._ts_now(now) - s.opts.ts_ecr)) * 1000
                                 if seq_le(s.opts.ts_ecr, self._ts_now(now)) else -1, now)
            elif self.rtt.srtt >= 0:
                rtt_end_backoff(&self.rtt)      # a new ACK ends any backoff (RFC 6298 §5.7 note)
            if (self.cc.delay_based and self.ts_ok and s.opts.has_ts
                    and (not self.rtt.ts_floor_set or seq_ge(s.opts.ts_ecr, self.rtt.ts_floor))
                    and seq_le(s.opts.ts_ecr, self._ts_now(now))):
                # a delay-based controller (Vegas) sees the RTT of every ACK that
                # advances the left edge (RFC 7323 §4 RTTM), not one timed segment per
                # RTT: its per-round minimum needs them (Brakmo & Peterson §3.2)
                self.cc.on_rtt_sample(now, <uint64_t>(<uint32_t>(self._ts_now(now) - s.opts.ts_ecr)) * 1000)
            # congestion control
            if self.ecn_ok and (f & TH_ECE) and self.snd_una > self.ecn_recover:
                self._ecn_response(now, prior_flight)
            if self.in_recovery:
                if ack_off >= self.recover:
                    self.in_recovery = 0
                    self.dupacks = 0
                    self.lt_sent = 0
                    if not self.loss_corruption:
                        self.cc.on_recovery_exit(now, <uint64_t>self._flight())
                    elif not self.sack_ok:
                        # corruption: undo RFC 6582's inflation, back to the window
                        # held when the loss was seen (no reduction)
                        self.cc.on_corruption_recovery_exit(now)
                elif not self.sack_ok:
                    # RFC 6582 §3.2 step 5: partial ACK
                    self.rexmit_pending = 1
                    self.cc.on_partial_ack(<uint64_t>acked)
                    self.tm.rtx = now + self.rtt.rto
                elif self.loss_corruption:
                    # what reached the receiver now (SACKed bytes counted once)
                    self._corruption_growth(now, acked - trimmed + newly_sacked, prior_flight)
            else:
                self.dupacks = 0
                self.lt_sent = 0
                if 2 * prior_flight >= <int64_t>self.cc.cwnd:
                    # grow only while cwnd-limited (RFC 7661 §4.3 spirit)
                    self.cc.on_ack(now, <uint32_t>(acked if acked < 0xFFFFFFFF else 0xFFFFFFFF),
                                   self.rtt.srtt, <uint64_t>self._flight())
            # RFC 6298 §5.2/5.3: stop or restart the retransmission timer
            if self.snd_una >= self.snd_nxt:
                self.tm.rtx = 0
            else:
                self.tm.rtx = now + self.rtt.rto
            if self.send_blocked:
                if self.wr_end - self._sb_head() <= self.sb_cap // 2:
                    self.send_blocked = 0
                    self._push_event(EV_SENDSPACE)
        elif ack_off == self.snd_una:
            if self.ecn_ok and (f & TH_ECE) and self.snd_una >= self.ecn_recover and self.snd_max > self.snd_una:
                self._ecn_response(now, prior_flight)
            # duplicate ACK, RFC 5681 §2 (RFC 6675 §2: or one that SACKs new data)
            # (outstanding data: SND.NXT, which a zero-window probe does not move)
            if self.snd_nxt > self.snd_una and plen == 0 and not (f & (TH_SYN | TH_FIN)):
                if (self.rd_dup_credit > 0 and newly_sacked == 0 and not (self.sack_ok and s.opts.n_sack)
                        and not window_changed and now < self.rd_credit_until):
                    # the receiver's answer to a redundant copy (first-flight redundancy)
                    # is a duplicate ACK that reports no loss: not counted (RFC 5681 §2)
                    self.rd_dup_credit -= 1
                    self.n_rd_dupacks += 1
                elif (self.sack_ok and newly_sacked > 0) or (not window_changed and not (self.sack_ok and s.opts.n_sack)):
                    self.dupacks += 1
                    self.n_dupacks += 1
                    if self.in_recovery:
                        if not self.sack_ok:
                            self.cc.on_recovery_dupack(self.smss)   # RFC 6582 §3.2 step 4: inflate
                        elif self.loss_corruption and newly_sacked > 0:
                            self._corruption_growth(now, newly_sacked, prior_flight)
                    elif self.snd_una >= self.recover and (
                            self.dupacks >= DUPTHRESH or (self.sack_ok and self._lost_edge() > self.snd_una)):
                        self._enter_recovery(now)

    cdef void _corruption_growth(self, uint64_t now, int64_t delivered, int64_t prior_flight):
        # SACK recovery from a loss taken as corruption (CCSDS 714.0-B-2, notes "Loss-type handling") only
        # repairs: the path is not congested, so the controller keeps growing on what
        # was delivered (at 1 % loss on a GEO window recovery hardly ever ends, and a
        # window frozen in it stays where the first loss happened)
        if delivered > 0 and 2 * prior_flight >= <int64_t>self.cc.cwnd:
            self.cc.on_ack(now, <uint32_t>(delivered if delivered < 0xFFFFFFFF else 0xFFFFFFFF),
                           self.rtt.srtt, <uint64_t>self._flight())

    cdef void _ecn_response(self, uint64_t now, int64_t flight):
        # RFC 3168 §6.1.2: react to ECE as to a loss, at most once per window; CWR on the next data
        self.ecn_recover = self.snd_max
        self.cwr_pending = 1
        self.n_cwr += 1
        if not self.in_recovery:
            self.cc.on_loss(now, <uint64_t>flight, CC_CAUSE_ECN)

    cdef void _enter_recovery(self, uint64_t now):
        """Fast retransmit / fast recovery: RFC 5681 §3.2, RFC 6582 §3.2, RFC 6675 §5."""
        # RFC 5681 §3.2 step 2: limited-transmit data is not part of FlightSize here
        cdef int64_t flight = self._flight() - self.lt_sent
        self.in_recovery = 1
        self.n_fast_rexmit += 1
        self.recover = self.snd_max
        self.high_rxt = self.snd_una
        if not self.loss_corruption:
            if self.snd_una >= self.ecn_recover:
                self.cc.on_loss(now, <uint64_t>flight, CC_CAUSE_LOSS)
            self.ecn_recover = self.snd_max
        else:
            self.cc.on_corruption_loss(now)
        # RFC 5681 §3.2 step 3 / RFC 6675 §5 (4.3): the first lost segment is resent
        # at once, whatever cwnd allows
        self.rexmit_pending = 1
        if not self.sack_ok:
            # RFC 6582 §3.2 step 3 inflation (a loss taken as corruption too: the
            # window accounting is the same; on_corruption_recovery_exit undoes it)
            self.cc.on_recovery_dupack(DUPTHRESH * self.smss)
        self.tm.rtx = now + self.rtt.rto

    cdef int64_t _sack_update(self, tcp_seg_t* s, int64_t ack_off):
        """Merge the peer's SACK blocks into the scoreboard (RFC 2018 §3, RFC 6675 §4)."""
        cdef int i
        cdef int64_t l, r, before = self.sacked_bytes
        for i in range(s.opts.n_sack):
            l = self._soff(s.opts.sack_left[i])
            r = self._soff(s.opts.sack_right[i])
            if l < ack_off:
                l = ack_off               # D-SACK or stale part (RFC 2883): ignored
            if r > self.snd_max or r <= l:
                continue
            if self.sb == &g_ivset_empty:
                self.sb = ivset_new()
            ivset_add(self.sb, l, r)     # full: the block is not kept (it is sent again)
        self.sacked_bytes = ivset_total(self.sb)
        return self.sacked_bytes - before

    cdef int64_t _lost_edge(self):
        # RFC 6675 §4 IsLost: unSACKed bytes below this offset have DupThresh
        # SACKed segments, or more than (DupThresh-1)*SMSS SACKed bytes, above them.
        cdef int i
        cdef int64_t acc = 0
        for i in range(self.sb.n - 1, -1, -1):
            acc += self.sb.r[i] - self.sb.l[i]
            if acc > (DUPTHRESH - 1) * <int64_t>self.smss or self.sb.n - i >= DUPTHRESH:
                return self.sb.l[i]
        return self.snd_una

    cdef int64_t _unsacked_in(self, int64_t a, int64_t b):
        if b <= a:
            return 0
        return b - a - ivset_covered(self.sb, a, b)

    cdef int64_t _pipe(self):
        # RFC 6675 §4 SetPipe(), by ranges: every unSACKed octet counts once if not
        # lost and once more if retransmitted (at or below HighRxt)
        cdef int64_t edge = self._lost_edge()
        cdef int64_t p = self._flight() - self.sacked_bytes
        p -= self._unsacked_in(self.snd_una, edge)
        if self.high_rxt > self.snd_una:
            p += self._unsacked_in(self.snd_una, self.high_rxt)
        return p if p > 0 else 0

    # ================================================================================
    # timers
    # ================================================================================
    def get_timer(self):
        cdef uint64_t t = self._next_deadline()
        return None if t == 0 else t

    cdef uint64_t _next_deadline(self):
        if self.st == CLOSED:
            return 0
        return u64min_nz(u64min_nz(timers_next(&self.tm), self._keepalive_deadline()), self.bets_deadline)

    cdef uint64_t _keepalive_deadline(self):
        # RFC 9293 §3.8.4: only when enabled, established and idle (nothing outstanding)
        if not self.cfg_keepalive or not (self.st == ESTABLISHED or self.st == CLOSE_WAIT):
            return 0
        if self.snd_max > self.snd_una or self.wr_end > self.snd_nxt:
            return 0
        if self.ka_probes == 0:
            return self.last_rcv_time + self.cfg_ka_idle
        return self.ka_last_probe + self.cfg_ka_intvl

    def handle_timer(self, uint64_t now):
        self._handle_timer(now)

    cdef void _handle_timer(self, uint64_t now):
        cdef uint64_t t
        if self.st == CLOSED:
            return
        if timer_due(&self.tm.delack, now):
            self.ack_now = 1
        timer_due(&self.tm.pace, now)
        if self.bets_deadline and now >= self.bets_deadline:
            self._scps_timer(now)
        if timer_due(&self.tm.time_wait, now) and self.st == TIME_WAIT:
            self._enter_closed(CR_NORMAL)
            return
        if timer_due(&self.tm.fin_wait2, now) and self.st == FIN_WAIT_2:
            self._enter_closed(CR_TIMEOUT)
            return
        if timer_due(&self.tm.rtx, now):
            self._on_rto(now)
            if self.st == CLOSED:
                return
        if timer_due(&self.tm.persist, now):
            if self.wr_end > self.snd_nxt and self.snd_nxt == self.snd_una:
                if self.snd_una + self.snd_wnd <= self.snd_nxt:
                    self.probe_pending = 1      # RFC 9293 §3.8.6.1 zero-window probe
                else:
                    self.force_send = 1         # RFC 9293 §3.8.6.2.1 override timeout
                self.persist_backoff += 1
        t = self._keepalive_deadline()
        if t and now >= t:
            if self.ka_probes < self.cfg_ka_count:
                self.ka_probes += 1
            elif not (self.cfg_outage_rtos or self.cfg_outage_silence):
                # RFC 1122 §4.2.3.6: the peer is taken for dead
                self.n_rstq = 0
                self._queue_rst(self._sseq(self._ack_seq()), self._rseq(self.rcv_nxt), TH_RST | TH_ACK)
                self._enter_closed(CR_KEEPALIVE)
                return
            elif self.cfg_outage_max and now - self.last_rcv_time >= self.cfg_outage_max:
                self._enter_closed(CR_TIMEOUT)
                return
            # else link-outage persistence (CCSDS 714.0-B-2, notes "Loss-type handling"):
            # unanswered probes mean the link is out, not that the peer died (a restarted
            # peer answers a probe with RST, RFC 9293 §3.10.7.1).  Keep probing every
            # keepalive_interval without giving up; outage_max_us of silence, or the
            # owner's idle limit, ends it.
            self.ka_last_probe = now
            self.keepalive_pending = 1

    cdef void _on_rto(self, uint64_t now):
        """Retransmission timeout: RFC 6298 §5.4-5.7, RFC 5681 §3.1, RFC 6582 §3.2 step 4."""
        cdef int st = self.st
        if st == SYN_SENT or st == SYN_RECEIVED or self.snd_una < 0:
            if self.retries >= self.cfg_syn_retries:
                self._enter_closed(CR_TIMEOUT)
                return
            self.retries += 1
            self.n_rexmit += 1
            self.n_timeouts += 1
            self.syn_retransmitted = 1
            self.rtt.timing = 0
            rtt_backoff(&self.rtt)
            self.syn_pending = 1
            if self.snd_nxt > 0:
                self.snd_nxt = 0      # FIN-WAIT-1 before the SYN was acked: FIN again after it
            return
        if self.snd_nxt <= self.snd_una and self.snd_max <= self.snd_una:
            return
        if self.outage:
            self._outage_rto(now)               # a probe, not a retransmission timeout
            return
        if (self.cfg_outage_rtos or self.cfg_outage_silence) and self._outage_due(now):
            self._enter_outage(now)
            return
        if self.retries >= self.cfg_max_retrans or (
                self.cfg_user_timeout and now - self.una_time >= <uint64_t>self.cfg_user_timeout):
            self._enter_closed(CR_TIMEOUT)      # RFC 9293 §3.8.3 R2 / USER TIMEOUT
            return
        if self.retries == 0:
            self.cc.hold()                      # what an outage would resume at
        self.retries += 1
        self.n_timeouts += 1
        if not self.loss_corruption:
            # RFC 6298 §5.5: back off
            rtt_backoff(&self.rtt)
            self.cc.on_rto(now, <uint64_t>self._flight(), self.retries == 1)
        else:
            # Loss taken as corruption (CCSDS 714.0-B-2, notes "Loss-type handling"): the RTO is not backed
            # off and the window is kept, so go-back-N would resend the whole flight
            # at once, a bandwidth-delay product still on its way.  Resend the first
            # segment (RFC 6298 §5.4) as a loss recovery: with SACK the RTO means a
            # retransmission was lost (RFC 6675 cannot see it otherwise), and
            # recovery restarts from SND.UNA keeping the scoreboard (§5.1), so only
            # holes go again (the outcome RFC 8985 RACK reaches without the
            # timeout); without SACK, RFC 6582 partial ACKs resend the rest.
            if not self.in_recovery:
                self.in_recovery = 1
                self.recover = self.snd_max
                self.dupacks = 0
                self.cc.on_corruption_loss(now)
            self.high_rxt = self.snd_una
            self.rexmit_pending = 1
            rtt_timeout(&self.rtt, self._ts_now(now))
            return
        # RFC 6582 §3.2 step 4 / RFC 6675 §5.1: recovery ends; go back to SND.UNA
        self.recover = self.snd_max
        self.ecn_recover = self.snd_max
        self.in_recovery = 0
        self.dupacks = 0
        self.lt_sent = 0
        self.rexmit_pending = 0
        self.snd_nxt = self.snd_una
        self.high_rxt = self.snd_una
        rtt_timeout(&self.rtt, self._ts_now(now))

    # ================================================================================
    # link outage (CCSDS 714.0-B-2, notes "Loss-type handling"): persist through it, resume where it began
    # ================================================================================
    cdef bint _outage_due(self, uint64_t now) noexcept:
        # this expiry is the outage_rtos-th in a row, or nothing came for outage_silence_us
        if self.cfg_outage_rtos and self.retries + 1 >= self.cfg_outage_rtos:
            return 1
        return self.cfg_outage_silence != 0 and now - self.last_rcv_time >= self.cfg_outage_silence

    cdef void _enter_outage(self, uint64_t now):
        """Stop sending new data; probe SND.UNA every outage_probe_us, with no backoff
        and without counting towards max_retransmits / the user timeout."""
        if self.retries == 0:
            self.cc.hold()
        self.outage = 1
        self.outage_start = now
        self.n_outage_entered += 1
        self._push_event(EV_OUTAGE_ENTERED)
        # as an RTO: recovery ends, SND.NXT back to SND.UNA (the scoreboard is kept,
        # RFC 6675 §5.1), Karn's rule for what is in flight
        if self.loss_corruption and self.in_recovery and not self.sack_ok:
            self.cc.on_corruption_recovery_exit(now)
        self.recover = self.snd_max
        self.ecn_recover = self.snd_max
        self.in_recovery = 0
        self.dupacks = 0
        self.lt_sent = 0
        self.snd_nxt = self.snd_una
        self.high_rxt = self.snd_una
        rtt_timeout(&self.rtt, self._ts_now(now))
        self._outage_rto(now)

    cdef void _outage_rto(self, uint64_t now):
        if self.cfg_outage_max and now - self.outage_start >= self.cfg_outage_max:
            self._enter_closed(CR_TIMEOUT)      # outage_max_us: given up
            return
        self.n_outage_probes += 1
        self.rexmit_pending = 1
        self.tm.rtx = now + self.cfg_outage_probe

    cdef void _exit_outage(self, uint64_t now):
        """An acceptable ACK: the link is back.  Resume at the window / rate held
        before the outage (no slow start), the RTO from SRTT again."""
        self.outage = 0
        self.n_outage_exited += 1
        self._push_event(EV_OUTAGE_EXITED)
        self.retries = 0
        self.una_time = now             # the user timeout counts from here, not from before the outage
        self.rexmit_pending = 0
        self.cc.resume(now)
        if self.rtt.srtt >= 0:
            rtt_end_backoff(&self.rtt)
        if self.snd_max > self.snd_una:
            self.tm.rtx = now + self.rtt.rto

    cdef Py_ssize_t _output_outage(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        # the probe: the first unacknowledged segment (it repairs as it probes)
        cdef int64_t off = self.snd_una, length
        cdef bint fin
        cdef int st = self.st
        if not self.rexmit_pending:
            return 0
        self.rexmit_pending = 0
        length = self.wr_end - off
        if length > self._cur_mss():
            length = self._cur_mss()
        if length < 0:
            length = 0
        fin = (self.fin_requested and (st == FIN_WAIT_1 or st == CLOSING or st == LAST_ACK)
               and off + length == self.wr_end and self.snd_max > self.wr_end)
        if length == 0 and not fin:
            return 0
        if self.snd_nxt < off + length + fin:
            self.snd_nxt = off + length + fin
        return self._emit_data(buf, cap, off, length, fin, 1, now)

    def icmp_packet_too_big(self, int mtu, uint64_t now, quoted_seq=None):
        """RFC 1191 §6.1 / RFC 8201 §4: lower the path MTU, resend what no longer fits.
        ``quoted_seq``, the sequence number in the ICMP quote, is checked against what
        is in flight (RFC 5927 §4.1); returns whether the report was used."""
        cdef int floor_ = 576 if self.ipver == 4 else 1280   # RFC 791 / RFC 8200 §5 minimums
        cdef int64_t qoff
        if self.st == CLOSED or self.st == LISTEN:
            self._drop(D_ICMP_STALE)
            return False
        if quoted_seq is not None:
            qoff = self._soff(<uint32_t>(int(quoted_seq) & 0xFFFFFFFF))
            if not (self.snd_una <= qoff <= self.snd_max):     # Linux: between(seq, una, nxt)
                self._drop(D_ICMP_STALE)
                return False
        if mtu < floor_:
            mtu = floor_
        if <uint32_t>mtu >= self.pmtu:
            return False
        self.pmtu = mtu
        cdef uint32_t old = self.smss
        self._update_smss()
        self.cc.set_mss(self.smss)
        if self.st >= ESTABLISHED and self.snd_nxt > self.snd_una and self.smss < old:
            # RFC 1191 §6.5 / Linux tcp_simple_retransmit: resend at the new size,
            # not a congestion signal
            self.snd_nxt = self.snd_una
            self.high_rxt = self.snd_una
            self.rtt.timing = 0
            self.in_recovery = 0
            self.rexmit_pending = 0
        return True

    # ================================================================================
    # output
    # ================================================================================
    def packets_to_send(self, uint64_t now):
        return self._packets(now)

    cdef list _packets(self, uint64_t now):
        cdef list out = []
        cdef Py_ssize_t n
        while True:
            n = self.output_into(g_out_buf, self.out_cap, now)
            if n <= 0:
                break
            out.append(PyBytes_FromStringAndSize(<char*>g_out_buf, n))
        return out

    cdef Py_ssize_t output_into(self, uint8_t* buf, Py_ssize_t cap, uint64_t now) except -1:
        """C-level output: write the next IP packet into buf; 0 when nothing is due."""
        cdef int st = self.st
        cdef Py_ssize_t n
        cdef int i
        if self.n_rstq:
            n = self._emit_ctl(buf, cap, self.rstq_seq[0], self.rstq_ack[0], self.rstq_flags[0])
            for i in range(1, self.n_rstq):
                self.rstq_seq[i - 1] = self.rstq_seq[i]
                self.rstq_ack[i - 1] = self.rstq_ack[i]
                self.rstq_flags[i - 1] = self.rstq_flags[i]
            self.n_rstq -= 1
            return n
        if st == CLOSED or st == LISTEN:
            return 0
        if self.rd_pkt_len:
            return self._output_rd_pkt(buf, cap, now)
        if self.syn_pending:
            return self._emit_syn(buf, cap, now)
        if st == SYN_SENT or st == SYN_RECEIVED:
            if st == SYN_RECEIVED and self.tfo_accepted and self.cfg_tfo_synrcvd and self.snd_nxt >= 0:
                # RFC 7413 §4.2.2: after accepting Fast Open data the server may answer
                # before the handshake's ACK (within cfg_tfo_synrcvd, _output_data)
                n = self._output_data(buf, cap, now)
                if n:
                    return n
            if st == SYN_RECEIVED and self.ack_now:
                return self._emit(buf, cap, self.snd_nxt, 0, TH_ACK, 0, now)
            return 0
        if st != TIME_WAIT:
            n = self._output_data(buf, cap, now)
            if n:
                return n
        if self.ack_now or self.keepalive_pending:
            if self.keepalive_pending:
                # RFC 9293 §3.8.4: SEG.SEQ = SND.NXT-1, no data (as Linux)
                self.keepalive_pending = 0
                self.n_ka += 1
                return self._emit(buf, cap, self._ack_seq() - 1, 0, TH_ACK, 0, now)
            return self._emit(buf, cap, self._ack_seq(), 0, TH_ACK, 0, now)
        return 0

    cdef int64_t _cur_mss(self):
        # full-size payload for the next segment: SACK blocks take option space too
        # (RFC 9293 §3.7.1: the sender reduces the payload by the options it sends)
        cdef int nb, optlen, iph
        cdef int64_t m
        if not (self.sack_ok and self.ofo.n):
            return self.smss - (4 if self.scps_rb else 0)   # SCPS record boundary: NOP NOP 22 2
        nb = self.ofo.n
        if nb > (3 if self.ts_ok else 4):
            nb = 3 if self.ts_ok else 4
        optlen = ((10 if self.ts_ok else 0) + 2 + 8 * nb + 3) & ~3
        iph = 20 if self.ipver == 4 else 40
        m = self.peer_mss + 20
        if self.pmtu - iph < m:
            m = self.pmtu - iph
        m -= 20 + optlen + (4 if self.scps_rb else 0)
        return m if m > 8 else 8

    cdef Py_ssize_t _output_data(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        cdef int64_t off, avail, length, win_avail, cw_avail, pipe, end, hole_end
        cdef int64_t mss = self._cur_mss()
        cdef bint fin = 0, rexmit, may_fin, rec_cut
        cdef int64_t rec_len
        cdef int st = self.st
        cdef Py_ssize_t n
        if self.outage:
            return self._output_outage(buf, cap, now)
        may_fin = self.fin_requested and (st == FIN_WAIT_1 or st == CLOSING or st == LAST_ACK)
        # 0. SCPS-TP: holes a SNACK reported, at once; no second copy of a recent repair
        if self.n_snkq:
            n = self._scps_output(buf, cap, mss, now)
            if n:
                return n
        if self.rexmit_pending and self.scps_on and self._scps_rxt_suppressed(self.snd_una, now):
            self.rexmit_pending = 0
        # 1. NewReno: retransmit the first unacknowledged segment (RFC 6582 §3.2)
        if self.rexmit_pending:
            self.rexmit_pending = 0
            off = self.snd_una
            length = self.wr_end - off
            if length > mss:
                length = mss
            if length < 0:
                length = 0
            fin = may_fin and off + length == self.wr_end and self.snd_max > self.wr_end
            if length > 0 or fin:
                if self.high_rxt < off + length + fin:
                    self.high_rxt = off + length + fin
                if self.sack_ok:
                    # RFC 6675 §5 (4.3): HighRxt and RescueRxt = end of this retransmission
                    self.rescue_rxt = off + length + fin
                self._srep_note(off, length, now)
                return self._emit_data(buf, cap, off, length, fin, 1, now)
        # 2. SACK recovery, RFC 6675 §5 step (C): NextSeg() rule 1 while cwnd - pipe >= 1 SMSS
        if self.in_recovery and self.sack_ok:
            pipe = self._pipe()
            if <int64_t>self.cc.cwnd - pipe < mss:
                return self._output_probe(buf, cap, now)
            off = self.high_rxt if self.high_rxt > self.snd_una else self.snd_una
            off = self._skip_sent(off, now)    # not SACKed data, nor what was resent within an SRTT
            end = self._lost_edge()
            if off < end and off < self.snd_nxt:
                hole_end = ivset_next_start(self.sb, off)
                if hole_end > end:
                    hole_end = end
                length = hole_end - off
                if length > mss:
                    length = mss
                if off + length > self.wr_end:
                    length = self.wr_end - off
                fin = may_fin and off + length == self.wr_end and self.snd_max > self.wr_end
                if length > 0 or fin:
                    self.high_rxt = off + length + (1 if fin else 0)
                    self._srep_note(off, length, now)
                    return self._emit_data(buf, cap, off, length, fin, 1, now)
            if not (self.wr_end > self.snd_nxt and self.snd_una + self.snd_wnd > self.snd_nxt):
                # NextSeg() rule 2 (new data) cannot send.  Rule 3: the first unSACKed
                # octet above HighRxt below the highest SACKed one, even if not lost
                end = self.sb.r[self.sb.n - 1] if self.sb.n else self.snd_una
                if off < end and off < self.snd_nxt:
                    hole_end = ivset_next_start(self.sb, off)
                    if hole_end > end:
                        hole_end = end
                    length = hole_end - off
                    if length > mss:
                        length = mss
                    if off + length > self.wr_end:
                        length = self.wr_end - off
                    if length > 0:
                        self.high_rxt = off + length
                        self._srep_note(off, length, now)
                        return self._emit_data(buf, cap, off, length, 0, 1, now)
                # Rule 4: one rescue retransmission per recovery once HighACK passed
                # RescueRxt, holding the highest outstanding unSACKed octet; HighRxt
                # is not updated
                if self.snd_una > self.rescue_rxt:
                    end = self.snd_nxt
                    if self.sb.n and self.sb.r[self.sb.n - 1] >= end:
                        end = self.sb.l[self.sb.n - 1]
                    fin = may_fin and end > self.wr_end
                    if end > self.wr_end:
                        end = self.wr_end
                    off = end - mss
                    if off < self.snd_una:
                        off = self.snd_una
                    if end > off or fin:
                        self.rescue_rxt = self.recover
                        self._srep_note(off, end - off, now)
                        return self._emit_data(buf, cap, off, end - off, fin, 1, now)
        # 3. new data (or go-back-N after an RTO / PMTU drop), then the FIN
        off = self.snd_nxt
        if off < self.snd_max and self.sb.n:
            off = ivset_skip(self.sb, off)      # RFC 6675 §5.1: SACKed data is not resent
            if off > self.snd_max:
                off = self.snd_max
            self.snd_nxt = off
        if (self.scps_bets and self.cfg_bets_max_rxt and off == self.snd_una and off < self.snd_max
                and self._scps_rxt_suppressed(off, now)):
            # BETS sender: the segment at SND.UNA is given up; go on after it
            off = i64min(off + (self.una_rxt_len if self.una_rxt_len > 0 else mss), self.snd_max)
            self.snd_nxt = off
        avail = self.wr_end - off
        if not (avail > 0 or (may_fin and off == self.wr_end)):
            if self.cfg_rd and self.rd_nxt < self.cfg_rd:
                n = self._output_redundant(buf, cap, mss, may_fin, now)
                if n:
                    return n
            return self._output_probe(buf, cap, now)
        if avail < 0:
            avail = 0
        rexmit = off < self.snd_max
        if self.tm.pace > now:
            return self._output_probe(buf, cap, now)     # pacing gate (rate-based controllers)
        win_avail = self.snd_una + self.snd_wnd - off
        if st == SYN_RECEIVED and self.cfg_tfo_synrcvd > self.snd_wnd:
            win_avail = self.snd_una + self.cfg_tfo_synrcvd - off   # the key holder's window (TcpConfig.tfo_synrcvd_send)
        if self.in_recovery and self.sack_ok:
            cw_avail = <int64_t>self.cc.cwnd - self._pipe()
        else:
            cw_avail = <int64_t>self.cc.cwnd - self._flight()
            if not self.in_recovery and self.dupacks > 0:
                # RFC 3042 limited transmit: one more segment for each of the first two dupacks
                cw_avail += (self.dupacks if self.dupacks < 3 else 2) * mss
        length = avail
        if length > mss:
            length = mss
        if length > win_avail:
            length = win_avail if win_avail > 0 else 0
        if length > cw_avail:
            length = cw_avail if cw_avail > 0 else 0
        if avail > 0 and length == 0:
            if self.cfg_rd and self.rd_nxt < self.cfg_rd:
                n = self._output_redundant(buf, cap, mss, may_fin, now)
                if n:
                    return n
            return self._output_blocked(buf, cap, now)
        rec_cut = 0
        if self.scps_rb and length > 0:
            # record boundary: a segment ends where a send() call ended
            rec_len = self._scps_record_clip(off, length)
            rec_cut = rec_len < length
            length = rec_len
        if length < avail and length < mss and not self.force_send and not rexmit and not rec_cut:
            # RFC 9293 §3.8.6.2.1 sender SWS avoidance: a partial segment only when the
            # window (not cwnd) limits it and it is at least half the largest window offered
            if win_avail > length or length * 2 < self.max_snd_wnd:
                if self.cfg_rd and self.rd_nxt < self.cfg_rd:
                    n = self._output_redundant(buf, cap, mss, may_fin, now)
                    if n:
                        return n
                return self._output_blocked(buf, cap, now)
        if ((length == avail or rec_cut) and 0 < length < mss and self.cfg_nagle and not rexmit
                and not self.fin_requested and self.snd_sml > self.snd_una and self.snd_sml > 0
                and not self.force_send):
            # RFC 9293 §3.7.4 Nagle, in Minshall's form (as Linux): hold a small segment
            # while an earlier small segment is unacknowledged (snd_sml 0: none was sent;
            # in SYN-RECEIVED SND.UNA is still -1, the SYN-ACK, tfo_synrcvd_send)
            if self.cfg_rd and self.rd_nxt < self.cfg_rd:
                n = self._output_redundant(buf, cap, mss, may_fin, now)
                if n:
                    return n
            return self._output_probe(buf, cap, now)
        if 0 < length < mss and not rexmit:
            self.snd_sml = off + length
        fin = may_fin and off + length == self.wr_end
        if self.dupacks and not self.in_recovery and not rexmit:
            self.lt_sent += length
        self.force_send = 0
        self.tm.persist = 0
        n = self._emit_data(buf, cap, off, length, fin, rexmit, now)
        if self.snd_nxt < off + length + (1 if fin else 0):
            self.snd_nxt = off + length + (1 if fin else 0)
        if self.snd_max < self.snd_nxt:
            self.snd_max = self.snd_nxt
        if self.snd_hi < self.snd_nxt:
            self.snd_hi = self.snd_nxt
        return n

    cdef Py_ssize_t _output_blocked(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        # RFC 9293 §3.8.6.1: with nothing outstanding, the persist timer keeps probing
        if self.snd_nxt == self.snd_una and self.tm.persist == 0 and self.tm.rtx == 0:
            self.tm.persist = now + rtt_persist_interval(&self.rtt, self.persist_backoff)
        return self._output_probe(buf, cap, now)

    cdef Py_ssize_t _output_probe(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        if not self.probe_pending:
            return 0
        self.probe_pending = 0
        if self.wr_end <= self.snd_nxt:
            return 0
        # RFC 9293 §3.8.6.1: one octet beyond the zero window; SND.NXT does not move
        self.n_zwp += 1
        if self.snd_max < self.snd_nxt + 1:
            self.snd_max = self.snd_nxt + 1
        cdef bint had_rtx = self.tm.rtx != 0
        cdef Py_ssize_t n = self._emit_data(buf, cap, self.snd_nxt, 1, 0, 0, now)
        self.rtt.timing = 0
        if not had_rtx:
            # RFC 1122 §4.2.2.17: the persist timer, not the RTO, times the next probe,
            # its interval doubling per probe (persist_backoff counts the probes sent)
            self.tm.rtx = 0
            self.tm.persist = now + rtt_persist_interval(&self.rtt, self.persist_backoff)
        return n

    cdef Py_ssize_t _emit_data(self, uint8_t* buf, Py_ssize_t cap, int64_t off, int64_t length,
                               bint fin, bint rexmit, uint64_t now):
        cdef uint8_t flags = TH_ACK
        cdef Py_ssize_t n
        if fin:
            flags |= TH_FIN
        if length > 0 and off + length == self.wr_end:
            flags |= TH_PSH              # the end of what the application gave us (Linux)
        if self.scps_on:
            if rexmit and self.scps_bets:
                self._scps_note_rexmit(off, length)
            if self.scps_rb and length > 0 and self._scps_record_end(off + length):
                self.scps_rb_mark = 1
        if rexmit:
            self.n_rexmit += 1
            self.bytes_rexmit += length
            if self.rtt.timing and self.rtt.timed_off >= off:
                self.rtt.timing = 0      # Karn (RFC 6298 §3)
        elif not self.rtt.timing and length > 0:
            rtt_time(&self.rtt, off, now)
        if self.snd_una == self.snd_nxt and not rexmit:
            self.una_time = now
        n = self._emit(buf, cap, off, length, flags, rexmit, now)
        self.bytes_out += length
        self.cc.post_transmit(now, <uint64_t>length)
        self._pace_spend(length, now)
        if self.tm.rtx == 0:
            self.tm.rtx = now + self.rtt.rto     # RFC 6298 §5.1
        return n

    cdef Py_ssize_t _emit_syn(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        cdef tcp_seg_t seg = self.tmpl
        cdef const uint8_t* payload
        cdef uint32_t w = self.rb_cap if self.rb_cap < 65535 else 65535
        seg.seq = self._iss
        seg.window = w                  # RFC 7323 §2.2: SYN windows are not scaled
        seg.opts.mss = self.adv_mss
        seg.flags = TH_SYN
        if self.st == SYN_SENT:
            if self.wscale_offer >= 0:
                seg.opts.wscale = self.wscale_offer
            seg.opts.sack_perm = bool(self.config.sack)
            if self.config.timestamps:
                seg.opts.has_ts = 1
                seg.opts.ts_val = self._ts_now(now)
                seg.opts.ts_ecr = 0
            if self.syn_ecn:
                seg.flags |= TH_ECE | TH_CWR     # RFC 3168 §6.1.1
        else:
            seg.flags |= TH_ACK
            seg.ack = self._rseq(self.rcv_nxt)
            if self.ws_ok:
                seg.opts.wscale = self.rcv_wscale
            seg.opts.sack_perm = self.sack_ok
            if self.ts_ok:
                seg.opts.has_ts = 1
                seg.opts.ts_val = self._ts_now(now)
                seg.opts.ts_ecr = self.ts_recent
            if self.ecn_ok:
                seg.flags |= TH_ECE
                if not self.passive:
                    seg.flags |= TH_CWR     # simultaneous open: a SYN-ACK that is also our setup SYN
            if self.rcv_adv < self.rcv_nxt + w:
                self.rcv_adv = self.rcv_nxt + w
            self.last_ack_sent = self.rcv_nxt
        if self.scps_cfg:
            self._scps_syn_opts(&seg)
        cdef int64_t tfo_len = 0
        if self.tfo_syn_opt and self.st == SYN_SENT:
            tfo_len = self._tfo_syn_data(&seg)
        elif self.tfo_send_cookie and self.st == SYN_RECEIVED:
            self._tfo_synack_opts(&seg)
        self.syn_pending = 0
        self.ack_now = 0
        self.tm.delack = 0
        if self.snd_nxt < 0:
            self.snd_una = -1
            self.snd_nxt = 0
            self.snd_max = 0
        if not self.syn_retransmitted and not self.rtt.timing:
            rtt_time(&self.rtt, -1, now)
        if self.tm.rtx == 0:
            self.tm.rtx = now + self.rtt.rto
        cdef Py_ssize_t n
        if tfo_len:
            # RFC 7413 §4.2: the data rides in the SYN (send offsets 0..tfo_len)
            self.snd_nxt = self.snd_max = self.snd_hi = tfo_len
            self.bytes_out += tfo_len
            self.una_time = now
            payload = cb_span(&self.sbuf, 0, tfo_len)
            if payload == NULL:
                cb_read(&self.sbuf, 0, g_pl_buf, tfo_len)
                payload = g_pl_buf
            n = self._finish(buf, cap, &seg, payload, tfo_len)
        else:
            n = self._finish(buf, cap, &seg, NULL, 0)
        if self.cfg_rd and not self.rd_syn_done and not self.syn_retransmitted:
            # first-flight redundancy: our first SYN (with its Fast Open data) or
            # SYN-ACK goes out twice; its data needs no second copy
            self.rd_syn_done = 1
            self.rd_syn_time = now
            memcpy(self.rd_pkt, buf, n)
            self.rd_pkt_len = n
            if self.rd_nxt < tfo_len:
                self.rd_nxt = tfo_len
        return n

    cdef Py_ssize_t _emit_ctl(self, uint8_t* buf, Py_ssize_t cap, uint32_t seq, uint32_t ack, uint8_t flags):
        cdef tcp_seg_t seg = self.tmpl
        seg.seq = seq
        seg.ack = ack
        seg.flags = flags
        seg.window = 0
        return self._finish(buf, cap, &seg, NULL, 0)

    cdef uint32_t _window_field(self):
        """The window to advertise (RFC 9293 §3.8.6.2.2 receiver SWS avoidance; RFC 7323 §2.3:
        never shrink the right edge, so round up rather than down)."""
        cdef int64_t cur = self.rcv_adv - self.rcv_nxt
        cdef int64_t avail = self.rd_off + self.rb_cap - self.rcv_nxt
        cdef int64_t thresh = self.rb_cap // 2
        cdef int64_t w, raw
        cdef int ws = self.rcv_wscale
        if self.fin_rcvd:
            avail = self.rd_off + self.rb_cap - self._rcv_data_end()
        if cur < 0:
            cur = 0
        if self.adv_mss < thresh:
            thresh = self.adv_mss
        if avail - cur >= thresh or avail <= 0 and cur <= 0:
            w = avail
        else:
            w = cur
        if w < 0:
            w = 0
        # RFC 7323 §2.3: the shifted value rounds down; RCV.WND acceptance keeps the
        # largest edge ever advertised (rcv_adv), so the peer never sees data refused
        raw = w >> ws
        if raw > 65535:
            raw = 65535
        if self.rcv_nxt + (raw << ws) > self.rcv_adv:
            self.rcv_adv = self.rcv_nxt + (raw << ws)
        return <uint32_t>raw

    cdef Py_ssize_t _emit(self, uint8_t* buf, Py_ssize_t cap, int64_t off, int64_t length,
                          uint8_t flags, bint rexmit, uint64_t now):
        """A segment in a synchronized state: SEQ at send offset ``off``, ``length`` payload
        bytes from the send buffer, ACK = RCV.NXT, options per negotiation."""
        cdef tcp_seg_t seg = self.tmpl
        cdef const uint8_t* payload = NULL
        cdef int64_t pos, first, room
        cdef int j, best, nblk, maxblk
        cdef uint64_t used_mask = 0
        seg.seq = self._sseq(off)
        seg.ack = self._rseq(self.rcv_nxt)
        seg.window = <uint16_t>self._window_field()
        if self.ts_ok:
            seg.opts.has_ts = 1
            seg.opts.ts_val = self._ts_now(now)
            seg.opts.ts_ecr = self.ts_recent
        # RFC 2018 §4: at most 4 SACK blocks, 3 with timestamps (fewer beside SCPS options)
        maxblk = 3 if self.ts_ok else 4
        if self.scps_on:
            self._scps_ack_opts(&seg, length, &maxblk)
        if self.sack_ok and self.ofo.n:
            # RFC 2018 §4: most recently changed block first, then the others by recency
            nblk = 0
            while nblk < maxblk and nblk < self.ofo.n:
                best = -1
                for j in range(self.ofo.n):
                    if not (used_mask >> j) & 1 and (best < 0 or self.ofo.age[j] > self.ofo.age[best]):
                        best = j
                used_mask |= (<uint64_t>1) << best
                seg.opts.sack_left[nblk] = self._rseq(self.ofo.l[best])
                seg.opts.sack_right[nblk] = self._rseq(self.ofo.r[best])
                nblk += 1
            seg.opts.n_sack = nblk
        if self.ecn_ok:
            if self.ece_pending:
                flags |= TH_ECE         # RFC 3168 §6.1.3
            if length > 0 and not rexmit and off >= self.snd_una:
                seg.tos |= ECN_ECT0     # RFC 3168 §6.1.5: not on retransmissions / pure ACKs
                if self.cwr_pending:
                    flags |= TH_CWR
                    self.cwr_pending = 0
        seg.flags = flags
        if length > 0:
            payload = cb_span(&self.sbuf, off, length)
            if payload == NULL:         # spans two chunks
                cb_read(&self.sbuf, off, g_pl_buf, length)
                payload = g_pl_buf
        self.ack_now = 0
        self.tm.delack = 0
        self.rcv_unacked = 0
        self.last_ack_sent = self.rcv_nxt
        return self._finish(buf, cap, &seg, payload, length)

    cdef Py_ssize_t _finish(self, uint8_t* buf, Py_ssize_t cap, tcp_seg_t* seg, const uint8_t* payload,
                            Py_ssize_t plen) except -1:
        self.ip_ident += 1
        seg.ip_ident = self.ip_ident
        cdef Py_ssize_t n = emit_ip_tcp(buf, cap, seg, payload, plen)
        if n < 0:
            raise RuntimeError("output buffer too small for a segment")
        self.segs_out += 1
        return n

    # ================================================================================
    # First-flight redundancy (TcpConfig.first_flight_redundancy, docs/scps.md
    # "First-flight redundancy"): on a lossy long-delay leg one lost segment of a short
    # transfer costs a round trip (SACK / SNACK) or an RTO (a lost SYN or tail).  The
    # first cfg_rd bytes of a connection are therefore each sent a second time, after
    # the new data (when nothing new may go: the send buffer is empty or the window
    # is full), and the first SYN / SYN-ACK twice in a row.  Proactive redundancy in
    # the sense of Flach et al., "Reducing Web Latency: the Virtue of Gentle
    # Aggression" (SIGCOMM 2013, "Reactive / Proactive TCP").  Copies are paced and
    # charged to the rate controller like any segment; a receiver trims them as
    # duplicates (RFC 9293 §3.10.7.4).  Off (one flag test) unless cfg_rd > 0.
    # ================================================================================
    cdef int64_t _unsacked_len(self, int64_t off, int64_t end, int64_t mss) noexcept:
        # one segment's bytes from off: up to end, one MSS, and the next SACKed block
        # (RFC 6675 §5.1: SACKed data is not sent again)
        cdef int64_t length = end - off, sacked
        if length > mss:
            length = mss
        if self.sb.n:
            sacked = ivset_next_start(self.sb, off)
            if off + length > sacked:
                length = sacked - off
        return length

    cdef void _pace_spend(self, int64_t nbytes, uint64_t now):
        # The pacing token bucket (_emit_data, and a redundant copy, which uses the link as
        # much as an original): retransmissions spend it too; a pacing timer served late by
        # up to cfg_pace_slack (TcpConfig.pace_slack_us) is made up, idle time is not banked (no burst after idle)
        cdef uint64_t rate = self.cc.pacing_rate()
        if rate and nbytes > 0:
            if self.next_send_time + self.cfg_pace_slack < now:
                self.next_send_time = now
            self.next_send_time += <uint64_t>(nbytes * 1000000 // rate)
            if self.next_send_time > now:
                self.tm.pace = self.next_send_time

    cdef Py_ssize_t _output_rd_pkt(self, uint8_t* buf, Py_ssize_t cap, uint64_t now):
        """The second copy of our first SYN / SYN-ACK, byte for byte (the receiver takes
        it as a retransmitted SYN, RFC 9293 §3.10.7.3/§3.10.7.4: no data twice)."""
        cdef Py_ssize_t n = self.rd_pkt_len
        self.rd_pkt_len = 0
        if n > cap:
            raise RuntimeError("output buffer too small for a segment")
        memcpy(buf, self.rd_pkt, n)
        self.segs_out += 1
        self.n_rd_segs += 1
        self.n_rd_bytes += n
        self._pace_spend(n, now)
        return n

    cdef Py_ssize_t _output_redundant(self, uint8_t* buf, Py_ssize_t cap, int64_t mss, bint may_fin, uint64_t now):
        """The second copy of the next segment of the first cfg_rd bytes already sent and
        neither acknowledged nor SACKed; 0 when none is due or pacing holds it."""
        cdef int64_t off = self.rd_nxt, end, length
        cdef uint8_t flags = TH_ACK
        cdef bint fin
        cdef Py_ssize_t n
        if self.tm.pace > now:
            return 0
        if off < self.snd_una:
            off = self.snd_una
        if off < 0:
            off = 0
        if self.sb.n:
            off = ivset_skip(self.sb, off)
        end = self.snd_nxt if self.snd_nxt < self.wr_end else self.wr_end
        if off >= end or off >= self.cfg_rd:
            # nothing sent yet to copy (or all of it copied, acknowledged or SACKed)
            if off >= self.cfg_rd:
                self.rd_nxt = self.cfg_rd
            return 0
        length = self._unsacked_len(off, end, mss)
        fin = may_fin and off + length == self.wr_end and self.snd_max > self.wr_end
        if fin:
            flags |= TH_FIN
        if off + length == self.wr_end:
            flags |= TH_PSH
        self.rd_nxt = off + length
        n = self._emit(buf, cap, off, length, flags, 1, now)
        self.n_rd_segs += 1
        self.n_rd_bytes += length
        self.cc.post_transmit(now, <uint64_t>length)
        self._pace_spend(length, now)
        # its duplicate ACK at the receiver tells nothing about loss
        self.rd_dup_credit += 1
        self.rd_credit_until = now + self.rtt.rto
        return n

    # ================================================================================
    # SCPS-TP (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)"): capabilities (option 20), SNACK (21), record
    # boundary (22), corruption experienced (23), BETS.  Everything here is off (and
    # costs one flag test on the paths that call it) unless TcpConfig.scps is set and,
    # for all but option 20 itself, the peer answered option 20.  docs/scps.md says
    # what is implemented, where the spec leaves a choice and what was chosen.
    # ================================================================================
    cdef void _scps_init(self, object sc):
        if sc is None:
            return
        self.scps_cfg = 1
        self.scps_offer = <uint8_t>sc.offered_bits
        self.scps_cid = <uint8_t>sc.conn_id
        self.scps_rb_cfg = bool(sc.record_boundary)
        self.scps_ce_cfg = bool(sc.corruption_experienced)
        self.scps_retry_rst = bool(sc.retry_on_rst)
        self.scps_syn_tries = sc.syn_retries_with_option
        self.cfg_snack_repeat = sc.snack_repeat
        self.cfg_bets_timeout = sc.bets_hole_timeout_us or 0
        self.cfg_bets_max_rxt = sc.bets_max_retransmits or 0
        self.una_rxt_off = -1

    cdef void _scps_syn_opts(self, tcp_seg_t* seg):
        """Option 20 on our SYN (active) or SYN-ACK (only answering a SYN that had it).
        CCSDS 714.0-B-2 §3.2.3: capabilities are exchanged in the SYN segments only."""
        if self.st == SYN_SENT:
            if self.scps_syn_opt and self.retries > self.scps_syn_tries:
                # the SYNs with option 20 went unanswered: some stacks and middleboxes
                # drop them; this and the following SYNs go without it
                self.scps_syn_opt = 0
                self.n_scps_fallback += 1
                self.scps_fb_reason = SCPS_FB_TIMEOUT
                self._push_event_ab(EV_SCPS_FALLBACK, SCPS_FB_TIMEOUT, 0)
            if not self.scps_syn_opt:
                return
        elif not self.scps_on:
            return
        seg.opts.has_scps = 1
        seg.opts.scps_bits = self.scps_offer
        seg.opts.scps_conn_id = self.scps_cid

    cdef void _scps_syn_received(self, tcp_seg_t* s):
        """The peer's SYN / SYN-ACK: an SCPS peer if it carries option 20 (and, when we
        opened, our SYN did).  The features used are the bits both ends offered."""
        if not s.opts.has_scps or (self.st == SYN_SENT and not self.scps_syn_opt):
            self.scps_on = 0
            self.scps_feat = 0
            self.scps_snack = self.scps_bets = self.scps_rb = 0
            return
        self.scps_on = 1
        self.scps_feat = self.scps_offer & s.opts.scps_bits
        self.scps_peer_cid = s.opts.scps_conn_id
        self.scps_snack = (self.scps_feat & SCPS_BIT_SNACK1) != 0
        self.scps_bets = (self.scps_feat & SCPS_BIT_BETS) != 0
        # no capability bit names record boundaries: marked towards any SCPS peer
        self.scps_rb = self.scps_rb_cfg
        self._push_event_ab(EV_SCPS_NEGOTIATED, self.scps_feat, self.scps_peer_cid)

    cdef bint _scps_syn_rst(self, uint64_t now):
        """An acceptable RST answered our SYN: if that SYN carried option 20, send the
        SYN again at once without it (true) instead of reporting the connection refused."""
        if not (self.scps_syn_opt and self.scps_retry_rst):
            return 0
        self.scps_syn_opt = 0
        self.n_scps_fallback += 1
        self.scps_fb_reason = SCPS_FB_RST
        self._push_event_ab(EV_SCPS_FALLBACK, SCPS_FB_RST, 0)
        # a fresh attempt with the same ISS (the RST left nothing behind at the peer)
        self.syn_pending = 1
        self.syn_retransmitted = 0
        self.retries = 0
        self.rtt.timing = 0
        self.tm.rtx = 0
        return 1

    cdef int64_t _scps_unit(self) noexcept:
        # SNACK offsets and sizes count segments of the peer's full-size payload: the MSS
        # we advertised less the timestamp option (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", SNACK option)
        return self.adv_mss - (TS_OPT_LEN if self.ts_ok else 0)

    cdef void _scps_input(self, tcp_seg_t* s, int64_t seg_off, int64_t ack_off, uint64_t now):
        """SCPS options of an acceptable segment from an SCPS peer."""
        cdef int i
        cdef int64_t a, b, unit, end, start
        if s.opts.has_corruption:
            self.n_ce_in += 1
        if s.opts.has_rb and s.payload_len:
            # a record ends with this segment's data: reported once, when the data is new
            end = seg_off + s.payload_len
            start = seg_off if seg_off > self.rcv_nxt else self.rcv_nxt
            if end > start and ivset_covered(self.ofo, start, end) < end - start:
                self.n_rec_in += 1
                self._push_event_ab(EV_RECORD, end, 0)
        if s.opts.n_snack and self.scps_snack:
            # holes to repair at once, counted in our full-size segments from SEG.ACK
            unit = self.smss
            for i in range(s.opts.n_snack):
                self.n_snack_in += 1
                a = ack_off + <int64_t>s.opts.snack_hole_offset[i] * unit
                b = a + <int64_t>(s.opts.snack_hole_size[i] if s.opts.snack_hole_size[i] else 1) * unit
                if a < self.snd_una:
                    a = self.snd_una
                if b > self.snd_max:
                    b = self.snd_max
                if b > self.wr_end:
                    b = self.wr_end
                if a < b and self.n_snkq < SNACKQ_MAX:
                    self.snkq_l[self.n_snkq] = a
                    self.snkq_r[self.n_snkq] = b
                    self.n_snkq += 1
                    if a == self.snd_una and not self.in_recovery and self.snd_una >= self.recover:
                        # the hole at SND.UNA is the loss signal three duplicate ACKs would
                        # be: recovery starts now (RFC 5681 §3.2 / RFC 6675 §5), so RECOVER
                        # is SND.MAX of this moment and the repair below is its retransmission
                        self._enter_recovery(now)

    cdef void _scps_after_input(self, uint64_t now):
        # BETS receiver: (re)arm the hole timer for the hole now at RCV.NXT
        if self.ofo.n == 0 or self.fin_rcvd:
            self.bets_deadline = 0
            return
        if self.bets_deadline == 0 or self.bets_hole_off != self.rcv_nxt:
            self.bets_hole_off = self.rcv_nxt
            self.bets_deadline = now + self.cfg_bets_timeout

    cdef void _scps_timer(self, uint64_t now):
        self.bets_deadline = 0
        if self.ofo.n and not self.fin_rcvd and self.bets_hole_off == self.rcv_nxt and (
                self.st == ESTABLISHED or self.st == FIN_WAIT_1 or self.st == FIN_WAIT_2):
            self._scps_bets_skip(now)
        self._scps_after_input(now)

    cdef void _scps_bets_skip(self, uint64_t now):
        """BETS (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", best-effort transport service): deliver past the
        hole at RCV.NXT; its bytes read as zeros and BytesSkipped says where."""
        cdef int64_t off = self.rcv_nxt
        cdef int64_t n = self.ofo.l[0] - off
        cdef int64_t pos, first, before
        if n <= 0:
            return
        cb_write(&self.rbuf, off, NULL, n)
        self.rcv_nxt = off + n
        before = self.rcv_nxt
        ivset_merge_front(self.ofo, &self.rcv_nxt)
        self.bytes_in += self.rcv_nxt - before
        self.n_bets_skips += 1
        self.n_bytes_skipped += n
        self._push_event_ab(EV_SKIPPED, n, off)
        self.ack_now = 1
        if self.rcv_fin_off >= 0 and self.rcv_fin_off == self.rcv_nxt:
            self._rcv_fin(self.rcv_fin_off, now)
        if not self.readable_notified:
            self.readable_notified = 1
            self._push_event(EV_READABLE)

    cdef void _scps_ack_opts(self, tcp_seg_t* seg, int64_t length, int* maxblk):
        """SCPS options of a segment in a synchronized state; what they take from the
        40 option bytes is taken from the SACK blocks (*maxblk)."""
        cdef int budget = 40 - (TS_OPT_LEN if self.ts_ok else 0)
        cdef int room
        if self.scps_rb_mark:
            self.scps_rb_mark = 0
            seg.opts.has_rb = 1                 # NOP NOP 22 2
            self.n_rec_out += 1
            budget -= 4
        if length == 0:
            if self.scps_ce_pending:
                self.scps_ce_pending = 0
                seg.opts.has_corruption = 1     # NOP NOP 23 2
                self.n_ce_out += 1
                budget -= 4
            if self.scps_snack and self.ofo.n and self.cfg_snack_repeat > 0:
                # SNACK first (it names the hole at RCV.NXT), SACK gets what is left, at
                # least one block when negotiated
                room = budget - (12 if self.sack_ok else 0)
                budget -= self._scps_snack_opts(seg, room)
        if budget < 4 + 8 * maxblk[0]:
            maxblk[0] = (budget - 4) // 8 if budget >= 12 else 0

    cdef int _scps_snack_opts(self, tcp_seg_t* seg, int room):
        """SNACK options for the holes of the out-of-order queue, lowest first, each
        reported in at most snack_repeat ACKs (the reference repeats the hole 3 times).
        Returns the option bytes used (8 a hole: NOP NOP 21 6 offset size)."""
        cdef int64_t hs[SNACK_TRACK]
        cdef int64_t he[SNACK_TRACK]
        cdef int hc[SNACK_TRACK]
        cdef int nh = 0, i, j, used = 0, k = 0
        cdef int64_t unit = self._scps_unit()
        cdef int64_t start, end, o, sz
        if unit < 1:
            unit = 1
        # the holes now, with the counts carried over from the last ACK
        for i in range(self.ofo.n):
            if nh >= SNACK_TRACK:
                break
            start = self.rcv_nxt if i == 0 else self.ofo.r[i - 1]
            if start >= self.ofo.l[i]:
                continue
            hs[nh] = start
            he[nh] = self.ofo.l[i]
            hc[nh] = 0
            for j in range(self.n_snk_track):
                if self.snk_hole[j] == start:
                    hc[nh] = self.snk_count[j]
                    break
            nh += 1
        for i in range(nh):
            if used + 8 > room or k >= SNACKQ_MAX:
                break
            if hc[i] >= self.cfg_snack_repeat:
                continue
            start = hs[i]
            end = he[i]
            o = (start - self.rcv_nxt) // unit
            sz = (end - (self.rcv_nxt + o * unit) + unit - 1) // unit
            seg.opts.snack_hole_offset[k] = <uint16_t>(o if o < 65535 else 65535)
            seg.opts.snack_hole_size[k] = <uint16_t>(sz if sz < 65535 else 65535)
            k += 1
            hc[i] += 1
            used += 8
            self.n_snack_out += 1
        if k:
            seg.opts.n_snack = k
            seg.opts.has_snack = 1
            seg.opts.snack_offset = seg.opts.snack_hole_offset[0]
            seg.opts.snack_size = seg.opts.snack_hole_size[0]
        for i in range(nh):
            self.snk_hole[i] = hs[i]
            self.snk_count[i] = hc[i]
        self.n_snk_track = nh
        return used

    cdef uint64_t _scps_rtt_window(self) noexcept:
        return <uint64_t>(self.rtt.srtt if self.rtt.srtt > 0 else self.rtt.rto)

    cdef Py_ssize_t _scps_output(self, uint8_t* buf, Py_ssize_t cap, int64_t mss, uint64_t now):
        """Repair the holes a SNACK reported, at once: no duplicate ACKs, RTO, cwnd or
        pacing gate is waited for (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", SNACK).  SACKed data and what a
        SNACK repair sent less than a round trip ago (the receiver repeats its SNACK)
        are not sent again; RFC 6675 HighRxt moves past a repair at its edge."""
        cdef int64_t off, end, length
        cdef int i
        while self.n_snkq:
            off = self.snkq_l[0]
            end = self.snkq_r[0]
            if off < self.snd_una:
                off = self.snd_una
            off = self._skip_sent(off, now)
            if end > self.snd_max:
                end = self.snd_max
            if end > self.wr_end:
                end = self.wr_end
            if off >= end:
                for i in range(1, self.n_snkq):
                    self.snkq_l[i - 1] = self.snkq_l[i]
                    self.snkq_r[i - 1] = self.snkq_r[i]
                self.n_snkq -= 1
                continue
            if self.cfg_bets_max_rxt and self._scps_rxt_suppressed(off, now):
                self.snkq_l[0] = off + (self.una_rxt_len if self.una_rxt_len > 0 else mss)
                continue
            length = self._unsacked_len(off, end, mss)
            self.snkq_l[0] = off + length
            if self.srep == NULL:
                self.srep = <srep_log_t*>calloc(1, sizeof(srep_log_t))
            self._srep_note(off, length, now)
            if self.high_rxt >= off and self.high_rxt < off + length:
                self.high_rxt = off + length
            self.n_snack_rxt += 1
            return self._emit_data(buf, cap, off, length, 0, 1, now)
        return 0

    cdef void _srep_note(self, int64_t off, int64_t length, uint64_t now) noexcept:
        """Remember a retransmission of [off, off + length) for one SRTT: the SNACK
        repairs, and once a repair was made the other retransmissions too (RFC 6675
        rules 1 and 3, NewReno), so that neither path resends what the other sent
        less than a round trip ago (the receiver repeats its SNACK for snack_repeat
        ACKs, and a new recovery restarts HighRxt at SND.UNA below repairs still in
        flight).  The next segment of the same hole extends the last entry."""
        cdef srep_log_t* g = self.srep
        cdef int i
        if g == NULL or length <= 0:
            return
        i = (g.i + SREP_MAX - 1) % SREP_MAX
        if g.t[i] and g.r[i] == off and now - g.t[i] < self._scps_rtt_window():
            g.r[i] = off + length
        else:
            i = g.i
            g.i = (i + 1) % SREP_MAX
            g.l[i] = off
            g.r[i] = off + length
        g.t[i] = now

    cdef int64_t _skip_sent(self, int64_t off, uint64_t now):
        """``off`` moved past SACKed data (RFC 6675 §5.1) and past what was resent less
        than an SRTT ago (_srep_note), alternately until neither moves it: a repaired
        hole is followed by a SACKed block and then often by the next repaired hole."""
        cdef int64_t o
        while True:
            o = self._scps_recent_repair(off, now)
            if self.sb.n:
                o = ivset_skip(self.sb, o)
            if o == off:
                return off
            off = o

    cdef int64_t _scps_recent_repair(self, int64_t off, uint64_t now):
        """``off`` moved past every retransmission sent less than a round trip ago
        that holds it (_srep_note)."""
        cdef int i, k
        cdef bint moved
        cdef srep_log_t* g = self.srep
        cdef uint64_t w
        if g == NULL:
            return off
        w = self._scps_rtt_window()
        for k in range(SREP_MAX):
            moved = 0
            for i in range(SREP_MAX):
                if g.t[i] and g.l[i] <= off < g.r[i] and now - g.t[i] < w:
                    off = g.r[i]
                    moved = 1
            if not moved:
                return off
        return off

    cdef bint _scps_rxt_suppressed(self, int64_t off, uint64_t now):
        """Whether a retransmission at ``off`` is not to be sent: a SNACK repair sent it
        less than a round trip ago, or (BETS sender) the segment at SND.UNA was sent
        bets_max_retransmits times already and is given up."""
        if self.n_snack_rxt and self._scps_recent_repair(off, now) != off:
            return 1
        if (self.scps_bets and self.cfg_bets_max_rxt and off == self.snd_una
                and off == self.una_rxt_off and self.una_rxt >= self.cfg_bets_max_rxt):
            self.n_bets_abandoned += 1
            return 1
        return 0

    cdef void _scps_note_rexmit(self, int64_t off, int64_t length):
        # BETS sender: count the retransmissions of the segment at SND.UNA
        if off != self.snd_una:
            return
        if off != self.una_rxt_off:
            self.una_rxt_off = off
            self.una_rxt = 0
        self.una_rxt += 1
        self.una_rxt_len = length

    cdef void _scps_record_push(self):
        # a send() call ended a record at wr_end; a full ring merges it with the last one
        if self.rec_n and self.rec_end[(self.rec_head + self.rec_n - 1) % RECQ_MAX] == self.wr_end:
            return
        if self.rec_n < RECQ_MAX:
            self.rec_end[(self.rec_head + self.rec_n) % RECQ_MAX] = self.wr_end
            self.rec_n += 1
        else:
            self.rec_end[(self.rec_head + self.rec_n - 1) % RECQ_MAX] = self.wr_end
            self.n_rec_lost += 1

    cdef int64_t _scps_record_clip(self, int64_t off, int64_t length):
        """New data at ``off``: the length that ends at the first record end inside it."""
        cdef int i
        cdef int64_t e
        while self.rec_n and self.rec_end[self.rec_head] <= self.snd_una:
            self.rec_head = (self.rec_head + 1) % RECQ_MAX
            self.rec_n -= 1
        for i in range(self.rec_n):
            e = self.rec_end[(self.rec_head + i) % RECQ_MAX]
            if e > off:
                return e - off if e < off + length else length
        return length

    cdef bint _scps_record_end(self, int64_t end):
        cdef int i
        cdef int64_t e
        for i in range(self.rec_n):
            e = self.rec_end[(self.rec_head + i) % RECQ_MAX]
            if e >= end:
                return e == end
        return 0

    def report_corruption(self):
        """The link below reported corruption: the next ACK carries the corruption-
        experienced option (kind 23, CCSDS 714.0-B-2, notes "TCP option kinds (IANA)") when the peer is SCPS and
        ``scps.corruption_experienced`` is set; returns whether it will."""
        if not (self.scps_on and self.scps_ce_cfg):
            return False
        self.scps_ce_pending = 1
        self.ack_now = 1
        return True

    @property
    def scps_peer(self):
        """The peer answered option 20 (an SCPS-TP peer, CCSDS 714.0-B-2, notes "Peer detection")."""
        return bool(self.scps_on)

    @property
    def scps_features(self):
        """Capability bits both ends offered (0 without an SCPS peer)."""
        return self.scps_feat

    @property
    def scps_peer_conn_id(self):
        return self.scps_peer_cid if self.scps_on else None

    # ================================================================================
    # TCP Fast Open (RFC 7413) with cookies derived from a shared key (tfo.pxi), so two
    # boxes holding the key accept each other's SYN data on the first connection.  Off
    # (one flag test on the paths that call it) unless TcpConfig.tfo_key is set and
    # tfo_client / tfo_server asks for it.  docs/tcp-engine.md "TCP Fast Open".
    # ================================================================================
    cdef void _tfo_init(self, object config):
        key = getattr(config, "tfo_key", None)
        if key is None:
            return
        cdef const uint8_t* k = <const uint8_t*>PyBytes_AS_STRING(key)
        self.tfo_k0 = _le64(k)
        self.tfo_k1 = _le64(k + 8)
        self.tfo_client = bool(config.tfo_client)
        self.tfo_server = bool(config.tfo_server)
        self.cfg_tfo_max = config.tfo_max_syn_data if config.tfo_max_syn_data is not None else self.adv_mss
        self.cfg_tfo_synrcvd = getattr(config, "tfo_synrcvd_send", None) or 0

    cdef void _tfo_cookie_of(self, bint active, uint8_t* out) noexcept:
        # the client is the active opener: our address in our SYN, the peer's in theirs
        cdef int alen = 4 if self.ipver == 4 else 16
        if active:
            tfo_cookie(self.tfo_k0, self.tfo_k1, self.tmpl.src, self.tmpl.dst, alen, out)
        else:
            tfo_cookie(self.tfo_k0, self.tfo_k1, self.tmpl.dst, self.tmpl.src, alen, out)

    cdef int64_t _tfo_syn_data(self, tcp_seg_t* seg):
        """Our first SYN: the Fast Open option with the cookie and up to cfg_tfo_max bytes of
        the send buffer (RFC 7413 §4.2.2); bytes put in.  A retransmitted SYN carries
        neither (RFC 7413 §4.1.3.1 / Linux: a SYN with data may be what was dropped); data the
        SYN-ACK does not acknowledge is sent again after the handshake (§4.2.2)."""
        cdef int64_t n = self.wr_end, room
        if self.syn_retransmitted or n <= 0:
            return 0                     # no data queued: a plain SYN (RFC 7413 §4.2.2)
        seg.opts.has_fo = 1
        seg.opts.fo_len = TFO_COOKIE_LEN
        self._tfo_cookie_of(1, seg.opts.fo_cookie)
        # the packet fits the path MTU with these options
        room = <int64_t>self.pmtu - (20 if self.ipver == 4 else 40) - 20 - tcp_opts_len(&seg.opts)
        if n > self.cfg_tfo_max:
            n = self.cfg_tfo_max
        if n > room:
            n = room
        if n <= 0:
            seg.opts.has_fo = 0
            return 0
        self.tfo_syn_len = n
        self.tfo_syn_opt = 0
        self.n_tfo_sent += n
        return n

    cdef void _tfo_synack_opts(self, tcp_seg_t* seg):
        # RFC 7413 §4.1.2: the SYN asked for a cookie (or had one we do not accept): ours
        seg.opts.has_fo = 1
        seg.opts.fo_len = TFO_COOKIE_LEN
        self._tfo_cookie_of(0, seg.opts.fo_cookie)

    cdef bint _tfo_syn_received(self, tcp_seg_t* s):
        """The peer's SYN in LISTEN (RFC 7413 §4.2.2): accept its data only if its cookie is
        ours for these addresses; a cookie request or a cookie we do not accept gets our
        cookie in the SYN-ACK.  Data without a cookie that verifies is ignored (the
        SYN-ACK acknowledges the SYN only, the client sends it again) and counted."""
        cdef uint8_t want[TFO_COOKIE_LEN]
        cdef bint ok = 0
        if s.opts.has_fo:
            if s.opts.fo_len == TFO_COOKIE_LEN:
                self._tfo_cookie_of(0, want)
                ok = memcmp_(want, s.opts.fo_cookie, TFO_COOKIE_LEN) == 0
            if not ok:
                self.tfo_send_cookie = 1
        if (s.payload_len or (s.opts.has_fo and s.opts.fo_len)) and not ok:
            self.n_tfo_rejected += 1
        return ok and s.payload_len > 0

    cdef void _tfo_accepted(self, int64_t n):
        # RFC 7413 §4.2.2: the data goes to the application now, in SYN-RECEIVED
        self.tfo_accepted = 1
        self.n_tfo_accepted += n
        self._push_event_ab(EV_TFO_ACCEPTED, n, 0)
        if not self.readable_notified and self._readable() > 0:
            self.readable_notified = 1
            self._push_event(EV_READABLE)

    cdef void _tfo_synack(self, int64_t ack_off):
        """The SYN-ACK answering our SYN with data (RFC 7413 §4.2.2): what it does not
        acknowledge (a server without the key, a refused cookie, a lost first SYN) is sent
        again as ordinary data right after the handshake."""
        cdef int64_t acked = ack_off if ack_off > 0 else 0
        if acked > self.tfo_syn_len:
            acked = self.tfo_syn_len
        self.n_tfo_acked += acked
        self.bytes_acked += acked
        if ack_off < self.tfo_syn_len:
            self.n_tfo_rexmit += self.tfo_syn_len - ack_off
        # go back to what the peer holds (it never had the rest: no ACK may claim it)
        self.snd_nxt = ack_off
        self.snd_hi = ack_off
        self._push_event_ab(EV_TFO_RESULT, self.tfo_syn_len, acked)

    # ================================================================================
    # events, statistics, attributes
    # ================================================================================
    def next_event(self):
        cdef int code
        if self.ev_n == 0:
            return None
        cdef int64_t a, b
        code = self.evq[self.ev_head]
        a = self.evq_a[self.ev_head]
        b = self.evq_b[self.ev_head]
        self.ev_head = (self.ev_head + 1) % EVQ_SIZE
        self.ev_n -= 1
        if code == EV_OUTAGE_ENTERED:
            return _ev.OutageEntered()
        if code == EV_OUTAGE_EXITED:
            return _ev.OutageExited()
        if code >= EV_SCPS_NEGOTIATED:
            if code == EV_TFO_ACCEPTED:
                return _ev.FastOpenAccepted(int(a))
            if code == EV_TFO_RESULT:
                return _ev.FastOpenResult(int(a), int(b))
            if code == EV_SCPS_NEGOTIATED:
                return _ev.ScpsNegotiated(int(a), int(b))
            if code == EV_SCPS_FALLBACK:
                return _ev.ScpsFallback("rst" if a == SCPS_FB_RST else "timeout")
            if code == EV_RECORD:
                return _ev.RecordBoundary(int(a))
            return _ev.BytesSkipped(int(a), int(b))
        if code == EV_READABLE:
            return _ev.DataReadable()
        if code == EV_SENDSPACE:
            return _ev.SendSpace()
        if code == EV_CONNECTED:
            return _ev.Connected()
        if code == EV_EOF:
            return _ev.EofReceived()
        if code == EV_RESET:
            return _ev.ConnectionReset()
        return _ev.ConnectionClosed(_CLOSE_REASONS[self.close_reason])

    def statistics(self):
        cdef int i
        drops = {DROP_NAMES[i]: self.drops[i] for i in range(D_COUNT) if self.drops[i]}
        return _TcpStatistics(
            state=STATES[self.st],
            rtt_us=self.rtt.last if self.rtt.last >= 0 else None,
            srtt_us=self.rtt.srtt if self.rtt.srtt >= 0 else None,
            rttvar_us=self.rtt.rttvar if self.rtt.rttvar >= 0 else None,
            min_rtt_us=self.rtt.min if self.rtt.min >= 0 else None,
            rto_us=self.rtt.rto,
            congestion=self.cc.name(),
            cwnd=int(self.cc.cwnd),
            ssthresh=int(min(self.cc.ssthresh, 0x7FFFFFFF)),
            in_flight=int(self._pipe() if self.in_recovery and self.sack_ok else self._flight()),
            snd_una=self._sseq(self.snd_una),
            snd_nxt=self._sseq(self.snd_nxt),
            snd_wnd=self.snd_wnd,
            rcv_nxt=self._rseq(self.rcv_nxt) if self.have_irs else 0,
            rcv_wnd=max(0, self.rcv_adv - self.rcv_nxt),
            mss=self.smss,
            peer_mss=self.peer_mss,
            snd_wscale=self.snd_wscale if self.ws_ok else -1,
            rcv_wscale=self.rcv_wscale if self.ws_ok else -1,
            sack=bool(self.sack_ok),
            timestamps=bool(self.ts_ok),
            ecn=bool(self.ecn_ok),
            segments_sent=self.segs_out,
            segments_received=self.segs_in,
            bytes_sent=self.bytes_out,
            bytes_retransmitted=self.bytes_rexmit,
            bytes_acked=self.bytes_acked,
            bytes_received=self.bytes_in,
            retransmits=self.n_rexmit,
            timeouts=self.n_timeouts,
            fast_retransmits=self.n_fast_rexmit,
            dup_acks=self.n_dupacks,
            challenge_acks=self.n_chal,
            zero_window_probes=self.n_zwp,
            keepalives_sent=self.n_ka,
            ecn_ce_received=self.n_ce,
            cwr_reductions=self.n_cwr,
            send_buffered=self.wr_end - self._sb_head(),
            recv_buffered=self._readable(),
            drops=drops,
            illegal_transitions=self.n_illegal_transitions,
            events_lost=self.n_events_lost,
            scps_peer=bool(self.scps_on),
            scps_features=self.scps_feat,
            scps_syn_fallbacks=self.n_scps_fallback,
            snacks_sent=self.n_snack_out,
            snacks_received=self.n_snack_in,
            snack_retransmits=self.n_snack_rxt,
            records_sent=self.n_rec_out,
            records_received=self.n_rec_in,
            corruption_sent=self.n_ce_out,
            corruption_received=self.n_ce_in,
            bets_skips=self.n_bets_skips,
            bytes_skipped=self.n_bytes_skipped,
            bets_abandoned=self.n_bets_abandoned,
            records_merged=self.n_rec_lost,
            outage=bool(self.outage),
            outage_entered=self.n_outage_entered,
            outage_probes=self.n_outage_probes,
            outage_exited=self.n_outage_exited,
            tfo_syn_data_sent=self.n_tfo_sent,
            tfo_syn_data_acked=self.n_tfo_acked,
            tfo_syn_data_accepted=self.n_tfo_accepted,
            tfo_cookie_rejected=self.n_tfo_rejected,
            tfo_data_retransmitted_after_handshake=self.n_tfo_rexmit,
            tx_redundant_segments=self.n_rd_segs,
            tx_redundant_bytes=self.n_rd_bytes,
            redundant_dupacks_ignored=self.n_rd_dupacks,
        )

    @property
    def state(self):
        """RFC 9293 spelling ('SYN-RECEIVED'); see tcp_state for the enum."""
        return STATES[self.st]

    @property
    def tcp_state(self):
        """The state as a stackpep.tcp.states.TcpState (IntEnum)."""
        return _states.TcpState(self.st)

    def _try_set_state(self, new):
        """Test hook: request a state change through _set_state; returns whether it
        was taken (tests/test_tcp_states.py)."""
        cdef int old = self.st
        self._set_state(int(new))
        return self.st != old

    def may_send(self):
        """send() takes data that will be sent (smoltcp may_send): the connection is
        opening or open and our FIN is not queued (RFC 9293 §3.10.2)."""
        return bool(not self.fin_requested and (self.st == ESTABLISHED or self.st == CLOSE_WAIT
                                                or self.st == SYN_SENT or self.st == SYN_RECEIVED))

    def may_recv(self):
        """The peer may still send data (smoltcp may_recv): ESTABLISHED, FIN-WAIT-1,
        FIN-WAIT-2, i.e. synchronized and its FIN not received (RFC 9293 §3.10.7.4)."""
        return bool(self.st == ESTABLISHED or self.st == FIN_WAIT_1 or self.st == FIN_WAIT_2)

    @property
    def local_addr(self):
        return self._laddr

    @property
    def remote_addr(self):
        return self._raddr

    @property
    def local_port(self):
        return self.lport

    @property
    def remote_port(self):
        return self.rport

    @property
    def iss(self):
        return self._iss

    @property
    def irs(self):
        if not self.have_irs:
            return None
        return self._irs

    def __repr__(self):
        return (f"<TcpConnection {STATES[self.st]} snd_una={self._sseq(self.snd_una)} "
                f"snd_nxt={self._sseq(self.snd_nxt)} rcv_nxt={self._rseq(self.rcv_nxt)}>")

    def icmp_quote_acceptable(self, uint32_t quoted_seq):
        """RFC 5927 §4.1: does the SEQ an ICMP error quotes lie in SND.UNA..SND.NXT
        (the highest sent), i.e. in what this connection sent and was not yet
        acknowledged?  The check icmp_packet_too_big() makes, for every error."""
        if self.st == CLOSED or self.st == LISTEN:
            return False
        return self.snd_una <= self._soff(quoted_seq) <= self.snd_max


cdef inline int memcmp_(const uint8_t* a, const uint8_t* b, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        if a[i] != b[i]:
            return 1
    return 0


# ================================================================================
# the split connection's turn in one call (stackpep.pep.splitter.SplitConnection.turn)
# ================================================================================
#: split_turn's outcomes
TURN_DONE = 0  # the whole turn ran: each leg's packets, the bytes moved, the next wake-up
TURN_AFTER_TIMERS = 1  # only the engines' timers ran: events (or a state change) for the caller's own path
TURN_AFTER_OUTPUT = 2  # relay and output ran, then events came up: the caller drains them, files the wake-up


cdef inline bint _turn_plain(TcpConnection client, TcpConnection server) noexcept:
    # both legs ESTABLISHED, no FIN queued or received on either: split_turn's case
    return (client.st == ESTABLISHED and server.st == ESTABLISHED and not client.fin_requested
            and not server.fin_requested and not client.fin_rcvd and not server.fin_rcvd)


def split_turn(TcpConnection client not None, TcpConnection server not None, int64_t now,
               int64_t last_activity, int64_t idle_us, int64_t slack, Py_ssize_t chunk, int64_t grid):
    """One turn of a split connection in its steady state, both legs ESTABLISHED
    (issue 11: the turn's Python glue is most of its cost), as
    SplitConnection.turn runs it step by step: each engine's due timers
    (those due within ``slack`` µs, fired at their own time if not yet due), the
    flow events passed over, the relay both ways (relay_to, in pieces of at most
    ``chunk``), each leg's packets, the flow events passed over again, and the
    next wake-up: the earliest of both engines' timers and the idle limit (from
    ``last_activity``, or ``now`` when bytes moved), rounded up to ``grid`` µs.

    None when the turn is not the plain case (a leg not ESTABLISHED or its FIN
    queued or received, or the idle limit within ``slack``): nothing was done.
    Else (outcome, client leg's packets, server leg's packets, bytes moved client
    -> server, server -> client, wake-up or None): TURN_DONE, TURN_AFTER_TIMERS
    (only the timers ran; an event other than DataReadable / SendSpace is queued
    or a state changed: the rest is the caller's) or TURN_AFTER_OUTPUT (everything
    but the events after the output and the wake-up)."""
    cdef uint64_t t, d
    cdef int64_t mc, ms
    cdef list pc, ps
    if not _turn_plain(client, server) or now + slack >= last_activity + idle_us or grid < 1:
        return None
    t = client._next_deadline()
    if t != 0 and t <= <uint64_t>(now + slack):
        client._handle_timer(<uint64_t>now if <uint64_t>now > t else t)
    t = server._next_deadline()
    if t != 0 and t <= <uint64_t>(now + slack):
        server._handle_timer(<uint64_t>now if <uint64_t>now > t else t)
    # (the caller drains the client leg before the server leg: so here)
    if client._skip_flow_events() or server._skip_flow_events() or not _turn_plain(client, server):
        return (TURN_AFTER_TIMERS, None, None, 0, 0, None)
    mc = client._relay_into(server, chunk)
    ms = server._relay_into(client, chunk)
    pc = client._packets(<uint64_t>now)
    ps = server._packets(<uint64_t>now)
    if (client._skip_flow_events() or server._skip_flow_events() or client.st != ESTABLISHED
            or server.st != ESTABLISHED):
        return (TURN_AFTER_OUTPUT, pc, ps, mc, ms, None)
    d = <uint64_t>((now if mc or ms else last_activity) + idle_us)
    t = client._next_deadline()
    if t != 0 and t < d:
        d = t
    t = server._next_deadline()
    if t != 0 and t < d:
        d = t
    return (TURN_DONE, pc, ps, mc, ms, (d + <uint64_t>grid - 1) // <uint64_t>grid * <uint64_t>grid)
