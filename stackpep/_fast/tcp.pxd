# C-level contract of the TCP engine, cimported by the splitter for the fast
# path: ``receive_seg`` takes a segment the wire layer already parsed and
# ``output_into`` writes the next packet into a caller buffer, so no Python
# object is made per packet.  The Python API (tcp.pyi) wraps the same code.
cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from stackpep._fast.wire cimport tcp_seg_t, tcp_opts_t

cdef enum:
    CLOSED = 0
    LISTEN = 1
    SYN_SENT = 2
    SYN_RECEIVED = 3
    ESTABLISHED = 4
    FIN_WAIT_1 = 5
    FIN_WAIT_2 = 6
    CLOSE_WAIT = 7
    CLOSING = 8
    LAST_ACK = 9
    TIME_WAIT = 10
    N_STATES = 11           # codes = stackpep.tcp.states.TcpState values

cdef enum:
    EV_CONNECTED = 1
    EV_READABLE = 2
    EV_SENDSPACE = 3
    EV_EOF = 4
    EV_RESET = 5
    EV_CLOSED = 6
    EV_SCPS_NEGOTIATED = 7  # SCPS-TP events (arguments in evq_a / evq_b)
    EV_SCPS_FALLBACK = 8
    EV_RECORD = 9
    EV_SKIPPED = 10
    EV_OUTAGE_ENTERED = 11    # link outage (CCSDS 714.0-B-2, notes "Loss-type handling"): events.OutageEntered
    EV_OUTAGE_EXITED = 12
    EV_TFO_ACCEPTED = 20    # TCP Fast Open events (RFC 7413; arguments in evq_a / evq_b)
    EV_TFO_RESULT = 21
    EVQ_SIZE = 16

cdef enum:
    CR_NORMAL = 0
    CR_RESET = 1
    CR_REFUSED = 2
    CR_ABORTED = 3
    CR_TIMEOUT = 4
    CR_KEEPALIVE = 5

cdef enum:
    D_MALFORMED = 0
    D_BAD_CHECKSUM
    D_WRONG_FLOW
    D_CLOSED
    D_LISTEN_RST
    D_LISTEN_ACK
    D_LISTEN_NO_SYN
    D_SYN_SENT_BAD_ACK
    D_SYN_SENT_RST
    D_SYN_SENT_NO_SYN
    D_PAWS
    D_NO_TIMESTAMP
    D_OUT_OF_WINDOW
    D_RST_OUT_OF_WINDOW
    D_RST_CHALLENGED
    D_SYN_CHALLENGED
    D_NO_ACK
    D_ACK_TOO_OLD
    D_ACK_UNSENT
    D_SYN_RECEIVED_BAD_ACK
    D_BEYOND_WINDOW
    D_AFTER_FIN
    D_OFO_FULL
    D_CHALLENGE_ACK_LIMIT
    D_ICMP_STALE
    D_SYN_COPY
    D_COUNT

cdef enum:
    IVSET_MAX = 256         # intervals per interval set (ivset.pxi)
    OFO_MAX = IVSET_MAX     # out-of-order intervals kept by the receiver
    SB_MAX = IVSET_MAX      # SACK scoreboard intervals kept by the sender
    RSTQ_MAX = 4
    DUPTHRESH = 3           # RFC 5681 §3.2, RFC 6675 §2
    TS_OPT_LEN = 12         # NOP NOP TS (RFC 7323 Appendix A layout)

# SCPS-TP (CCSDS 714.0-B-2 §3.2.3): capability bits of option 20, engine limits
cdef enum:
    SCPS_BIT_BETS = 0x80
    SCPS_BIT_SNACK1 = 0x40
    SNACKQ_MAX = 6          # holes a received segment can report (TCP_MAX_SNACK)
    SNACK_TRACK = 8         # holes whose report count the receiver tracks (snack_repeat)
    SREP_MAX = 256          # recent retransmissions remembered by a SNACK sender (srep_log_t)
    RECQ_MAX = 64           # record ends kept by the sender (record_boundary)
    SCPS_FB_RST = 1
    SCPS_FB_TIMEOUT = 2

cdef enum:
    ECN_NOT_ECT = 0
    ECN_ECT1 = 1
    ECN_ECT0 = 2
    ECN_CE = 3

