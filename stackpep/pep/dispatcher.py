"""The dispatcher: captured segments in, each to its split connection.

One loop (`Dispatcher._serve`) serves the whole box: every capture ring and
every connection's deadline.  Each wake-up it reads every ring without waiting,
hands the packets to their connections, runs one turn of each connection that
took packets, whose deadline came (the box's one timer heap,
stackpep.pep.timers) or that asked for one (`SplitContext.wake`), flushes each
port once, then waits for the first of: a ring readable (one epoll of our own
holding every ring fd, awaited as one fd by trio) or the next deadline -- at
most one trio wake-up and one timed wait per iteration for the box.  With a
[wan] link (capture.hold_us) a small batch is followed by a look at the rings
at the next grid point instead (interrupt moderation, as NAPI does), and the
deadlines are on the same grid, so a steady satellite-rate stream costs one
wake-up per grid step.  Ports that have no fd to wait on (in-memory ports)
keep a reader task of their own feeding the same pass.

A segment of a flow whose receiving leg is open goes from the ring to that
leg's engine in C (`Dispatcher.fast`, a stackpep._fast.capture.FastFlows filled
through SplitContext.leg_opened; `_take_fast` counts those once per read).
For each other packet the flow key (client
address/port, server address/port) finds the split connection in the
connection table.  A SYN for an intercepted destination with no entry opens
one (if the table has room); any other segment of an unknown flow gets the
RST a closed port would send (RFC 9293 §3.10.7.1), so a client whose
connection this box lost (a restart) learns it at once -- rate-limited per
source and overall (RFC 5961 §7), and not for the late segments of a flow
that just closed (stackpep.pep.reset: RecentlyClosed).

ICMP errors that quote an intercepted flow go to the leg that sent the quoted
packet (stackpep.pep.icmp: validation, rate limit, path MTU, soft errors).

Every packet the dispatcher does not hand to a connection is counted by reason.

The dispatcher owns each connection's lifetime: it opens the entry, runs the
connection's task (`_run_connection`), counts the `Outcome` the connection
reports through its `SplitContext` (`_count_outcome`, once, when it is
decided) and drops the entry when the task ends (`connection_ended`).
"""
from __future__ import annotations

import logging
import os
import select
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import trio

from stackpep._fast.capture import FastFlows, split_key
from stackpep._fast.waitset import BLOCK_OURS, WaitSet
from stackpep._fast.tcp import TcpConnection, buffer_statistics, release_memory
from stackpep.io.ports import HOLD_MAX_BYTES, PacketPort, Router
from stackpep.io.rules import InterceptSpec
from stackpep.pep import engine as eng
from stackpep.pep.admission import ADMISSION_COUNTERS, AdmissionLimits, EmbryonicTable, OpenLimiter, source_prefix
from stackpep.pep.config import PepConfig
from stackpep.pep.icmp import ICMP_COUNTERS, ICMP_ERROR, IcmpGuard
from stackpep.pep.reset import RecentlyClosed, ResetLimiter, limits_from, reset_for, source_of
from stackpep.pep.scps import SCPS_COUNTERS, scps_link_from
from stackpep.pep.splitter import CLIENT, SERVER, SPLIT_COUNTERS, Outcome, SplitConnection, SplitContext, now_us
from stackpep.pep.syncookie import SYNCOOKIE_COUNTERS, CookieGate
from stackpep.pep.timers import Timers

log = logging.getLogger("stackpep.pep")

COUNTERS = (
    "packets_in", "packets_to_connections",
    "packets_fast",  # ... of which the capture handed to an opened leg's engine in C (FastFlows)
    "drop_not_intercepted",  # TCP we see but do not intercept (the kernel forwards it)
    "drop_unknown_flow",  # non-SYN of no connection: answered with RST (if the limits allow)
    "drop_unknown_flow_rst",  # ... a RST itself, not answered
    "drop_recently_closed",  # a late segment of a flow that just closed: dropped without RST
    "drop_table_full",  # SYN refused: max_connections reached
    "drop_server_side_syn",  # a SYN from the server side while intercept.server_initiated is off
    "drop_no_route",  # split connection could not find a route/neighbour
    "drop_draining",  # SYN while the box drains (SIGTERM) or stops: answered with RST
    "connections_opened",
    "rst_sent_unknown_flow",
    "rst_suppressed_per_source",  # unknown-flow RST held back: that source's bucket was empty
    "rst_suppressed_total",  # ... the box's bucket was empty
    "dispatch_ring_rereads",  # a pass looked at every ring again between slices of turns (Dispatcher._pass)
    "dispatch_reread_packets",  # ... and took this many packets that way
    "dispatch_wakeups",  # iterations of the box's one loop (Dispatcher._serve): trio wake-ups of it
    "dispatch_timed_waits",  # ... of which waited with a deadline (the grid point or the next deadline): one wait each
    "dispatch_blocked_waits",  # ... waited in the loop's own epoll_wait, trio having nothing to do (WaitSet.block)
    "dispatch_timer_turns",  # turns run because the connection's deadline came (stackpep.pep.timers)
    "dispatch_woken_turns",  # turns run because the connection asked for one (SplitConnection.wake)
    "memory_releases",  # free buffer chunks and heap pages handed back to the kernel (_release_memory)
) + SPLIT_COUNTERS + ADMISSION_COUNTERS + SYNCOOKIE_COUNTERS + tuple(f"ended_{o.value}" for o in Outcome) \
    + ICMP_COUNTERS + SCPS_COUNTERS

