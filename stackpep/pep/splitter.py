"""One split connection: the client's TCP connection terminated by one engine,
a second connection to the server opened by another, bytes relayed between.

The client leg's engine uses the *server's* address and port as its local
address and the server leg's engine the *client's*, so every packet on both
sides carries only the original addresses (a transparent proxy; RFC 3135 §2.4
calls this a split-connection TCP PEP).

Structure (trio): `SplitConnection.run()` is one task owning the connection's
life: route lookup, the engines, the end and the cleanup.  It does not wake for
timers: once the engines exist it sleeps until the connection has ended.  The
work is the turn (`turn` -> `_service`: each leg's engine fires its due timers
and its events are drained -- DataReadable / SendSpace passed over in C -- then
the relay, engine to engine in C (`TcpConnection.relay_to`), then the output),
and the dispatcher's one loop runs it: after delivering a batch of packets
(`deliver`) to the connections that took some, when the connection's deadline
comes, and when `wake()` asked for one.  After each turn the connection files
its next deadline -- the engines' timers and its own handshake and idle limits
(`_limit_deadline`) and zero-RTT wait, rounded up to the wake-up grid -- in the
box's one timer heap (stackpep.pep.timers, `SplitContext.timers`); nothing polls.
Once both legs are established and nothing waits between them (`_steady`), the
whole turn -- timers, relay both ways, each leg's packets and the next deadline
-- is one C call (stackpep._fast.tcp.split_turn, issue 11: the turn's Python glue
cost as much as its engine work); whenever an event, a FIN or the idle limit
needs a step taken here, it declines or hands the rest of the turn back.
The connection sees the box only through a `SplitContext` (route lookup, leg
settings, ICMP validation, counters, timers) and reports its `Outcome` through it
once decided; `run()` returns it.

Lifecycle (`Phase`): RESOLVING (routes and MTUs looked up; the server side's
stray packets wait in a bounded backlog) -> OPENING (the server leg's SYN is
out; the client's SYN is held until the server accepts, handshake.mode
"after-server") -> RELAYING (both legs open) -> ENDED (outcome decided; the
task winds down, TIME-WAIT may linger).  Any phase may go to ENDED.

Relay and backpressure: per direction, at most `relay_buffer` bytes sit between
the engines -- bytes read from one engine's receive buffer that the other's
send buffer has not accepted yet.  While any are pending nothing more is read,
so the source engine's receive buffer fills and its advertised window closes
(RFC 9293 §3.8.6): the fast side is slowed to the pace of the slow one and
memory stays bounded whatever the speed mismatch.

Half-close: a FIN from one side becomes send_eof() on the other leg once every
byte before it was relayed; the other direction keeps flowing (RFC 9293
§3.6).  A RST on one leg aborts the other.

ICMP errors about a leg's packets (stackpep.pep.icmp) come in by `icmp_error`:
Packet Too Big lowers that leg's path MTU and the pump resends at the new size
at once; other errors are soft (RFC 1122 §4.2.3.9, RFC 5461): the last one is
kept and named when the connection ends by a timeout.
"""
from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import trio

from stackpep._fast.capture import split_key
from stackpep._fast.tcp import TURN_AFTER_TIMERS, TURN_DONE, split_turn
from stackpep.pep import engine as eng
from stackpep.pep.reset import reset_for
from stackpep.pep.timers import TimerHandle
from stackpep.tcp.config import SCPS_COMPRESS
from stackpep.tcp.driver import TIMER_SLACK_US, ConnectionDriver
from stackpep.tcp.events import (CloseReason, Connected, ConnectionClosed, ConnectionReset, DataReadable,
                                 EofReceived, FastOpenAccepted, FastOpenResult, ScpsFallback, ScpsNegotiated,
                                 SendSpace, TcpEvent)
from stackpep.tcp.states import TcpState

log = logging.getLogger("stackpep.pep")

CLIENT, SERVER = 0, 1
LEG_NAMES = ("client", "server")

#: The connections' deadlines are rounded up to a grid (µs; capture.hold_us of the box's
#: configuration, this without one): deadlines of one
#: connection (and of all connections) due within one slot are served in one
#: turn, as a kernel's timer slack does.  A paced sender (rate-based [wan]) so
#: sends a burst of at most this much time's worth of bytes per wake-up instead
#: of one packet per wake-up; it is below the engine's TcpConfig.pace_slack_us (8 ms), so a
#: pacing deadline served this late is made up in full, and far below any
#: retransmission or delayed-ACK timer (RFC 6298 §2.4: RTO >= 1 s by default;
#: RFC 9293 §3.8.6.3: delayed ACK).
TIMER_GRANULARITY_US = 4000

#: Packets from the server side kept while the routes are looked up (RESOLVING);
#: more are dropped and counted (drop_backlog_full).
BACKLOG_LIMIT = 64

#: The split connection's own counters (in the dispatcher's table).
SPLIT_COUNTERS = (
    "drop_before_client_leg",  # a non-SYN segment from the client before its leg opened (nothing can take it)
    "drop_backlog_full",  # a server-side packet beyond BACKLOG_LIMIT while the routes were looked up
    "zero_rtt_syn_data",  # near box: long legs opened with the client's first bytes in the SYN
    "zero_rtt_no_data",  # near box: ... opened without (the client sent nothing for zero_rtt_wait)
    "zero_rtt_syn_data_acked",  # near box: the far end acknowledged the SYN's data (a peer with our key)
    "zero_rtt_syn_data_not_acked",  # near box: it did not (no peer or another key): the bytes went again
    "zero_rtt_accepted",  # far box: a SYN from the link brought data with a cookie that verified
)