cdef enum:
    CC_CAUSE_LOSS = 0       # dupacks / SACK loss detection (RFC 5681 §3.2, RFC 6675 §5)
    CC_CAUSE_ECN = 1        # ECE received (RFC 3168 §6.1.2)

# Sorted disjoint half-open intervals [l[i], r[i]) of sequence offsets (ivset.pxi):
# the out-of-order queue and the SACK scoreboard.  age[i] = clock when interval i
# last changed (RFC 2018 §4: the most recent block first).
cdef struct ivset_t:
    int64_t l[IVSET_MAX]
    int64_t r[IVSET_MAX]
    uint64_t age[IVSET_MAX]
    uint64_t clock
    int n

# The retransmissions of the last round trip of a sender that repairs SNACKs (CCSDS
# 714.0-B-2): [l[i], r[i]) sent at t[i], a ring (i = next slot).  Allocated at the
# first repair (a SNACK peer on a lossy link), so other engines carry a pointer only.
cdef struct srep_log_t:
    int64_t l[SREP_MAX]
    int64_t r[SREP_MAX]
    uint64_t t[SREP_MAX]
    int i

# A byte ring of lazily held chunks (chunkbuf.pxi): the send and receive buffers
cdef enum:
    CB_CHUNK = 16384            # bytes per chunk
    CB_POOL_MAX = 256           # free chunks the process keeps for reuse (4 MiB)

cdef struct chunkbuf_t:
    uint8_t** chunks            # nchunks pointers (NULL: not held); NULL while no chunk is held
    int64_t nchunks
    int64_t held                # chunks held

# RTT estimator and RTO (RFC 6298), rtt.pxi
cdef struct rtt_t:
    int64_t srtt, rttvar, last, min   # µs; -1 = no sample yet
    int64_t rto                       # current RTO incl. backoff, µs
    int64_t init_rto, min_rto, max_rto
    bint timing                       # a segment is being timed (RFC 6298 §3)
    int64_t timed_off                 # send offset whose ACK ends the timed segment
    uint64_t timed_at                 # when it was sent
    uint32_t ts_floor                 # our TS clock at the last RTO: older echoes give no RTT
    bint ts_floor_set

# The timers, timers.pxi (absolute µs; 0 = not armed)
cdef struct timers_t:
    uint64_t rtx                      # retransmission (RFC 6298 §5)
    uint64_t persist                  # zero-window probe / SWS override (RFC 9293 §3.8.6)
    uint64_t delack                   # delayed ACK (RFC 9293 §3.8.6.3)
    uint64_t time_wait                # 2 MSL (RFC 9293 §3.6)
    uint64_t fin_wait2                # give up on FIN-WAIT-2 (fin_wait2_timeout_us)
    uint64_t pace                     # pacing gate (rate-based controllers)

cdef class CongestionControl:
    # Owned by the controller alone; the engine reads cwnd and calls the hooks (cc.pxi).
    cdef double cwnd
    cdef double ssthresh
    cdef double mss
    cdef double bytes_acked     # RFC 5681 §3.1 byte counting in congestion avoidance
    cdef double held_cwnd, held_ssthresh    # at the first RTO of a series (hold/resume)
    cdef double rec_cwnd        # window when a loss taken as corruption was seen
    cdef bint delay_based       # wants an RTT sample from every ACK (Vegas)
    cdef void init(self, uint32_t mss, uint32_t iw_segments)
    cdef void set_mss(self, uint32_t mss)
    cdef double _ss(self, uint32_t acked)
    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight)
    cdef void on_rtt_sample(self, uint64_t now, uint64_t rtt_us)
    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause)
    cdef void on_recovery_dupack(self, uint32_t inflate)
    cdef void on_partial_ack(self, uint64_t acked)
    cdef void on_recovery_exit(self, uint64_t now, uint64_t in_flight)
    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first)
    cdef void on_syn_loss(self)
    cdef void post_transmit(self, uint64_t now, uint64_t nbytes)
    cdef void take_over(self, CongestionControl old)
    cdef uint64_t pacing_rate(self)
    cdef void on_corruption_loss(self, uint64_t now)
    cdef void on_corruption_recovery_exit(self, uint64_t now)
    cdef void hold(self)
    cdef void resume(self, uint64_t now)
    cdef str name(self)

cdef class NewReno(CongestionControl):
    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight)
    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause)
    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first)
    cdef str name(self)