_ENDED = {o: f"ended_{o.value}" for o in Outcome}
_WAN_SIDE = {"client": CLIENT, "server": SERVER}

#: SYN-cookie answers waiting for a route/neighbour lookup at most; more SYNs
#: are dropped (syncookie_drop_lookups_pending): a flood from fresh sources
#: must not pile up tasks.
COOKIE_LOOKUPS_MAX = 256

#: A loop that waited in WaitSet.block (trio had nothing to do) and was woken by
#: its own fds yields to trio anyway after this many such waits in a row (a
#: checkpoint: trio's cancellation and scheduling are never put off for long,
#: ~0.1 s at the 4 ms grid).
BLOCKED_WAITS_PER_YIELD = 25

#: Connection turns a dispatcher pass runs before it flushes what they emitted
#: and reads every ring again (Dispatcher._pass).  A turn costs some tens of
#: microseconds, so a slice is a few milliseconds: a 16 MiB ring filling at
#: veth speed (GB/s) lasts ~10-20 ms.
TURNS_PER_PASS = 32
#: Once a pass's re-reads brought this many packets it stops re-reading and only
#: finishes its turns (then yields to the event loop: timers, other tasks).
REREAD_PACKETS_PER_PASS = 65536

#: How often the box looks whether its table shrank enough to hand free memory
#: back (seconds), and by how many connections it must have shrunk since the last
#: time (or to none at all): the engines' free buffer chunks and the heap's free
#: pages go back to the kernel (stackpep._fast.tcp.release_memory, malloc_trim),
#: so RSS follows the connection count down rather than staying at its peak.
RELEASE_CHECK_S = 5.0
RELEASE_SHRINK = 1000


_INF = float("inf")

#: Longest a loop waits in WaitSet.block before it yields to trio anyway (ms):
#: a bound on what trio could be kept from doing if it had work the loop did
#: not see (it sees all of it: _trio_idle), at a cost of a few trio rounds a
#: second on an idle box.
BLOCK_MAX_MS = 200


class _RunQueue(deque):
    """trio's run queue, remembering the tasks of each scheduling cycle: trio
    takes a cycle's batch as `list(runq)` and then clears runq (trio._core._run,
    unrolled_run), so tasks of the current batch not yet stepped are no longer
    in runq -- `batch` keeps them in sight for _trio_idle."""

    __slots__ = ("batch",)

    def __init__(self, items=()) -> None:
        super().__init__(items)
        self.batch: Tuple[object, ...] = ()

    def clear(self) -> None:
        self.batch = tuple(self)
        super().clear()


def _trio_host() -> Optional[Tuple[object, int]]:
    """trio's runner and the fd of its epoll, for the loop's own wait
    (WaitSet.block); its run queue is replaced by a _RunQueue.  trio's
    internals, looked up defensively: None if this trio has others, runs as a
    guest, or uses no epoll -- then the loop always waits through trio."""
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT  # type: ignore[attr-defined]
        runner = GLOBAL_RUN_CONTEXT.runner
        fd = runner.io_manager._epoll.fileno()
        runner.waiting_for_idle, runner.deadlines.next_deadline  # noqa: B018 (present?)
        if runner.is_guest or not isinstance(runner.runq, deque):
            return None
        if not isinstance(runner.runq, _RunQueue):
            runner.runq = _RunQueue(runner.runq)
    except Exception:  # (any other trio)
        return None
    return runner, int(fd)


def _trio_idle(runner, me) -> bool:
    """No task but `me` can run now: none in trio's run queue, none of the
    current cycle's batch still to be stepped (a stepped task's
    `_next_send_fn` is cleared before it runs), nobody waiting for "all tasks
    blocked"."""
    if runner.runq or runner.waiting_for_idle:
        return False
    for t in runner.runq.batch:
        if t is not me and t._next_send_fn is not None:
            return False
    return True