_LINGER_STATES = (TcpState.TIME_WAIT, TcpState.CLOSED)
_LINGER_NAMES = tuple(s.rfc_name for s in _LINGER_STATES)  # engine.state: a str, no enum made
_QUIET_STATES = (TcpState.CLOSED, TcpState.TIME_WAIT, TcpState.LISTEN)  # abort() sends nothing useful


class Outcome(str, enum.Enum):
    """How a split connection ended (one counter each in the dispatcher)."""

    CLOSED = "closed"  # both directions finished with FIN
    RESET_BY_CLIENT = "reset_by_client"
    RESET_BY_SERVER = "reset_by_server"
    REFUSED = "refused"  # the server answered the SYN with RST
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    IDLE_TIMEOUT = "idle_timeout"
    LEG_TIMEOUT = "leg_timeout"  # one leg gave up retransmitting; the other was reset
    NO_ROUTE = "no_route"
    SUPERSEDED = "superseded"  # a new SYN reused the 4-tuple after close
    SHUTDOWN = "shutdown"  # the PEP stopped
    EVICTED = "evicted"  # still embryonic, made room for a new SYN (stackpep.pep.admission)
    ERROR = "error"  # a bug surfaced in this connection: logged, both legs reset, the box goes on


class Phase(enum.Enum):
    """Where a split connection is in its life (module docstring)."""

    RESOLVING = "resolving"
    OPENING = "opening"
    RELAYING = "relaying"
    ENDED = "ended"


@dataclass(frozen=True)
class SplitContext:
    """What a split connection may use of the box; the dispatcher builds one."""

    config: Any  # PepConfig: handshake_mode, handshake_timeout, idle_timeout, relay_buffer
    next_hop: Callable[[bytes], Awaitable[Tuple[Any, Any]]]  # Router.next_hop: (port, hop), LookupError
    leg_config: Callable[[int, Optional[int]], Any]  # the TcpConfig of leg CLIENT/SERVER for an egress MTU
    icmp_validate: Callable[[Any, Any], bool]  # IcmpGuard.validate(err, engine)
    counters: Dict[str, int]  # the box's counters (SPLIT_COUNTERS, icmp_*)
    report: Callable[["SplitConnection", Outcome], None]  # called once, when the outcome is decided
    handshake_done: Optional[Callable[["SplitConnection"], None]] = None  # both legs established (once)
    scps: Any = None  # stackpep.pep.scps.ScpsLink of the long leg, or None (no SCPS-TP)
    wan_side: Optional[int] = None  # CLIENT or SERVER: the leg that crosses the long link ([wan]), or None
    timers: Any = None  # stackpep.pep.timers.Timers: the box's one deadline heap (the dispatcher's loop serves it)
    wake: Optional[Callable[["SplitConnection"], None]] = None  # have the dispatcher's loop run a turn soon
    # a leg (CLIENT/SERVER) was opened: its segments may go from the capture to its engine in C
    leg_opened: Optional[Callable[["SplitConnection", int], None]] = None


def now_us() -> int:
    # round, not truncate: woken at a deadline of d µs (d / 1e6 s in trio's float
    # time) this must say d, not d - 1 (the timer heap would find it not yet due)
    return round(trio.current_time() * 1_000_000)


def _iss() -> int:
    # RFC 6528: unpredictable initial sequence numbers (the engine takes ISS in).
    return int.from_bytes(os.urandom(4), "big")


class Leg:
    """One side of a split connection: its engine (made in _start, once the
    route and so the MTU is known), where its packets leave, and what the
    relay knows about it."""

    __slots__ = ("side", "name", "engine", "driver", "port", "hop", "opened", "established", "closed",
                 "pending", "eof_seen", "eof_sent", "bytes_relayed", "soft_errors", "compressor")

    def __init__(self, side: int, port: Any = None) -> None:
        self.side = side
        self.name = LEG_NAMES[side]
        self.engine: Any = None  # TcpConnection
        self.driver: Optional[ConnectionDriver] = None
        self.port = port  # PacketPort the leg's packets leave by
        self.hop: Any = None  # link-level next hop (Router.next_hop)
        self.opened = False  # the engine was started (server: connect(); client: fed the client's SYN)
        self.established = False  # Connected seen
        self.closed = False  # ConnectionClosed seen
        self.pending = b""  # read from this leg, not yet taken by the other (<= relay_buffer)
        self.eof_seen = False  # this leg's peer sent FIN
        self.eof_sent = False  # send_eof() called on this leg
        self.bytes_relayed = 0  # bytes read from this leg and handed to the other
        self.soft_errors = 0  # ICMP soft errors about this leg's packets
        self.compressor: Any = None  # SCPS header compression of the long leg (stackpep._fast.scpshc)

    def transmit(self, pkts: List[bytes]) -> None:
        # A LISTEN leg has nothing to say until it is opened.
        if self.opened and self.port is not None:
            if self.compressor is not None:
                pkts = self._compressed(pkts)
            self.port.send(pkts, self.hop)

    def _compressed(self, pkts: List[bytes]) -> List[bytes]:
        # what the codec cannot compress (a SYN, ECN bits, ...) goes as plain TCP
        compress = self.compressor.compress
        return [compress(p) or p for p in pkts]

    @property
    def state(self) -> str:
        return self.engine.state if self.engine is not None else "NEW"

    def statistics(self) -> Any:
        """The engine's statistics snapshot (the leg must have its engine: SplitConnection.ready)."""
        return self.engine.statistics()

    def __repr__(self) -> str:
        return f"<{self.name} leg {self.state}>"