cdef class Cubic(CongestionControl):
    cdef double w_max           # segments
    cdef double k               # seconds
    cdef double w_est           # segments, Reno-friendly estimate (§4.3)
    cdef double cwnd_epoch      # segments
    cdef uint64_t epoch_start   # µs, 0 = no epoch yet
    cdef void init(self, uint32_t mss, uint32_t iw_segments)
    cdef void on_ack(self, uint64_t now, uint32_t acked, int64_t srtt_us, uint64_t in_flight)
    cdef void _reduce(self, uint64_t now)
    cdef void on_loss(self, uint64_t now, uint64_t in_flight, int cause)
    cdef void on_rto(self, uint64_t now, uint64_t in_flight, bint first)
    cdef void resume(self, uint64_t now)
    cdef str name(self)


@cython.final
cdef class TcpConnection:
    # -- identity --------------------------------------------------------------------
    cdef readonly object config
    cdef bytes _laddr, _raddr
    cdef uint16_t lport, rport
    cdef uint8_t ipver
    cdef uint32_t _iss, _irs
    cdef bint have_irs
    cdef uint32_t ts_offset
    cdef tcp_seg_t tmpl               # IP/TCP header template for what we send
    cdef uint16_t ip_ident
    # -- state ------------------------------------------------------------------------
    cdef int st
    cdef bint passive                 # opened by listen() (RFC 9293 §3.10.7.4: RST in SYN-RECEIVED -> LISTEN)
    cdef bint opened
    cdef int close_reason
    # -- send sequence space (offsets; see module doc) ------------------------------------
    cdef int64_t snd_una, snd_nxt, snd_max
    cdef int64_t snd_hi               # highest SND.NXT reached by normal sending (not probes)
    cdef int64_t snd_wnd              # bytes, scaled
    cdef int64_t snd_sml              # end of the last small segment sent (Nagle, Minshall)
    cdef int64_t max_snd_wnd          # RFC 5961 §5.2 MAX.SND.WND; SWS (RFC 9293 §3.8.6.2.1)
    cdef int64_t snd_wl1              # receive-side offset of the segment that last updated the window
    cdef int64_t snd_wl2              # send-side offset it acknowledged
    cdef int snd_wscale, rcv_wscale   # -1/0 semantics: 0 when not negotiated
    cdef int wscale_offer             # what we put in our SYN (-1 = none)
    cdef bint ws_ok, sack_ok, ts_ok, ecn_ok
    cdef bint syn_ecn                 # ECN setup requested/answered in our SYN / SYN-ACK
    cdef uint32_t peer_mss            # MSS option from the peer (or the RFC 9293 default)
    cdef uint32_t adv_mss             # MSS option we send
    cdef uint32_t pmtu                # path MTU (RFC 1191 / RFC 8201)
    cdef uint32_t smss                # full-size payload with the negotiated options
    # send buffer: ring holding offsets [sb_head, wr_end), chunks held only while data is queued
    cdef chunkbuf_t sbuf
    cdef int64_t sb_cap
    cdef int64_t sb_rel               # sb_head when chunks were last given back (cb_release)
    cdef int64_t wr_end
    cdef bint fin_requested           # send_eof(): FIN at offset wr_end
    cdef bint send_blocked            # a send() was short: SendSpace when room again
    # -- receive sequence space ------------------------------------------------------------
    cdef int64_t rcv_nxt              # includes the FIN once received
    cdef int64_t rcv_adv              # right edge of the window we advertised (RCV.NXT+RCV.WND)
    cdef int64_t rd_off               # application read offset
    cdef bint fin_rcvd
    cdef int64_t rcv_fin_off          # offset of an out-of-order FIN (-1 = none)
    cdef int64_t last_ack_sent        # RFC 7323 §4.3 Last.ACK.sent
    cdef chunkbuf_t rbuf              # holds [rd_off, rcv_nxt) and the out-of-order data
    cdef int64_t rb_cap
    cdef ivset_t* ofo                 # out-of-order data held in rbuf (RFC 9293 §3.10.7.4); the shared empty set until used
    cdef bint readable_notified
    cdef bint syn_data                # data arrived on the SYN: readable once ESTABLISHED
    # -- timestamps (RFC 7323) ----------------------------------------------------------------
    cdef uint32_t ts_recent
    cdef uint64_t ts_recent_time      # when TS.Recent was last set (RFC 7323 §5.5)
    # -- ACK generation -------------------------------------------------------------------------
    cdef bint ack_now
    cdef int64_t rcv_unacked          # in-order bytes received since our last ACK
    cdef uint32_t rcv_seg_max         # largest segment seen (full-size estimate, RFC 5681 §4.2)
    cdef uint32_t chal_count          # RFC 5961 §7 challenge-ACK rate limit
    cdef uint64_t chal_window_start
    cdef bint ece_pending             # RFC 3168 §6.1.3 send ECE until CWR arrives
    cdef bint cwr_pending             # RFC 3168 §6.1.2 set CWR on the next new data
    cdef int64_t ecn_recover          # one ECN response per window
    # -- RTT / RTO (RFC 6298) --------------------------------------------------------------------
    cdef rtt_t rtt
    cdef int retries                  # consecutive RTO expiries (or SYN retransmissions)
    cdef bint syn_retransmitted
    cdef uint64_t una_time            # when SND.UNA last moved / data became outstanding
    # -- loss recovery ------------------------------------------------------------------------------
    cdef CongestionControl cc
    cdef bint loss_corruption         # loss answered as corruption: no cwnd reduction (SCPS-TP)
    cdef bint in_recovery
    cdef int64_t recover              # RFC 6582 "recover" / RFC 6675 RecoveryPoint
    cdef int dupacks
    cdef int64_t lt_sent              # bytes sent by limited transmit (RFC 3042) this episode
    cdef bint rexmit_pending          # NewReno: retransmit the segment at SND.UNA
    cdef int64_t high_rxt             # RFC 6675 HighRxt
    cdef int64_t rescue_rxt           # RFC 6675 RescueRxt
    cdef ivset_t* sb                  # SACK scoreboard (RFC 6675 §3); the shared empty set until used
    cdef int64_t sacked_bytes
    cdef uint64_t next_send_time      # pacing gate (rate-based controllers)
    # -- link outage (CCSDS 714.0-B-2, notes "Loss-type handling"; outage.pxi) -------------------------
    cdef bint outage                  # no new data; snd_una probed every cfg_outage_probe µs
    cdef int cfg_outage_rtos          # consecutive RTOs that mean an outage (0 = never)
    cdef uint64_t cfg_outage_probe, cfg_outage_silence, cfg_outage_max
    cdef uint64_t outage_start
    cdef uint64_t n_outage_entered, n_outage_probes, n_outage_exited
    # -- first-flight redundancy (TcpConfig.first_flight_redundancy; tcp.pyx "First-flight redundancy") ----
    cdef int64_t cfg_rd               # the first cfg_rd bytes are each sent twice (0 = off)
    cdef uint64_t cfg_pace_slack      # TcpConfig.pace_slack_us
    cdef uint64_t rd_syn_time         # when our first SYN / SYN-ACK went out
    cdef int64_t rd_nxt               # next send offset whose second copy is due
    cdef bint rd_syn_done             # our first SYN / SYN-ACK was copied already
    cdef uint8_t* rd_pkt              # that SYN / SYN-ACK, byte for byte, until its copy goes out
    cdef Py_ssize_t rd_pkt_len        # (0: no copy pending)
    cdef int rd_dup_credit            # pure duplicate ACKs our copies may still cause (not dupacks)
    cdef uint64_t rd_credit_until     # ... until this time
    cdef uint64_t n_rd_segs, n_rd_bytes, n_rd_dupacks
    # -- control flags for the output routine --------------------------------------------------------
    cdef bint syn_pending
    cdef bint probe_pending
    cdef bint force_send              # SWS override timer fired (RFC 9293 §3.8.6.2.1)
    cdef bint keepalive_pending
    cdef uint32_t rstq_seq[RSTQ_MAX]
    cdef uint32_t rstq_ack[RSTQ_MAX]
    cdef uint8_t rstq_flags[RSTQ_MAX]
    cdef int n_rstq
    # -- timers (absolute µs; 0 = not armed) -----------------------------------------------------------
    cdef timers_t tm
    cdef int persist_backoff
    cdef uint64_t last_rcv_time
    cdef int ka_probes
    cdef uint64_t ka_last_probe
    # -- events ---------------------------------------------------------------------------------------
    cdef int evq[EVQ_SIZE]
    cdef int ev_head, ev_n
    # -- scratch (the buffers themselves are the module's, shared by every engine) --------------------------
    cdef Py_ssize_t out_cap
    # -- statistics ---------------------------------------------------------------------------------------
    cdef uint64_t drops[D_COUNT]
    cdef uint64_t segs_out, segs_in, bytes_out, bytes_rexmit, bytes_acked, bytes_in
    cdef uint64_t n_rexmit, n_timeouts, n_fast_rexmit, n_dupacks, n_chal, n_zwp, n_ka
    cdef uint64_t n_ce, n_cwr
    cdef uint64_t n_illegal_transitions   # _set_state refused a change (an engine bug)
    cdef uint64_t n_events_lost           # event queue full (EVQ_SIZE)
    cdef int64_t evq_a[EVQ_SIZE]          # event arguments (SCPS events)
    cdef int64_t evq_b[EVQ_SIZE]
    # -- config copies (hot) ----------------------------------------------------------------------------
    cdef bint cfg_nagle
    cdef uint64_t cfg_delack_us
    cdef int cfg_delack_segs
    cdef int cfg_syn_retries, cfg_max_retrans
    cdef int64_t cfg_user_timeout
    cdef uint32_t cfg_iw
    cdef bint cfg_keepalive
    cdef uint64_t cfg_ka_idle, cfg_ka_intvl
    cdef int cfg_ka_count
    cdef uint64_t cfg_tw, cfg_fw2
    cdef uint32_t cfg_chal_limit
    # -- SCPS-TP (CCSDS 714.0-B-2), the SCPS section of tcp.pyx; all zero when TcpConfig.scps is None ------------
    cdef bint scps_cfg                # TcpConfig.scps set
    cdef uint8_t scps_offer           # capability bits we offer
    cdef uint8_t scps_cid             # our connection id
    cdef bint scps_syn_opt            # our (next) SYN carries option 20
    cdef bint scps_on                 # option 20 both ways (an SCPS peer)
    cdef uint8_t scps_feat            # negotiated bits (AND)
    cdef uint8_t scps_peer_cid
    cdef bint scps_snack              # SNACK negotiated
    cdef bint scps_bets               # BETS negotiated
    cdef bint scps_rb_cfg             # record_boundary configured: keep record ends
    cdef bint scps_rb                 # ... and the peer is SCPS: mark them
    cdef bint scps_rb_mark            # the segment being emitted ends a record
    cdef bint scps_ce_cfg             # report_corruption() allowed
    cdef bint scps_ce_pending         # next ACK carries option 23
    cdef bint scps_retry_rst
    cdef int scps_syn_tries           # syn_retries_with_option
    cdef int scps_fb_reason           # SCPS_FB_* of the last fallback
    cdef int cfg_snack_repeat
    cdef uint64_t cfg_bets_timeout
    cdef int cfg_bets_max_rxt
    # receiver: SNACK report counts per hole (start offset) and the BETS hole timer
    cdef int64_t snk_hole[SNACK_TRACK]
    cdef int snk_count[SNACK_TRACK]
    cdef int n_snk_track
    cdef uint64_t bets_deadline       # 0 = not armed
    cdef int64_t bets_hole_off        # RCV.NXT the deadline refers to
    # sender: holes to repair at once, the repair high-water mark, record ends
    cdef int64_t snkq_l[SNACKQ_MAX]
    cdef int64_t snkq_r[SNACKQ_MAX]
    cdef int n_snkq
    cdef srep_log_t* srep             # retransmissions of the last SRTT (NULL until the first
                                      # SNACK repair): one SRTT keeps a hole from going twice
    cdef int64_t rec_end[RECQ_MAX]    # ring of record ends (send() calls) not yet acknowledged
    cdef int rec_head, rec_n
    cdef int una_rxt                  # retransmissions of the segment at SND.UNA (BETS sender)
    cdef int64_t una_rxt_off
    cdef int64_t una_rxt_len
    cdef uint64_t n_scps_fallback, n_snack_out, n_snack_in, n_snack_rxt, n_rec_out, n_rec_in
    cdef uint64_t n_ce_out, n_ce_in, n_bets_skips, n_bytes_skipped, n_bets_abandoned, n_rec_lost
    # -- TCP Fast Open (RFC 7413), the TFO section of tcp.pyx; all zero unless TcpConfig.tfo_key is set --------
    cdef bint tfo_client               # active: data in our SYN with the cookie (TcpConfig.tfo_client)
    cdef bint tfo_server               # passive: accept SYN data whose cookie verifies (TcpConfig.tfo_server)
    cdef uint64_t tfo_k0, tfo_k1       # SipHash-2-4 key halves (TcpConfig.tfo_key)
    cdef int64_t cfg_tfo_max           # most data bytes a SYN carries
    cdef int64_t cfg_tfo_synrcvd       # passive, Fast Open accepted: bytes we may send in SYN-RECEIVED (0: none)
    cdef bint tfo_syn_opt              # active: the next (first) SYN carries the option and data
    cdef int64_t tfo_syn_len           # active: data bytes our SYN carried (0 = none)
    cdef bint tfo_accepted             # passive: the SYN's data was accepted (readable in SYN-RECEIVED)
    cdef bint tfo_send_cookie          # passive: our SYN-ACK carries our cookie (asked for / a bad one seen)
    cdef uint64_t n_tfo_sent, n_tfo_acked, n_tfo_accepted, n_tfo_rejected, n_tfo_rexmit
    # -- methods --------------------------------------------------------------------------
    cdef uint32_t _sseq(self, int64_t off) noexcept
    cdef int64_t _soff(self, uint32_t seq) noexcept
    cdef uint32_t _rseq(self, int64_t off) noexcept
    cdef int64_t _roff(self, uint32_t seq) noexcept
    cdef uint32_t _ts_now(self, uint64_t now) noexcept
    cdef void _update_smss(self)
    cdef void _drop(self, int reason) noexcept
    cdef void _push_event(self, int code)
    cdef void _push_event_ab(self, int code, int64_t a, int64_t b)
    # SCPS-TP (the SCPS section of tcp.pyx)
    cdef void _scps_init(self, object sc)
    cdef void _scps_syn_opts(self, tcp_seg_t* seg)
    cdef void _scps_syn_received(self, tcp_seg_t* s)
    cdef bint _scps_syn_rst(self, uint64_t now)
    cdef void _scps_input(self, tcp_seg_t* s, int64_t seg_off, int64_t ack_off, uint64_t now)
    cdef void _scps_after_input(self, uint64_t now)
    cdef void _scps_ack_opts(self, tcp_seg_t* seg, int64_t length, int* maxblk)
    cdef int _scps_snack_opts(self, tcp_seg_t* seg, int room)
    cdef void _scps_record_push(self)
    cdef int64_t _scps_unit(self) noexcept
    cdef Py_ssize_t _scps_output(self, uint8_t* buf, Py_ssize_t cap, int64_t mss, uint64_t now)
    cdef int64_t _scps_recent_repair(self, int64_t off, uint64_t now)
    cdef bint _scps_rxt_suppressed(self, int64_t off, uint64_t now)
    cdef int64_t _scps_record_clip(self, int64_t off, int64_t length)
    cdef bint _scps_record_end(self, int64_t end)
    cdef void _scps_note_rexmit(self, int64_t off, int64_t length)
    cdef uint64_t _scps_rtt_window(self) noexcept
    cdef void _srep_note(self, int64_t off, int64_t length, uint64_t now) noexcept
    cdef int64_t _skip_sent(self, int64_t off, uint64_t now)
    cdef void _scps_timer(self, uint64_t now)
    cdef void _scps_bets_skip(self, uint64_t now)
    # TCP Fast Open (the TFO section of tcp.pyx)
    cdef void _tfo_init(self, object config)
    cdef Py_ssize_t _output_redundant(self, uint8_t* buf, Py_ssize_t cap, int64_t mss, bint may_fin, uint64_t now)
    cdef Py_ssize_t _output_rd_pkt(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef void _pace_spend(self, int64_t nbytes, uint64_t now)
    cdef int64_t _unsacked_len(self, int64_t off, int64_t end, int64_t mss) noexcept
    cdef void _tfo_cookie_of(self, bint active, uint8_t* out) noexcept
    cdef int64_t _tfo_syn_data(self, tcp_seg_t* seg)
    cdef void _tfo_synack_opts(self, tcp_seg_t* seg)
    cdef bint _tfo_syn_received(self, tcp_seg_t* s)
    cdef void _tfo_accepted(self, int64_t n)
    cdef void _tfo_synack(self, int64_t ack_off)
    cdef int _set_state(self, int new) except -1
    cdef void _queue_rst(self, uint32_t seq, uint32_t ack, uint8_t flags)
    cdef void _challenge_ack(self, uint64_t now)
    cdef void _enter_closed(self, int reason)
    cdef void _enter_time_wait(self, uint64_t now)
    cdef void _rtt_sample(self, int64_t r, uint64_t now)
    cdef int64_t _rcv_data_end(self) noexcept
    cdef int64_t _flight(self) noexcept
    cdef int64_t _sb_head(self) noexcept
    cdef int64_t _ack_seq(self) noexcept
    cdef int64_t _readable(self) noexcept
    cdef int64_t _recv_copy(self, uint8_t* dst, int64_t n)
    cdef void _rb_release(self, int64_t old_lo)
    cdef void _sb_release(self)
    cdef void _window_update_check(self)
    cdef int receive_seg(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now) except -1
    cdef int receive_ptr(self, const uint8_t* p, Py_ssize_t n, uint64_t now) except -1
    cdef void _input_closed(self, tcp_seg_t* s)
    cdef void _syn_options(self, tcp_seg_t* s, bint active)
    cdef void _input_listen(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now)
    cdef void _input_syn_sent(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now)
    cdef void _established(self, uint64_t now)
    cdef void _input_sync(self, tcp_seg_t* s, const uint8_t* pkt, uint64_t now)
    cdef void _back_to_listen(self)
    cdef void _rcv_fin(self, int64_t fin_off, uint64_t now)
    cdef void _rcv_data(self, int64_t off, const uint8_t* p, int64_t n, uint64_t now)
    cdef void _process_ack(self, tcp_seg_t* s, int64_t ack_off, int64_t seg_off, uint32_t plen, uint64_t now)
    cdef void _corruption_growth(self, uint64_t now, int64_t delivered, int64_t prior_flight)
    cdef void _ecn_response(self, uint64_t now, int64_t flight)
    cdef void _enter_recovery(self, uint64_t now)
    cdef int64_t _sack_update(self, tcp_seg_t* s, int64_t ack_off)
    cdef int64_t _lost_edge(self)
    cdef int64_t _unsacked_in(self, int64_t a, int64_t b)
    cdef int64_t _pipe(self)
    cdef uint64_t _next_deadline(self)
    cdef uint64_t _keepalive_deadline(self)
    cdef void _handle_timer(self, uint64_t now)
    cdef void _on_rto(self, uint64_t now)
    cdef bint _outage_due(self, uint64_t now) noexcept
    cdef void _enter_outage(self, uint64_t now)
    cdef void _outage_rto(self, uint64_t now)
    cdef void _exit_outage(self, uint64_t now)
    cdef Py_ssize_t _output_outage(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef Py_ssize_t output_into(self, uint8_t* buf, Py_ssize_t cap, uint64_t now) except -1
    cdef list _packets(self, uint64_t now)
    cdef int64_t _relay_into(self, TcpConnection dst, int64_t chunk)
    cdef bint _skip_flow_events(self) noexcept
    cdef int64_t _cur_mss(self)
    cdef Py_ssize_t _output_data(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef Py_ssize_t _output_blocked(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef Py_ssize_t _output_probe(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef Py_ssize_t _emit_data(self, uint8_t* buf, Py_ssize_t cap, int64_t off, int64_t length, bint fin, bint rexmit, uint64_t now)
    cdef Py_ssize_t _emit_syn(self, uint8_t* buf, Py_ssize_t cap, uint64_t now)
    cdef Py_ssize_t _emit_ctl(self, uint8_t* buf, Py_ssize_t cap, uint32_t seq, uint32_t ack, uint8_t flags)
    cdef uint32_t _window_field(self)
    cdef Py_ssize_t _emit(self, uint8_t* buf, Py_ssize_t cap, int64_t off, int64_t length, uint8_t flags, bint rexmit, uint64_t now)
    cdef Py_ssize_t _finish(self, uint8_t* buf, Py_ssize_t cap, tcp_seg_t* seg, const uint8_t* payload, Py_ssize_t plen) except -1