class Dispatcher:
    def __init__(self, config: PepConfig, ports: Sequence[PacketPort], router: Router, spec: InterceptSpec,
                 local_addresses: Optional[Callable[[], Set[bytes]]] = None, hc_table=None) -> None:
        self.config = config
        # The box's own addresses are never intercepted (the rules' `fib daddr type
        # local` / `addrtype LOCAL`): refreshed every few seconds when given.
        self._local_source = local_addresses if spec.exclude_local else None
        self.local: Set[bytes] = set()
        self.ports = list(ports)
        self.router = router
        self.spec = spec
        self.table: Dict[bytes, SplitConnection] = {}
        self._table_peak = 0  # most entries since memory was last released
        self.counters: Dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.shared_rates: Dict[tuple, object] = {}   # this box's rate shares (TcpConfig.rate_share)
        self.tcp_config = (eng.tcp_config(config.tcp_client, self.shared_rates),
                           eng.tcp_config(config.tcp_server, self.shared_rates))
        self._leg_configs: Dict[tuple, object] = {}
        self._nursery: Optional[trio.Nursery] = None
        self._match_cache: Dict[tuple, bool] = {}
        self._full_logged_at = -1e9
        self.reset_limiter = ResetLimiter(limits_from(config))
        self.recently_closed = RecentlyClosed(int(config.recent_close_time * 1_000_000),
                                              max_entries=max(65536, config.max_connections))
        self.closed_event = trio.Event()
        self.timers = Timers()  # every connection's next deadline (served by _serve)
        self._woken: List[SplitConnection] = []  # connections that asked for a turn (SplitConnection.wake)
        self._waiting = False  # _serve is waiting (_wake, _rearm interrupt it)
        self._wait_due: Optional[int] = None  # ... until this (µs; with a WaitSet: what its timer is armed for)
        self._waitset: Optional[WaitSet] = None  # _serve's one fd (on trio's real clock)
        self._wait: Optional[trio.CancelScope] = None  # ... else its wait's cancel scope
        # (trio's runner, the fd of its epoll): _serve waits in WaitSet.block when trio
        # has nothing to do (None: always through trio; capture.own_wait = false, i.e.
        # `block_wait` False, turns it off)
        self._host: Optional[Tuple[object, int]] = None
        self.block_wait = bool(getattr(config, "own_wait", True))
        self._blocked_in_row = 0
        self.icmp = IcmpGuard(self.counters)
        # opened legs' engines by flow key: their segments go from the capture to
        # the engine in C (filled by _leg_opened, emptied by _count_outcome/_forget)
        self.fast = FastFlows()
        self._hc_table = hc_table
        self.scps = scps_link_from(config, self.counters, hc_table)  # SCPS-TP on the long leg (stackpep.pep.scps)
        # All a split connection sees of the box.
        self.split_context = SplitContext(config=config, next_hop=router.next_hop, leg_config=self.leg_config,
                                          icmp_validate=self.icmp.validate, counters=self.counters,
                                          report=self._count_outcome, handshake_done=self._handshake_done,
                                          scps=self.scps, wan_side=_WAN_SIDE.get(config.wan_leg),
                                          timers=self.timers, wake=self._wake, leg_opened=self._leg_opened)
        # SYN-flood defences (stackpep.pep.admission, stackpep.pep.syncookie)
        self.admission = AdmissionLimits.from_config(config)
        self.open_limiter = OpenLimiter(self.admission)
        self.embryonic = EmbryonicTable()
        self.cookie_gate = CookieGate(os.urandom(16), self.counters)  # the per-box secret
        self._cookie_lookups = 0
        self.draining = False  # new SYNs get RST (stackpep.pep.api: drain and stop)
        self.on_connection_end: Optional[Callable[[SplitConnection], None]] = None  # connection log

    # -- running ---------------------------------------------------------------
    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._local_source is not None:
                    self.local = await trio.to_thread.run_sync(self._local_source)
                    nursery.start_soon(self._refresh_local)
                warm = getattr(self.router, "warm", None)  # (routers of tests may have none)
                if warm is not None:
                    await trio.to_thread.run_sync(warm)
                polled = [p for p in self.ports if p.wait_fd() is not None]
                for port in self.ports:
                    if port.wait_fd() is None:  # (in-memory ports: nothing to epoll)
                        nursery.start_soon(self._read_port, port)
                nursery.start_soon(self._serve, polled)
                nursery.start_soon(self._release_memory)
                task_status.started()
        finally:
            self.closed_event.set()

    async def _read_port(self, port: PacketPort) -> None:
        """A port with no fd (MemoryPort): its own reader; the turns still file
        their deadlines in the one heap, and _serve's wait is brought forward."""
        while True:
            batch = await port.receive_batch()
            self._pass(port, batch)
            self._rearm()

    # -- the box's one loop ----------------------------------------------------------
    async def _serve(self, polled: List[PacketPort]) -> None:
        """Every ring in `polled` and every connection's deadline, in one loop
        (module docstring).  Per iteration: one pass (`_pass`: the rings read
        without waiting, the due deadlines and the woken connections joining the
        touched ones' turns), then one wait.

        The wait: on trio's real clock one fd, a WaitSet (stackpep._fast.waitset:
        an epoll of every ring fd plus a timerfd armed for the deadline), so a
        timed wait costs no cancel scope; on another clock (trio.testing.MockClock:
        virtual time) a cancel scope's deadline instead."""
        counters = self.counters
        timers = self.timers
        g = self.config.hold_us  # the wake-up grid (µs; 0: none -- no [wan] link)
        ws: Optional[WaitSet] = None
        ep: Optional[select.epoll] = None
        if type(trio.lowlevel.current_clock()).__name__ == "SystemClock":
            ws = self._waitset = WaitSet()
            self._host = _trio_host() if self.block_wait else None
            if self._host is not None:
                ws.attach_host(self._host[1])
        else:
            ep = select.epoll()
        try:
            for p in polled:
                if ws is not None:
                    ws.add(p.wait_fd())
                else:
                    ep.register(p.wait_fd(), select.EPOLLIN)
            rings_fd = (ws.fileno() if ws is not None else ep.fileno()) if polled else None
            rx = sum(p.rx_bytes() for p in polled)
            while True:
                counters["dispatch_wakeups"] += 1
                now = now_us()
                self._pass(None, None, now, polled)
                # where the rings stand, and the bytes this pass brought
                rx0, rx = rx, sum(p.rx_bytes() for p in polled)
                if self._woken or any(p.pending() for p in polled):
                    await trio.lowlevel.checkpoint()  # (blocks retired meanwhile: read them at once)
                    continue
                due = timers.next_due()
                fd = rings_fd
                if g and rx0 != rx and rx - rx0 < HOLD_MAX_BYTES:
                    # a small batch: look again at the next grid point, not at every
                    # retired block (the deadlines are on this grid too)
                    t = (now_us() // g + 1) * g
                    if due is None or t < due:
                        due = t
                    fd = None
                if due is not None:
                    counters["dispatch_timed_waits"] += 1
                if ws is not None:
                    await self._wait_waitset(ws, due, fd)
                else:
                    await self._wait_scope(due, fd)
        finally:
            self._waitset = None
            self._host = None
            if ws is not None:
                ws.close()
            if ep is not None:
                ep.close()

    async def _wait_waitset(self, ws: WaitSet, due: Optional[int], fd: Optional[int]) -> None:
        """Until `due` (µs; None: no deadline), `fd` readable (None: only the timer),
        or a connection asked for a turn (_wake arms the timer at once).  While
        trio has nothing else to do the wait is WaitSet.block, in this task
        (capture.own_wait), else trio's `wait_readable`."""
        armed = self._wait_due
        if due != armed:
            now = now_us()
            # Re-armed if the deadline came earlier or the timer already went off (it
            # polls readable until re-armed); a deadline moved later (a busy
            # connection's retransmission timer, with every ACK) keeps the armed
            # time: one early wake-up then, instead of a timerfd_settime per wait.
            if armed is None or armed <= now or (due is not None and due < armed):
                if due is None:
                    ws.disarm()
                else:
                    ws.arm(due - now)
                self._wait_due = due
        host = self._host
        if host is not None:
            # trio idle (no task to run, nobody waiting for "all tasks blocked"): wait
            # here, on our fds and trio's epoll fd, no longer than trio's next deadline
            runner = host[0]
            if _trio_idle(runner, trio.lowlevel.current_task()):
                nd = runner.deadlines.next_deadline()  # type: ignore[attr-defined]
                timeout = BLOCK_MAX_MS
                if nd != _INF:
                    left = nd - trio.current_time()
                    timeout = min(int(left * 1000) + 1, BLOCK_MAX_MS) if left > 0 else 0
                if timeout:
                    self.counters["dispatch_blocked_waits"] += 1
                    r = ws.block(fd is not None, timeout)
                    if r == BLOCK_OURS and self._blocked_in_row < BLOCKED_WAITS_PER_YIELD and (
                            nd == _INF or nd > trio.current_time()):
                        self._blocked_in_row += 1
                        return  # only ours: on with the loop, trio has still nothing to do
                    # trio's fd, its deadline, a signal, or time to yield: trio's turn
                    self._blocked_in_row = 0
                    await trio.lowlevel.checkpoint()
                    return
        self._blocked_in_row = 0
        self._waiting = True
        try:
            await trio.lowlevel.wait_readable(ws.timer_fileno() if fd is None else fd)
        finally:
            self._waiting = False

    async def _wait_scope(self, due: Optional[int], fd: Optional[int]) -> None:
        """As _wait_waitset, with a cancel scope's deadline (any trio clock)."""
        with trio.CancelScope(deadline=due / 1_000_000 if due is not None else float("inf")) as scope:
            self._wait = scope
            self._wait_due = due
            self._waiting = True
            try:
                if fd is None:
                    await trio.sleep_forever()
                else:
                    await trio.lowlevel.wait_readable(fd)
            finally:
                self._waiting = False
                self._wait = None
                self._wait_due = None

    def _wake(self, conn: SplitConnection) -> None:
        """SplitContext.wake: a turn for conn at the loop's next iteration (at once)."""
        self._woken.append(conn)
        if self._waiting:
            self._interrupt(None)

    def _rearm(self) -> None:
        """A turn outside the loop (_read_port) may have filed an earlier deadline
        than the one the loop waits for."""
        if self._waiting:
            due = self.timers.next_due()
            if due is not None and (self._wait_due is None or due < self._wait_due):
                self._interrupt(due)

    def _interrupt(self, due: Optional[int]) -> None:
        """End the loop's wait at `due` (µs) instead, or at once (None)."""
        ws = self._waitset
        if ws is not None:
            ws.arm(0 if due is None else due - now_us())
            self._wait_due = -1 if due is None else due  # (the next wait re-arms)
        elif self._wait is not None:
            if due is None:
                self._wait.cancel()
            else:
                self._wait.deadline = due / 1_000_000
                self._wait_due = due

    def _pass(self, port: Optional[PacketPort], batch, now: Optional[int] = None,
              polled: Sequence[PacketPort] = ()) -> None:
        """One dispatcher pass: `batch` (from `port`) to its connections, then one
        turn of every connection that took packets -- TURNS_PER_PASS at a time:
        after each slice what those turns emitted leaves (flush) and every ring
        is read again (`PacketPort.poll_batch`) before the next slice, so that a
        burst touching thousands of connections does not leave the rings unread
        (and full: rx_drop_ring_full) behind thousands of turns.  What a re-read
        brings joins the pass (its connections queue behind those already
        touched); once re-reads brought REREAD_PACKETS_PER_PASS packets the pass
        only finishes its turns, so that the event loop (timers, other tasks) is
        not starved.  The rings are read both before the slice's output leaves
        and after: on veth the peers' stacks answer that output at once (their
        ACK-clocked data lands in the ring during the send), so the room is made
        first."""
        counters = self.counters
        table = self.table
        ports = self.ports
        # connections whose engines took packets: by key (one turn each) and in order
        touched: Dict[bytes, SplitConnection] = {}
        due: Deque[Tuple[bytes, SplitConnection]] = deque()
        if now is None:
            now = now_us()
        for p in ports:  # what the turns make the connections send leaves in one go per slice (flush below)
            p.defer()
        try:
            fast = self.fast
            if batch:
                batch = fast.filter(batch, port.client_side, now)
                self._take_fast(now, touched, due)
                if batch:
                    self._take_batch(port, port.client_side, batch, now, table, counters, touched, due)
            for p in polled:  # (_serve: every ring, without waiting)
                more = p.poll_fast(fast, now)
                self._take_fast(now, touched, due)
                if more:
                    self._take_batch(p, p.client_side, more, now, table, counters, touched, due)
            # connections whose deadline came, then those that asked for a turn: one turn
            # each, behind those that took packets (a connection in both: one turn)
            expired = self.timers.expired(now)
            if expired:
                counters["dispatch_timer_turns"] += len(expired)
                self._add_turns(expired, touched, due)
            if self._woken:
                woken, self._woken = self._woken, []
                counters["dispatch_woken_turns"] += len(woken)
                self._add_turns(woken, touched, due)
            taken = 0  # packets the re-reads brought
            while due:
                n = 0
                while due and n < TURNS_PER_PASS:
                    key, conn = due.popleft()
                    if touched.get(key) is not conn:
                        continue  # superseded by a new connection under the same key (it is due itself)
                    del touched[key]
                    n += 1
                    try:
                        conn.turn(now)
                    except Exception:
                        log.exception("%s: a turn failed; resetting both legs", conn)
                        conn.fail()
                if not due or taken >= REREAD_PACKETS_PER_PASS:
                    continue
                # Turns are still waiting: the rings first (what piled up during
                # this slice), then what the slice emitted leaves -- on veth the
                # peers' stacks answer it at once, into the rings -- and the rings
                # again.
                now = now_us()
                taken += self._reread(now, touched, due)
                for p in ports:
                    p.flush()
                    p.defer()
                taken += self._reread(now, touched, due)
        finally:
            for p in ports:
                p.flush()

    @staticmethod
    def _add_turns(conns: List[SplitConnection], touched: Dict, due) -> None:
        """Connections due a turn for another reason than packets: one turn each,
        none twice.  Filed under their flow key unless another connection took
        that key in this pass (one being superseded: its last turn ends its
        task), then under the connection itself."""
        for conn in conns:
            k = conn.key
            t = touched.get(k)
            if t is conn or touched.get(conn) is conn:
                continue
            if t is not None:
                k = conn
            touched[k] = conn
            due.append((k, conn))

    def _reread(self, now: int, touched: Dict[bytes, SplitConnection], due) -> int:
        """Every ring once more, without waiting; returns the packets taken."""
        counters = self.counters
        counters["dispatch_ring_rereads"] += 1
        taken = 0
        fast = self.fast
        for p in self.ports:
            more = p.poll_fast(fast, now)
            taken += self._take_fast(now, touched, due)
            if more:
                taken += len(more)
                self._take_batch(p, p.client_side, more, now, self.table, counters, touched, due)
        counters["dispatch_reread_packets"] += taken
        return taken

    def _take_fast(self, now: int, touched: Dict[bytes, SplitConnection], due) -> int:
        """What the last read handed to engines in C (FastFlows): counted as the
        Python path counts it, the connections that took packets marked as
        _take_batch marks them.  Returns the packets."""
        n, conns, failed = self.fast.take()
        if not n:
            return 0
        counters = self.counters
        counters["packets_in"] += n
        counters["packets_to_connections"] += n - len(failed)
        counters["packets_fast"] += n - len(failed)
        for conn in conns:
            conn.last_activity = now
            key = conn.key
            if touched.get(key) is not conn:
                touched[key] = conn
                due.append((key, conn))
        for conn, exc in failed:
            log.error("%s: delivering a packet failed; resetting both legs", conn, exc_info=exc)
            conn.fail()
        return n

    def _leg_opened(self, conn: SplitConnection, side: int) -> None:
        """SplitContext.leg_opened: the leg's segments may go to its engine in C,
        as long as the connection is this key's and its outcome is not decided
        (an engine of another type -- a test double -- keeps the Python path)."""
        engine = conn.legs[side].engine
        if conn.outcome is None and self.table.get(conn.key) is conn and isinstance(engine, TcpConnection):
            self.fast.set_leg(conn.key, conn, side == CLIENT, engine)

    def _take_batch(self, port: PacketPort, client_side: bool, batch, now: int, table, counters,
                    touched: Dict[bytes, SplitConnection], due) -> None:
        """Each packet of one batch to its connection; the connections whose
        engines took packets are added to `touched` and, once, to the end of
        `due` (their turn is due)."""
        counters["packets_in"] += len(batch)
        for key, pkt, flags in batch:
            if flags & ICMP_ERROR:
                self._icmp_error(port, key, pkt, now)
                continue
            conn = table.get(key)
            if conn is not None:
                if (flags & eng.TH_SYN and not flags & eng.TH_ACK and conn.passive == (CLIENT if client_side else SERVER)
                        and conn.reusable_by_new_syn()):
                    conn.shutdown(Outcome.SUPERSEDED)
                    self._forget(conn)
                    self._new_flow(port, key, pkt, flags, now)
                    continue
                try:
                    if conn.deliver(client_side, pkt, flags, now) and touched.get(key) is not conn:
                        touched[key] = conn
                        due.append((key, conn))
                except Exception:
                    log.exception("%s: delivering a packet failed; resetting both legs", conn)
                    conn.fail()
                    continue
                counters["packets_to_connections"] += 1
            else:
                self._new_flow(port, key, pkt, flags, now)

    async def _release_memory(self) -> None:
        while True:
            await trio.sleep(RELEASE_CHECK_S)
            n = len(self.table)
            if self._table_peak - n >= RELEASE_SHRINK or (n == 0 and self._table_peak > 0):
                release_memory()
                self.counters["memory_releases"] += 1
                self._table_peak = n

    async def _refresh_local(self) -> None:
        while True:
            await trio.sleep(5)
            self.local = await trio.to_thread.run_sync(self._local_source)

    def _intercepted(self, key: bytes) -> bool:
        caddr, _, saddr, sport = split_key(key)
        if self.local and (saddr in self.local or caddr in self.local):
            return False
        skey = (saddr, sport)
        hit = self._match_cache.get(skey)
        if hit is None:
            hit = self.spec.matches(saddr, sport)
            if len(self._match_cache) > 65536:
                self._match_cache.clear()
            self._match_cache[skey] = hit
        return hit

    def _new_flow(self, port: PacketPort, key: bytes, pkt: bytes, flags: int, now: int) -> None:
        c = self.counters
        if not self._intercepted(key):
            c["drop_not_intercepted"] += 1
            return
        is_syn = flags & eng.TH_SYN and not flags & (eng.TH_ACK | eng.TH_RST)
        if not is_syn:
            if (port.client_side and flags & eng.TH_ACK and not flags & (eng.TH_SYN | eng.TH_RST)
                    and self.config.handshake_mode == "syn-cookie" and self._cookie_ack(port, key, pkt, now)):
                return
            self._unknown_segment(port, key, pkt, flags, now)
            return
        if not port.client_side and not self.config.server_initiated:
            c["drop_server_side_syn"] += 1
            return
        if self.draining:
            # RST rather than silence: the client tries again elsewhere (or later) at once.
            c["drop_draining"] += 1
            rst = reset_for(pkt)
            if rst is not None:
                self._send_reset(port, rst, source_of(pkt))
            return
        if self.config.handshake_mode == "syn-cookie" and port.client_side:
            # (a SYN from the server side -- intercept.server_initiated -- opens as "after-server")
            self._answer_with_cookie(pkt, now)
            return
        # The side the SYN arrives from is the connection's client side (SplitConnection.passive).
        source = source_prefix(split_key(key)[0 if port.client_side else 2])
        if not self._admit(source, now):
            return
        self._open(SplitConnection(self.split_context, key, pkt, port, from_client=port.client_side), source)

    # -- admission (stackpep.pep.admission) -------------------------------------------
    def _admit(self, source: bytes, now: int) -> bool:
        """May a new split connection from `source` open its server leg now?  Room
        among the embryonic connections first: beyond max_embryonic one is evicted
        rather than the new SYN refused -- the box's oldest whose SYN-ACK is
        unanswered (EmbryonicTable.victim), else its oldest, none younger than
        EVICT_GRACE_US (with none such the SYN is dropped, drop_embryonic_full, and
        takes no server-open token).  Then the rate of server-leg opens (a SYN over
        it is dropped: its retransmission tries again); beyond
        max_embryonic_per_source that source's oldest is evicted instead."""
        c = self.counters
        lim = self.admission
        emb = self.embryonic
        per_source_full = emb.count(source) >= lim.max_embryonic_per_source
        evict = None
        if not per_source_full and len(emb) >= lim.max_embryonic:
            evict = emb.victim(now)
            if evict is None:
                c["drop_embryonic_full"] += 1
                return False
        verdict = self.open_limiter.allow(source, now)
        if verdict != "sent":
            c[f"drop_server_open_rate_{verdict}"] += 1
            return False
        if per_source_full:
            self._evict(emb.oldest(source), "evicted_embryonic_per_source")
        elif evict is not None:
            self._evict(evict, "evicted_embryonic")
        # len(table) first: counting the lingering connections walks the table
        if len(self.table) >= self.config.max_connections:
            victim = emb.victim(now)
            if victim is not None:
                self._evict(victim, "evicted_embryonic_table_full")
            elif self.active_connections() >= self.config.max_connections:
                c["drop_table_full"] += 1
                t = trio.current_time()
                if t - self._full_logged_at > 10:
                    self._full_logged_at = t
                    log.warning("connection table full (%d): dropping new SYNs (counter drop_table_full=%d)",
                                self.config.max_connections, c["drop_table_full"])
                return False
        return True

    def _evict(self, conn: Optional[SplitConnection], counter: str) -> None:
        if conn is None:
            return
        self.counters[counter] += 1
        conn.shutdown(Outcome.EVICTED)
        self._forget(conn)

    def _open(self, conn: SplitConnection, source: bytes) -> None:
        self.table[conn.key] = conn
        if len(self.table) > self._table_peak:
            self._table_peak = len(self.table)  # (_release_memory)
        self.embryonic.add(conn.key, conn, source)
        self.recently_closed.discard(conn.key)
        self.counters["connections_opened"] += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._run_connection, conn)

    def _handshake_done(self, conn: SplitConnection) -> None:
        """SplitContext.handshake_done: both legs established, no longer embryonic."""
        self.embryonic.discard(conn.key, conn)

    # -- handshake.mode "syn-cookie" (stackpep.pep.syncookie) ----------------------------
    def _answer_with_cookie(self, syn: bytes, now: int) -> None:
        """A SYN-ACK whose ISN is the cookie; nothing is kept."""
        src = source_of(syn)

        def answer(out_port, hop) -> None:
            synack = self.cookie_gate.answer(syn, self.leg_config(CLIENT, getattr(hop, "mtu", None)), now)
            if synack is not None:
                out_port.send([synack], hop)

        nowait = getattr(self.router, "next_hop_nowait", None)
        found = nowait(src) if nowait is not None else None
        if found is not None:  # a known neighbour: no task per SYN
            answer(*found)
            return

        if self._cookie_lookups >= COOKIE_LOOKUPS_MAX:  # the only state a SYN may make here is bounded
            self.counters["syncookie_drop_lookups_pending"] += 1
            return

        async def send():
            self._cookie_lookups += 1
            try:
                out_port, hop = await self.router.next_hop(src)
            except LookupError:
                self.counters["drop_no_route"] += 1
                return
            finally:
                self._cookie_lookups -= 1
            answer(out_port, hop)

        assert self._nursery is not None
        self._nursery.start_soon(send)

    def _cookie_ack(self, port: PacketPort, key: bytes, pkt: bytes, now: int) -> bool:
        """A segment of an unknown flow in syn-cookie mode: True if it returned a
        valid cookie (the split connection is open), False if it is just unknown."""
        verified = self.cookie_gate.verify(pkt, now)
        if verified is None:
            return False
        if self.draining:
            self.counters["drop_draining"] += 1
            return True  # the client retransmits; the drain ends the box first
        source = source_prefix(split_key(key)[0])
        if not self._admit(source, now):
            return True  # dropped, counted: the client's retransmission returns the cookie again
        iss, syn = verified
        self._open(SplitConnection.from_cookie(self.split_context, key, iss, syn, pkt, port), source)
        return True

    def _icmp_error(self, port: PacketPort, key: bytes, pkt: bytes, now: int) -> None:
        """An ICMP error filed under the flow it quotes (stackpep.pep.icmp)."""
        c = self.counters
        c["icmp_errors_in"] += 1
        if not self.icmp.admit(now):
            return
        err = self.icmp.parse(pkt)  # (the port checked the ICMP checksum)
        if err is None:
            return
        conn = self.table.get(key)
        if conn is None:
            c["icmp_drop_unknown_flow" if self._intercepted(key) else "icmp_drop_not_intercepted"] += 1
            return
        # A client-facing interface hears about what the client leg sent.
        conn.icmp_error(CLIENT if port.client_side else SERVER, err, now)

    def _unknown_segment(self, port: PacketPort, key: bytes, pkt: bytes, flags: int, now: int) -> None:
        """A segment that cannot open a connection and has none (RFC 9293 §3.10.7.1)."""
        c = self.counters
        if flags & eng.TH_RST:
            c["drop_unknown_flow_rst"] += 1
            return
        if self.recently_closed.silent_drop(key, pkt, flags, now):
            c["drop_recently_closed"] += 1
            return
        c["drop_unknown_flow"] += 1
        src = source_of(pkt)
        verdict = self.reset_limiter.allow(src, now)
        if verdict != "sent":
            c[f"rst_suppressed_{verdict}"] += 1
            return
        rst = reset_for(pkt)
        if rst is not None:
            self._send_reset(port, rst, src)

    def _send_reset(self, port: PacketPort, rst: bytes, src: bytes) -> None:
        # The reset goes back where the segment came from.
        async def send():
            try:
                out_port, hop = await self.router.next_hop(src)
            except LookupError:
                self.counters["drop_no_route"] += 1
                return
            out_port.send([rst], hop)
            self.counters["rst_sent_unknown_flow"] += 1

        assert self._nursery is not None
        self._nursery.start_soon(send)

    def leg_config(self, leg: int, mtu: Optional[int]):
        """The leg's engine settings, with the egress interface's MTU unless the
        configuration fixed one (RFC 9293 §3.7.1: MSS from the MTU)."""
        settings = self.config.tcp_client if leg == CLIENT else self.config.tcp_server
        if mtu is None or "mtu" in settings:
            return self.tcp_config[leg]
        cfg = self._leg_configs.get((leg, mtu))
        if cfg is None:
            import dataclasses

            cfg = self._leg_configs[(leg, mtu)] = dataclasses.replace(self.tcp_config[leg], mtu=mtu)
        return cfg

    # -- connections' lifetimes -----------------------------------------------------
    async def _run_connection(self, conn: SplitConnection) -> None:
        try:
            await conn.run()
        finally:
            self.connection_ended(conn)

    def _count_outcome(self, conn: SplitConnection, outcome: Outcome) -> None:
        """SplitContext.report: the connection decided how it ends (its legs may
        still be sending their last packets).  Its segments take the Python path
        from now on (SplitConnection.deliver)."""
        self.counters[_ENDED[outcome]] += 1
        self.fast.discard(conn.key, conn)

    def connection_ended(self, conn: SplitConnection) -> None:
        """The connection's task is over (conn.outcome is set)."""
        if self.table.get(conn.key) is conn:
            # remember it a while: its peers' late segments are not an unknown flow's
            self.recently_closed.add(conn.key, conn.outcome is not Outcome.CLOSED, now_us())
        self._forget(conn)
        if self.on_connection_end is not None:
            try:
                self.on_connection_end(conn)
            except Exception:
                log.exception("%s: connection-end hook failed", conn)

    def reconfigure(self, config: PepConfig) -> None:
        """A reloaded configuration (stackpep.pep.reload checked that only what
        may change live differs): used by connections opened from now on."""
        self.config = config
        self.tcp_config = (eng.tcp_config(config.tcp_client, self.shared_rates),
                           eng.tcp_config(config.tcp_server, self.shared_rates))
        self._leg_configs.clear()
        self.reset_limiter.reconfigure(limits_from(config))
        self.admission = AdmissionLimits.from_config(config)
        self.open_limiter.reconfigure(self.admission)
        self.recently_closed.hold_us = int(config.recent_close_time * 1_000_000)
        self._reconfigure_scps(config)

    def _reconfigure_scps(self, config: PepConfig) -> None:
        """SCPS settings of the long leg for connections opened from now on (the
        refusal cache and the live connection ids stay)."""
        import dataclasses

        if not config.wan_scps:
            self.scps = None
        elif self.scps is None:
            self.scps = scps_link_from(config, self.counters, self._hc_table)
        else:
            self.scps.configure(config.wan_scps)
        self.split_context = dataclasses.replace(self.split_context, config=config, scps=self.scps)

    def _forget(self, conn: SplitConnection) -> None:
        self.fast.discard(conn.key, conn)
        self.embryonic.discard(conn.key, conn)
        if self.table.get(conn.key) is conn:
            del self.table[conn.key]

    def active_connections(self) -> int:
        """Connections that still carry data (lingering TIME-WAIT legs do not count)."""
        return sum(1 for c in self.table.values() if not c.lingering)

    def shutdown_all(self) -> None:
        for conn in list(self.table.values()):
            conn.shutdown(Outcome.SHUTDOWN)

    def router_statistics(self) -> Dict[str, int]:
        """The route lookups' counters (stackpep.io.routes.NextHopCache: route_cache_hits,
        route_cache_misses, route_table_dumps, route_table_invalidations, route_queries)."""
        stats = getattr(self.router, "statistics", None)
        return dict(stats()) if stats is not None else {}

    def statistics(self) -> Dict[str, object]:
        states: Dict[str, int] = {}
        for conn in self.table.values():
            for i, state in enumerate(conn.leg_states()):
                k = f"{('client', 'server')[i]}_leg_{state}"
                states[k] = states.get(k, 0) + 1
        lingering = sum(1 for c in self.table.values() if c.lingering)
        return {
            "connections_active": len(self.table) - lingering,
            "connections_embryonic": len(self.embryonic),
            "connections_time_wait": lingering,
            "flows_recently_closed": len(self.recently_closed),
            **self.counters,
            **(self.scps.statistics() if self.scps is not None else {}),
            "leg_states": states,
            "buffers": buffer_statistics(),
            "ports": {p.name: p.statistics() for p in self.ports},
            "routes": self.router_statistics(),
        }