class SplitConnection:
    """Legs are indexed by the side of the box they face (CLIENT: the interfaces
    of `interfaces.client`, SERVER: `interfaces.server`), as are the flow key's
    addresses.  Which leg takes the SYN is the connection's own matter: the
    *passive* leg faces the side the SYN arrived from (the connection's client),
    the *active* leg opens towards the other (its server).  A connection opened
    from the server side (`intercept.server_initiated`) has passive = SERVER.

    Slotted: a box holds 10,000 of these (docs/BENCHMARKS-connections.md)."""

    __slots__ = ("ctx", "key", "client_addr", "client_port", "server_addr", "server_port", "immediate",
                 "relay_buffer", "passive", "active", "legs", "scps_conn_id", "scps_fell_back", "zero_rtt",
                 "zero_rtt_at", "phase", "outcome", "held_syn", "backlog", "_ending", "_serving", "timer", "_grid",
                 "_now", "created", "_steady", "_idle_us",
                 "last_activity", "last_soft_error", "cookie", "_resolving")

    def __init__(self, ctx: SplitContext, key: bytes, syn: bytes, arrival_port: Any, from_client: bool = True) -> None:
        self.ctx = ctx
        self.key = key
        self.client_addr, self.client_port, self.server_addr, self.server_port = split_key(key)
        cfg = ctx.config
        self.immediate = cfg.handshake_mode == "immediate"
        self.relay_buffer = cfg.relay_buffer
        self.passive = CLIENT if from_client else SERVER  # the leg that takes the SYN
        self.active = SERVER if from_client else CLIENT  # the leg that connects
        self.legs = [Leg(CLIENT, arrival_port if from_client else None),
                     Leg(SERVER, None if from_client else arrival_port)]
        self.scps_conn_id: Optional[int] = None  # option 20's connection id of the long leg (ScpsLink)
        self.scps_fell_back = False  # the long leg's SYN went again without option 20 (ScpsFallback)
        # Zero-RTT (near box: the connection heads into the link): the client's SYN is
        # answered at once and the long leg waits for the client's first bytes, which
        # ride in its SYN (TCP Fast Open, RFC 7413) -- docs/scps.md "Zero-RTT".
        self.zero_rtt = bool(getattr(cfg, "wan_zero_rtt", False)) and self.active == ctx.wan_side
        if self.zero_rtt:
            self.immediate = True
        self.zero_rtt_at: Optional[int] = None  # µs: open the long leg by then without data
        self.phase = Phase.RESOLVING
        self.outcome: Optional[Outcome] = None
        self.held_syn: Optional[bytes] = syn  # the client's SYN, until the passive leg takes it
        self.backlog: List[bytes] = []  # the active side's packets that arrived while RESOLVING
        self._ending: Optional[trio.CancelScope] = None  # the task's sleep until the end (run)
        self._serving = False  # the engines run: turns are taken (after _start, until the end)
        self.timer = TimerHandle(self)  # its place in ctx.timers
        # the deadlines' grid (µs): the capture ports' hold (capture.hold_us), else 1 (none)
        self._grid = max(1, int(getattr(cfg, "hold_us", TIMER_GRANULARITY_US)))
        self._now = 0  # the time of the current _service turn (for event handlers)
        # both legs established, no bytes pending between them, not ended: a turn may be
        # one C call (split_turn); set at the end of a turn taken the long way
        self._steady = False
        self._idle_us = int(cfg.idle_timeout * 1_000_000)  # limits.idle_timeout
        self.created = now_us()
        self.last_activity = self.created  # µs: last packet received or byte relayed
        self.last_soft_error: Optional[str] = None
        self.cookie: Optional[Tuple[int, bytes, bytes]] = None  # syn-cookie mode: (our ISS, canonical SYN, ACK)
        self._resolving: Optional[trio.CancelScope] = trio.CancelScope()  # None once the routes are known

    @classmethod
    def from_cookie(cls, ctx: SplitContext, key: bytes, iss: int, syn: bytes, ack: bytes,
                    client_port_obj: Any) -> "SplitConnection":
        """handshake.mode "syn-cookie" (stackpep.pep.syncookie): the client's ACK
        returned a valid cookie; the client leg starts established with ISS =
        the cookie, and only now does the server leg open."""
        conn = cls(ctx, key, syn, client_port_obj)
        conn.cookie = (iss, syn, ack)
        return conn

    # -- from the dispatcher ---------------------------------------------------
    def deliver(self, from_client: bool, packet: bytes, flags: int, now: int) -> bool:
        """A packet for one of the legs; True if an engine took it (then a `turn`
        is due: the dispatcher runs it once its batch is delivered).  An opened
        leg's segments mostly do not come this way: the capture hands them to
        the engine in C (stackpep._fast.capture.FastFlows, filled through
        SplitContext.leg_opened), and the dispatcher sets last_activity."""
        self.last_activity = now
        leg = self.legs[CLIENT if from_client else SERVER]
        if leg.opened:  # (the common case first)
            # checked: a port's packets had their checksums verified by the capture
            # (stackpep.io.ports.PacketPort.receive_batch), not summed again here
            leg.engine.receive_packet(packet, now, True)
            return True
        if leg.side == self.passive:
            if flags & eng.TH_SYN and not flags & eng.TH_ACK:
                self.held_syn = packet  # keep the newest retransmission
            elif self.cookie is not None and len(self.backlog) < BACKLOG_LIMIT:
                self.backlog.append(packet)  # syn-cookie: the client is established already
            else:  # before our SYN-ACK it means nothing to a LISTEN leg
                self.ctx.counters["drop_before_client_leg"] += 1
        elif len(self.backlog) < BACKLOG_LIMIT and self.cookie is None:
            self.backlog.append(packet)
        else:
            self.ctx.counters["drop_backlog_full"] += 1
        return False

    def turn(self, now: int) -> None:
        """One turn, run by the dispatcher's loop (after a batch of packets, at the
        connection's deadline, or asked for by `wake`): limits, timers, events,
        relay, output; then the next deadline is filed (ctx.timers), or, once the
        connection has ended, its task is let go.  Nothing while the routes are
        looked up or after the end."""
        if not self._serving:
            return
        if self._steady:
            # The steady state in one C call: the steps below in the same order and with
            # the same effects (split_turn), or None (not the plain case: nothing done).
            client, server = self.legs
            r = split_turn(client.engine, server.engine, now, self.last_activity, self._idle_us, TIMER_SLACK_US,
                           self.relay_buffer, self._grid)
            if r is not None:
                self._now = now
                outcome, pc, ps, moved_c, moved_s, wake = r
                if outcome == TURN_AFTER_TIMERS:  # events to handle: the rest of _service
                    self._service_events(now)
                else:
                    if moved_c or moved_s:
                        client.bytes_relayed += moved_c
                        server.bytes_relayed += moved_s
                        self.last_activity = now
                    if pc:
                        client.transmit(pc)
                    if ps:
                        server.transmit(ps)
                    if outcome == TURN_DONE:
                        self.ctx.timers.schedule(self.timer, wake)
                        return
                    self._after_output()  # TURN_AFTER_OUTPUT
                self._turned()
                return
        self._check_limits(now)
        self._service(now)
        self._turned()

    def _turned(self) -> None:
        """The end of a turn: the next deadline filed, or the task let go."""
        if self.done:
            self._end()
            return
        client, server = self.legs
        self._steady = client.established and server.established and not client.pending and not server.pending
        self.ctx.timers.schedule(self.timer, self._wake_time())

    def wake(self) -> None:
        """Have the dispatcher's loop run a turn at once."""
        if self._serving:
            self.ctx.wake(self)

    def _end(self) -> None:
        """No more turns: the deadline goes, the task ends (run)."""
        self._serving = False
        self.ctx.timers.release(self.timer)
        if self._ending is not None:
            self._ending.cancel()

    def fail(self) -> None:
        """A bug surfaced while handling this connection: reset both legs, end it."""
        try:
            self._finish(Outcome.ERROR, abort=True)
        except Exception:
            log.exception("%s: reset failed too", self)
            if self.outcome is None:
                self.outcome = Outcome.ERROR
                self.phase = Phase.ENDED
        self._end()  # (no further turn: it might fail again)

    def shutdown(self, outcome: Outcome) -> None:
        """Abort both legs (RST to both peers) and end."""
        self._finish(outcome, abort=True)
        if self._resolving is not None:
            self._resolving.cancel()
        self.wake()

    @property
    def done(self) -> bool:
        return self.phase is Phase.ENDED

    @property
    def ready(self) -> bool:
        """The engines exist (the routes are known)."""
        return self.legs[SERVER].engine is not None

    @property
    def lingering(self) -> bool:
        """Both legs are done but one still holds TIME-WAIT (RFC 9293 §3.6.1)."""
        client, server = self.legs
        return (self.legs[self.passive].opened and client.engine.state in _LINGER_NAMES
                and server.engine.state in _LINGER_NAMES)

    @property
    def bytes_relayed(self) -> Tuple[int, int]:
        """(client -> server, server -> client) bytes handed from one leg to the other."""
        return (self.legs[CLIENT].bytes_relayed, self.legs[SERVER].bytes_relayed)

    def leg_states(self) -> List[str]:
        return [leg.engine.state for leg in self.legs] if self.ready else ["NEW", "NEW"]

    def reusable_by_new_syn(self) -> bool:
        """A fresh SYN for this 4-tuple may replace us: both legs are past the
        point where old segments matter to them (RFC 9293 §3.10.7.4, RFC 6191)."""
        return self.done or self.lingering

    # -- the task -----------------------------------------------------------------
    async def run(self) -> Outcome:
        """The connection's whole life; returns how it ended."""
        try:
            assert self._resolving is not None
            with self._resolving:  # shutdown() (an eviction) while RESOLVING cancels the route lookups
                await self._start()
            self._resolving = None
            if not self.done:
                await self._serve()
        except Exception:
            # One connection's failure must not take the box (and every other
            # connection) down with it.
            log.exception("%s failed; resetting both legs", self)
            self.fail()
        finally:
            if self.outcome is None:
                self._finish(Outcome.SHUTDOWN, abort=True)
            self._end()
            if self.scps_conn_id is not None:
                self.ctx.scps.release_conn_id(self.scps_conn_id)
                self.scps_conn_id = None
            for leg in self.legs:
                if leg.compressor is not None:
                    leg.compressor.close()  # drops the receive context
                    leg.compressor = None
        assert self.outcome is not None
        return self.outcome

    async def _start(self) -> None:
        client, server = self.legs
        passive, active = self.legs[self.passive], self.legs[self.active]
        try:
            # the active leg leaves by the route to its peer; the passive one answers
            # by the interface the SYN came in on, or by the route back if none
            active.port, active.hop = await self.ctx.next_hop(self._peer_addr(active))
            pport, passive.hop = await self.ctx.next_hop(self._peer_addr(passive))
            if passive.port is None:
                passive.port = pport
        except LookupError as exc:
            log.info("no route for %s: %s", self, exc)
            self._finish(Outcome.NO_ROUTE, abort=False)
            return
        if self.done:  # evicted or shut down while the routes were looked up: open nothing
            return
        # The client leg's engine speaks as the server and the server leg's as the client.
        client.engine = eng.new_connection(self._engine_config(client), self.server_addr,
                                           self.server_port, self.client_addr, self.client_port,
                                           _iss() if self.cookie is None else self.cookie[0])
        server.engine = eng.new_connection(self._engine_config(server), self.client_addr,
                                           self.client_port, self.server_addr, self.server_port, _iss())
        for leg in self.legs:
            leg.driver = ConnectionDriver(leg.engine, self._event_handler(leg), leg.transmit)
        passive.engine.listen()
        now = now_us()
        self.phase = Phase.OPENING
        if self.cookie is not None:  # (syn-cookie mode: passive is the client leg)
            if not self.zero_rtt:
                self._open_active_leg(now)
            self._start_client_leg_from_cookie(now)
        elif self.zero_rtt:
            self._start_passive_leg(now)  # the long leg opens with the client's first bytes
        else:
            self._open_active_leg(now)
            if self.immediate:
                self._start_passive_leg(now)

    def _open_active_leg(self, now: int, fast_open: bool = False) -> None:
        active = self.legs[self.active]
        active.opened = True
        if self.cookie is None:  # (in syn-cookie mode the backlog is the client's)
            for pkt in self.backlog:
                active.engine.receive_packet(pkt, now)
            self.backlog = []
        active.engine.connect(now, scps_offer=self._scps_offer(active, now), fast_open=fast_open)
        if self.ctx.leg_opened is not None:
            self.ctx.leg_opened(self, active.side)

    def _peer_addr(self, leg: Leg) -> bytes:
        return self.client_addr if leg.side == CLIENT else self.server_addr

    def _engine_config(self, leg: Leg) -> Any:
        """The leg's TcpConfig for its egress MTU; the long leg's with SCPS-TP and a
        connection id of its own when the box has SCPS on (stackpep.pep.scps)."""
        cfg = self.ctx.leg_config(leg.side, getattr(leg.hop, "mtu", None))
        scps = self.ctx.scps
        if scps is not None and leg.side == self.ctx.wan_side:
            self.scps_conn_id = scps.allocate_conn_id()
            cfg = scps.leg_config(cfg, self.scps_conn_id)
        return cfg

    def _start_passive_leg(self, now: int) -> None:
        passive = self.legs[self.passive]
        passive.opened = True
        if self.phase is Phase.OPENING:
            self.phase = Phase.RELAYING
        if self.held_syn is not None:
            passive.engine.receive_packet(self.held_syn, now)
            self.held_syn = None
        if self.ctx.leg_opened is not None:
            self.ctx.leg_opened(self, passive.side)

    # -- zero-RTT on the near box (TCP Fast Open, RFC 7413) ------------------------------
    def _zero_rtt_due(self, now: int) -> bool:
        """The long leg is still to be opened and now is the time: the client's first
        bytes (or its FIN) are here, or it sent nothing for `zero_rtt_wait` after its
        handshake (a protocol where the server speaks first)."""
        if not self.zero_rtt or self.legs[self.active].opened or self.done:
            return False
        client = self.legs[self.passive].engine
        if client.recv_available() or client.at_eof():
            return True
        return self.zero_rtt_at is not None and now >= self.zero_rtt_at

    def _zero_rtt_open(self, now: int) -> None:
        """Open the long leg: the client's first bytes go into its send buffer before
        connect(), so the SYN carries them (as many as tfo_max_syn_data allows; the
        rest follow the handshake).  The far box's cookie check decides whether it
        takes them; if not, the engine sends them again as ordinary data."""
        passive, active = self.legs[self.passive], self.legs[self.active]
        c = self.ctx.counters
        src = passive.engine
        data = src.recv(min(active.engine.send_space(), self.relay_buffer))
        if data:
            n = active.engine.send(data)
            passive.pending = data[n:]
            passive.bytes_relayed += n
            c["zero_rtt_syn_data"] += 1
        else:
            c["zero_rtt_no_data"] += 1
        self._open_active_leg(now, fast_open=bool(data))

    def _on_fast_open(self, leg: Leg, ev: TcpEvent) -> None:
        c = self.ctx.counters
        if isinstance(ev, FastOpenAccepted):  # far box: the near box's SYN brought n bytes
            c["zero_rtt_accepted"] += 1
        elif isinstance(ev, FastOpenResult) and ev.sent:
            c["zero_rtt_syn_data_acked" if ev.acked >= ev.sent else "zero_rtt_syn_data_not_acked"] += 1

    def extra_deadline(self) -> Optional[int]:
        """A deadline of the split connection itself (µs), beside its engines'."""
        if self.zero_rtt and not self.legs[self.active].opened:
            return self.zero_rtt_at
        return None

    # -- SCPS-TP on the long leg (stackpep.pep.scps) ---------------------------------
    def _scps_offer(self, leg: Leg, now: int) -> bool:
        """Whether the SYN of (active) leg carries option 20: only on the long leg, and
        not towards a destination that refused it lately (ScpsRefusals)."""
        scps = self.ctx.scps
        if scps is None or leg.side != self.ctx.wan_side:
            return True  # (an engine without ScpsSettings offers nothing anyway)
        if not scps.offer_to(self._peer_addr(leg), now):
            return False
        self.ctx.counters["scps_offered"] += 1
        return True

    def _on_scps_event(self, leg: Leg, ev: TcpEvent) -> None:
        """ScpsNegotiated / ScpsFallback of the long leg (CCSDS 714.0-B-2, notes "Peer detection")."""
        scps = self.ctx.scps
        if scps is None:
            return
        c = self.ctx.counters
        if isinstance(ev, ScpsNegotiated):
            if leg.side == self.passive:
                c["scps_offered"] += 1  # the far end's SYN offered it; our SYN-ACK answers
            c["scps_peers"] += 1
            if ev.features & SCPS_COMPRESS and self.scps_conn_id is not None:
                local, remote = leg.engine.local_addr, leg.engine.remote_addr
                leg.compressor = scps.compressor(local, remote, leg.engine.local_port, leg.engine.remote_port,
                                                 self.scps_conn_id, ev.peer_conn_id)
            log.debug("%s: %s leg: SCPS peer, features 0x%02x, its conn id %d", self, leg.name, ev.features,
                      ev.peer_conn_id)
        elif isinstance(ev, ScpsFallback):
            # Remembered only once the SYN without the option gets through (_scps_connected):
            # a RST may just be a refusal (a far box relays the server's), not about option 20.
            self.scps_fell_back = True
            self.ctx.counters["scps_fallbacks"] += 1
            log.info("%s: %s leg: SYN with option 20 met %s; retrying without it", self, leg.name,
                     "a reset" if ev.reason == "rst" else "silence")

    def _scps_connected(self, leg: Leg) -> None:
        if self.ctx.scps is not None and leg.side == self.ctx.wan_side and not leg.engine.scps_peer:
            self.ctx.counters["scps_one_sided"] += 1
            if self.scps_fell_back:
                self.ctx.scps.remember_refusal(self._peer_addr(leg), self._now)

    def _start_client_leg_from_cookie(self, now: int) -> None:
        """The client leg replays its own stateless answer: the canonical SYN
        makes it SYN-RECEIVED with the cookie as ISS, the SYN-ACK it would send
        again is dropped (the client has it), and the client's ACK (maybe with
        data) establishes it (RFC 4987 §3.6)."""
        assert self.cookie is not None
        client = self.legs[CLIENT]
        _, syn, ack = self.cookie
        self.held_syn = syn
        self._start_passive_leg(now)
        client.engine.packets_to_send(now)  # the SYN-ACK the cookie already said
        client.engine.receive_packet(ack, now)
        for pkt in self.backlog:  # what the client sent while the routes were looked up
            client.engine.receive_packet(pkt, now)
        self.backlog = []

    async def _serve(self) -> None:
        """The engines run: the dispatcher's loop takes the turns (the first one at
        once), and this task sleeps until the connection has ended (`_end`).  No
        timed sleep here: an idle or embryonic connection costs nothing until its
        deadline comes up in the box's timer heap."""
        with trio.CancelScope() as scope:  # (no deadline: never in trio's deadline heap)
            self._ending = scope
            self._serving = True
            self.ctx.wake(self)
            await trio.sleep_forever()
        self._ending = None

    def _wake_time(self) -> Optional[int]:
        """When the next turn is due (µs, None: no deadline): the earliest
        deadline, rounded up to the wake-up grid (TIMER_GRANULARITY_US)."""
        deadline = self._limit_deadline()
        for leg in self.legs:
            t = leg.engine.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        if self.zero_rtt:
            t = self.extra_deadline()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        if deadline is None:
            return None
        g = self._grid
        return (deadline + g - 1) // g * g

    @property
    def embryonic(self) -> bool:
        """Not yet established on both legs (and not ended): the state a SYN
        flood makes, the first the dispatcher evicts."""
        return not self.done and not (self.legs[CLIENT].established and self.legs[SERVER].established)

    @property
    def awaits_peer(self) -> bool:
        """Our SYN-ACK went to the one who opened (the passive leg is started) and its
        ACK has not come: what a spoofed SYN leaves behind.  A real client answers
        within a round trip; one still waiting for the server is not suspect."""
        leg = self.legs[self.passive]
        return leg.opened and not leg.established and not self.done

    def _limit_deadline(self) -> Optional[int]:
        """When the connection's own limit runs out (µs): the handshake timeout
        while embryonic, then the idle timeout; None while only TIME-WAIT is left
        (it ends by itself)."""
        cfg = self.ctx.config
        if self.embryonic:
            return self.created + int(cfg.handshake_timeout * 1_000_000)
        if self.lingering:
            return None
        return self.last_activity + int(cfg.idle_timeout * 1_000_000)

    def _check_limits(self, now: int) -> None:
        """End the connection if its handshake or idle limit ran out by `now`."""
        if self.done:
            return
        if not self.embryonic and now + TIMER_SLACK_US < self.last_activity + int(
                self.ctx.config.idle_timeout * 1_000_000):
            return  # the common case: active, far from the idle limit (lingering not looked at)
        deadline = self._limit_deadline()
        if deadline is None or now + TIMER_SLACK_US < deadline:
            return
        if self.embryonic:
            log.info("%s: handshake timeout%s", self, self._soft_error_note())
            # A silent server means the client's own connect timeout, as without a
            # proxy: a client whose SYN we never answered hears nothing; a client
            # leg we did answer gets RST.
            self._finish(Outcome.HANDSHAKE_TIMEOUT, abort=True)
        else:
            log.info("%s: idle for %.1f s, resetting both legs", self, (now - self.last_activity) / 1e6)
            self._finish(Outcome.IDLE_TIMEOUT, abort=True)

    # -- the work ------------------------------------------------------------------
    def _service(self, now: int) -> None:
        """One turn: timers, events, relay both ways, output, events again."""
        self._now = now
        client, server = self.legs
        ce, se = client.engine, server.engine
        t = ce.get_timer()
        if t is not None and t <= now + TIMER_SLACK_US:
            ce.handle_timer(now if now > t else t)
        t = se.get_timer()
        if t is not None and t <= now + TIMER_SLACK_US:
            se.handle_timer(now if now > t else t)
        self._service_events(now)

    def _service_events(self, now: int) -> None:
        """The turn after the timers: events, relay both ways, output, events again."""
        client, server = self.legs
        if self._drain(client) or self.done:
            self._flush(now)
            return
        if self._drain(server) or self.done:
            self._flush(now)
            return
        if self.zero_rtt and self._zero_rtt_due(now):
            self._zero_rtt_open(now)
        self._relay(client, server)
        self._relay(server, client)
        self._flush(now)
        self._after_output()

    def _after_output(self) -> None:
        # Output can complete a close (e.g. the last ACK): look at events once more.
        client, server = self.legs
        self._drain(client)
        self._drain(server)
        if client.closed and server.closed and not self.done:
            self._finish(Outcome.CLOSED, abort=False)

    def _drain(self, leg: Leg) -> bool:
        """The leg's events into _on_event (as its driver's drain_events), passing
        over DataReadable and SendSpace in C: the relay looks at both buffers
        every turn.  True if _on_event stopped it (the connection is ending)."""
        nxt = leg.engine.next_event_not_flow
        ev = nxt()
        while ev is not None:
            if self._on_event(leg, ev):
                return True
            ev = nxt()
        return False

    def _event_handler(self, leg: Leg) -> Callable[[TcpEvent], bool]:
        def on_event(ev: TcpEvent) -> bool:
            return self._on_event(leg, ev)
        return on_event

    def _on_event(self, leg: Leg, ev: TcpEvent) -> bool:
        """What one leg's event means to the split connection; True stops the
        drain of that leg for this turn (the connection is ending)."""
        if isinstance(ev, (DataReadable, SendSpace)):
            return False  # the relay looks at both buffers every turn
        if isinstance(ev, Connected):
            leg.established = True
            if not self.embryonic:
                self._handshake_done()
            self._scps_connected(leg)
            if self.zero_rtt and leg.side == self.passive:
                self.zero_rtt_at = self._now + int(self.ctx.config.wan_zero_rtt_wait * 1_000_000)
            if leg.side == self.active and not self.legs[self.passive].opened:
                self._start_passive_leg(self._now)
            return False
        if isinstance(ev, EofReceived):
            leg.eof_seen = True
            return False
        if isinstance(ev, ConnectionReset):
            if leg.side == self.active and not leg.established:
                self._refused(self._now)
            else:
                self._finish(self._reset_by(leg), abort=True)
            return True
        if isinstance(ev, ConnectionClosed):
            leg.closed = True
            reason = ev.reason
            if self.done or reason is CloseReason.NORMAL:
                return False
            if leg.side == self.active and not leg.established:
                if reason is CloseReason.REFUSED or reason is CloseReason.RESET:
                    self._refused(self._now)
                else:  # SYN retries ran out: the server is silent
                    log.info("%s: server leg SYN retries ran out%s", self, self._soft_error_note())
                    self._finish(Outcome.HANDSHAKE_TIMEOUT, abort=True)
            elif reason is CloseReason.TIMEOUT or reason is CloseReason.KEEPALIVE:
                # retransmissions exhausted on one leg (RFC 9293 §3.8.3): reset the other
                log.info("%s: %s leg timed out%s", self, leg.name, self._soft_error_note())
                self._finish(Outcome.LEG_TIMEOUT, abort=True)
            else:
                self._finish(self._reset_by(leg), abort=True)
            return True
        if isinstance(ev, (ScpsNegotiated, ScpsFallback)):
            self._on_scps_event(leg, ev)
        elif isinstance(ev, (FastOpenAccepted, FastOpenResult)):
            self._on_fast_open(leg, ev)
        return False

    def _reset_by(self, leg: Leg) -> Outcome:
        # "client" is the end that opened the connection, whichever side it is on
        return Outcome.RESET_BY_CLIENT if leg.side == self.passive else Outcome.RESET_BY_SERVER

    def _handshake_done(self) -> None:
        """Both legs established: no longer embryonic (the dispatcher's admission)."""
        if self.ctx.handshake_done is not None:
            self.ctx.handshake_done(self)

    def _refused(self, now: int) -> None:
        """The server answered our SYN with RST: the client gets RST too (RFC 9293
        §3.10.7.1), from the client leg if it already answered, else crafted for its SYN."""
        client = self.legs[self.passive]
        if client.opened:
            client.engine.abort()
        elif self.held_syn is not None:
            rst = reset_for(self.held_syn)
            if rst is not None:
                client.port.send([rst], client.hop)
        self._finish(Outcome.REFUSED, abort=False)

    def _relay(self, src: Leg, dst: Leg) -> None:
        """Move bytes from src's receive buffer into dst's send buffer, never
        more than dst can take (so nothing piles up in between), in chunks of
        at most relay_buffer; then pass a FIN on once everything before it went."""
        d = dst.engine
        if dst.eof_sent or not d.may_send():
            return
        s = src.engine
        moved = 0
        pend = src.pending
        if pend:
            n = d.send(pend)
            moved += n
            pend = pend[n:]
        if not pend:
            # receive buffer straight into send buffer, as much as d takes, in C
            moved += s.relay_to(d, self.relay_buffer)
        src.pending = pend
        if moved:
            src.bytes_relayed += moved
            self.last_activity = self._now
        if not pend and s.at_eof() and dst.established:
            # Every byte before the FIN went on: pass the FIN on (half-close, RFC 9293 §3.6);
            # not before the leg is ESTABLISHED (send_eof() in SYN-SENT closes it unsent,
            # RFC 9293 §3.10.4: the client's FIN waits, e.g. behind zero-RTT data in the SYN).
            d.send_eof()
            dst.eof_sent = True

    def _flush(self, now: int) -> None:
        if self.ready:
            for leg in self.legs:
                pkts = leg.engine.packets_to_send(now)
                if pkts:
                    leg.transmit(pkts)

    def _finish(self, outcome: Outcome, abort: bool) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.phase = Phase.ENDED
        self._steady = False
        self.ctx.report(self, outcome)
        if abort and self.ready:
            for leg in self.legs:
                if leg.opened and leg.engine.tcp_state not in _QUIET_STATES:
                    leg.engine.abort()
        self._flush(now_us())

    # -- ICMP errors (stackpep.pep.icmp) -----------------------------------------------
    def icmp_error(self, i: int, err: Any, now: int) -> None:
        """An ICMP error about a packet leg i sent, already rate-limited and parsed."""
        c = self.ctx.counters
        leg = self.legs[i]
        if not leg.opened:
            c["icmp_drop_not_ready"] += 1
            return
        engine = leg.engine
        if not self.ctx.icmp_validate(err, engine):
            return
        name = leg.name
        if err.packet_too_big:
            # RFC 1191 §6.1 / RFC 8201 §4: a smaller MSS, and what was lost resent at once
            if engine.icmp_packet_too_big(err.path_mtu(), now, err.quoted_seq):
                c[f"icmp_ptb_{name}_leg"] += 1
                log.info("%s: %s leg path MTU lowered to %d (%s)", self, name, err.path_mtu(), err.describe())
                self.wake()
            else:
                c["icmp_ptb_no_change"] += 1
            return
        # RFC 1122 §4.2.3.9 / RFC 5461 §4: soft, even the "hard" codes in synchronized
        # states; the leg's own retransmission timeout decides.
        leg.soft_errors += 1
        self.last_soft_error = f"{name} leg: {err.describe()}"
        c[f"icmp_soft_error_{name}_leg"] += 1

    def _soft_error_note(self) -> str:
        if self.last_soft_error is None:
            return ""
        total = sum(leg.soft_errors for leg in self.legs)
        return f" (last ICMP error: {self.last_soft_error}, {total} in all)"

    def __repr__(self) -> str:
        import ipaddress

        c = ipaddress.ip_address(self.client_addr)
        s = ipaddress.ip_address(self.server_addr)
        return f"<split [{c}]:{self.client_port} -> [{s}]:{self.server_port}>"
