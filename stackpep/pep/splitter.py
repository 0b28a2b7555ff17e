"""One split connection: the client's TCP connection terminated by one engine,
a second connection to the server opened by another, bytes relayed between.

The client leg's engine uses the *server's* address and port as its local
address and the server leg's engine the *client's*, so every packet on both
sides carries only the original addresses (a transparent proxy; RFC 3135 §2.4
calls this a split-connection TCP PEP).

Structure (trio): `SplitConnection.run()` is one nursery owning both engines,
with two tasks: the pump (engine timers, events, relay, output) and the
watchdog (handshake and idle timeouts).  The dispatcher feeds received packets
straight into the engines (`deliver`) and wakes the pump once per batch.

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
from typing import TYPE_CHECKING, Optional

import trio

from stackpep._fast.capture import split_key
from stackpep.pep import engine as eng
from stackpep.pep.reset import reset_for

if TYPE_CHECKING:  # pragma: no cover
    from stackpep.pep.dispatcher import Dispatcher

log = logging.getLogger("stackpep.pep")

CLIENT, SERVER = 0, 1
LEG_NAMES = ("client", "server")


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
    ERROR = "error"  # a bug surfaced in this connection: logged, both legs reset, the box goes on


def now_us() -> int:
    return int(trio.current_time() * 1_000_000)


def _iss() -> int:
    # RFC 6528: unpredictable initial sequence numbers (the engine takes ISS in).
    return int.from_bytes(os.urandom(4), "big")


class SplitConnection:
    def __init__(self, disp: "Dispatcher", key: bytes, syn: bytes, client_port_obj) -> None:
        self.disp = disp
        self.key = key
        self.client_addr, self.client_port, self.server_addr, self.server_port = split_key(key)
        cfg = disp.config
        self.immediate = cfg.handshake_mode == "immediate"
        self.relay_buffer = cfg.relay_buffer
        # The engines are made once the routes (and so the MTUs) are known: _start().
        self.legs: list = []
        self.held_syn: Optional[bytes] = syn  # the client's SYN, until the leg takes it
        self.client_started = False
        self.ports = [client_port_obj, None]
        self.hops = [None, None]
        self.pending = [b"", b""]  # relay buffer per direction: index = source leg
        self.eof_seen = [False, False]  # FIN received on that leg
        self.eof_sent = [False, False]  # send_eof() called on that leg
        self.established = [False, False]
        self.closed = [False, False]
        self.outcome: Optional[Outcome] = None
        self.bytes_relayed = [0, 0]
        self._wake = trio.Event()
        self.created = now_us()
        self.last_activity = self.created  # µs: last packet received or byte relayed
        self.backlog: list = []  # packets that arrived before the routes were known
        self.ready = False  # routes known, server leg opened
        self.soft_errors = [0, 0]  # ICMP soft errors per leg
        self.last_soft_error: Optional[str] = None

    # -- from the dispatcher ---------------------------------------------------
    def deliver(self, from_client: bool, packet: bytes, flags: int, now: int) -> None:
        self.last_activity = now
        if from_client and not self.client_started:
            if flags & eng.TH_SYN and not flags & eng.TH_ACK:
                self.held_syn = packet  # keep the newest retransmission
            # Anything else before our SYN-ACK means nothing to a LISTEN leg.
            return
        if not self.ready:
            self.backlog.append((from_client, packet))
            return
        self.legs[CLIENT if from_client else SERVER].receive_packet(packet, now)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def fail(self) -> None:
        """A bug surfaced while handling this connection: reset both legs, end it."""
        try:
            self._finish(Outcome.ERROR, abort=True)
        except Exception:
            log.exception("%s: reset failed too", self)
            if self.outcome is None:
                self.outcome = Outcome.ERROR
        self._wake.set()

    def shutdown(self, outcome: Outcome) -> None:
        """Abort both legs (RST to both peers) and end."""
        self._finish(outcome, abort=True)
        self._wake.set()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def lingering(self) -> bool:
        """Both legs are done but one still holds TIME-WAIT (RFC 9293 §3.6.1)."""
        return self.client_started and all(leg.state in ("TIME-WAIT", "CLOSED") for leg in self.legs)

    def leg_states(self):
        return [leg.state for leg in self.legs] if self.legs else ["NEW", "NEW"]

    def reusable_by_new_syn(self) -> bool:
        """A fresh SYN for this 4-tuple may replace us: both legs are past the
        point where old segments matter to them (RFC 9293 §3.10.7.4, RFC 6191)."""
        return self.done or (self.client_started and all(leg.state in ("TIME-WAIT", "CLOSED") for leg in self.legs))

    # -- the nursery -------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._start()
            if not self.done:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, nursery.cancel_scope)
                    nursery.start_soon(self._watchdog, nursery.cancel_scope)
        except Exception:
            # One connection's failure must not take the box (and every other
            # connection) down with it.
            log.exception("%s failed; resetting both legs", self)
            self.fail()
        finally:
            if self.outcome is None:
                self._finish(Outcome.SHUTDOWN, abort=True)
            self.disp.connection_ended(self)

    async def _start(self) -> None:
        try:
            self.ports[SERVER], self.hops[SERVER] = await self.disp.router.next_hop(self.server_addr)
            cport, self.hops[CLIENT] = await self.disp.router.next_hop(self.client_addr)
            if self.ports[CLIENT] is None:
                self.ports[CLIENT] = cport
        except LookupError as exc:
            log.info("no route for %s: %s", self, exc)
            self._finish(Outcome.NO_ROUTE, abort=False)
            return
        d = self.disp
        self.legs = [
            eng.new_connection(d.leg_config(CLIENT, getattr(self.hops[CLIENT], "mtu", None)), self.server_addr,
                               self.server_port, self.client_addr, self.client_port, _iss()),
            eng.new_connection(d.leg_config(SERVER, getattr(self.hops[SERVER], "mtu", None)), self.client_addr,
                               self.client_port, self.server_addr, self.server_port, _iss()),
        ]
        self.legs[CLIENT].listen()
        now = now_us()
        for from_client, pkt in self.backlog:
            self.legs[CLIENT if from_client else SERVER].receive_packet(pkt, now)
        self.backlog = []
        self.ready = True
        self.legs[SERVER].connect(now)
        if self.immediate:
            self._start_client_leg(now)

    def _start_client_leg(self, now: int) -> None:
        self.client_started = True
        if self.held_syn is not None:
            self.legs[CLIENT].receive_packet(self.held_syn, now)
            self.held_syn = None

    async def _pump(self, scope: trio.CancelScope) -> None:
        while True:
            self._service(now_us())
            if self.done:
                scope.cancel()
                return
            deadline = None
            for leg in self.legs:
                t = leg.get_timer()
                if t is not None and (deadline is None or t < deadline):
                    deadline = t
            with trio.move_on_at(deadline / 1_000_000 if deadline is not None else float("inf")):
                await self._wake.wait()
            self._wake = trio.Event()

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        cfg = self.disp.config
        with trio.move_on_at(self.created / 1e6 + cfg.handshake_timeout):
            while not (self.established[SERVER] and self.established[CLIENT]):
                await trio.sleep(0.02)
        if not (self.established[SERVER] and self.established[CLIENT]):
            if not self.done:
                log.info("%s: handshake timeout%s", self, self._soft_error_note())
                # A silent server means the client's own connect timeout, as without a
                # proxy: a client whose SYN we never answered hears nothing; a client
                # leg we did answer gets RST.
                self._finish(Outcome.HANDSHAKE_TIMEOUT, abort=True)
                self._wake.set()
            return
        idle_us = int(cfg.idle_timeout * 1e6)
        while not self.done:
            idle_for = now_us() - self.last_activity
            if self.lingering:
                # closed both ways; only TIME-WAIT is left, which ends by itself
                self.last_activity = now_us()
            elif idle_for >= idle_us:
                log.info("%s: idle for %.1f s, resetting both legs", self, idle_for / 1e6)
                self._finish(Outcome.IDLE_TIMEOUT, abort=True)
                self._wake.set()
                return
            await trio.sleep((idle_us - idle_for) / 1e6 + 0.001)

    # -- the work ------------------------------------------------------------------
    def _service(self, now: int) -> None:
        legs = self.legs
        for leg in legs:
            t = leg.get_timer()
            if t is not None and t <= now + 1:
                # float seconds -> int µs may round just below the deadline
                leg.handle_timer(max(now, t))
        for i in (CLIENT, SERVER):
            self._events(i, now)
            if self.done:
                self._flush(now)
                return
        self._relay(CLIENT, SERVER)
        self._relay(SERVER, CLIENT)
        self._flush(now)
        # Output can complete a close (e.g. the last ACK): look at events once more.
        for i in (CLIENT, SERVER):
            self._events(i, now)
        if self.closed[CLIENT] and self.closed[SERVER] and not self.done:
            self._finish(Outcome.CLOSED, abort=False)

    def _events(self, i: int, now: int) -> None:
        leg = self.legs[i]
        while True:
            ev = leg.next_event()
            if ev is None:
                return
            kind = eng.classify(ev)
            if kind == eng.EV_CONNECTED:
                self.established[i] = True
                if i == SERVER and not self.client_started:
                    self._start_client_leg(now)
            elif kind == eng.EV_EOF:
                self.eof_seen[i] = True
            elif kind == eng.EV_RESET:
                if i == SERVER and not self.established[SERVER]:
                    self._refused(now)
                else:
                    self._finish(Outcome.RESET_BY_CLIENT if i == CLIENT else Outcome.RESET_BY_SERVER, abort=True)
                return
            elif kind == eng.EV_CLOSED:
                self.closed[i] = True
                reason = eng.close_reason(ev)
                if self.done or reason == "normal":
                    continue
                if i == SERVER and not self.established[SERVER]:
                    if reason in ("refused", "reset"):
                        self._refused(now)
                    else:  # SYN retries ran out: the server is silent
                        log.info("%s: server leg SYN retries ran out%s", self, self._soft_error_note())
                        self._finish(Outcome.HANDSHAKE_TIMEOUT, abort=True)
                elif reason in ("timeout", "keepalive"):
                    # retransmissions exhausted on one leg (RFC 9293 §3.8.3): reset the other
                    log.info("%s: %s leg timed out%s", self, LEG_NAMES[i], self._soft_error_note())
                    self._finish(Outcome.LEG_TIMEOUT, abort=True)
                else:
                    self._finish(Outcome.RESET_BY_CLIENT if i == CLIENT else Outcome.RESET_BY_SERVER, abort=True)
                return

    def _refused(self, now: int) -> None:
        """The server answered our SYN with RST: the client gets RST too (RFC 9293
        §3.10.7.1), from the client leg if it already answered, else crafted for its SYN."""
        if self.client_started:
            self.legs[CLIENT].abort()
        elif self.held_syn is not None:
            rst = reset_for(self.held_syn)
            if rst is not None:
                self.ports[CLIENT].send([rst], self.hops[CLIENT])
        self._finish(Outcome.REFUSED, abort=False)

    def _relay(self, src: int, dst: int) -> None:
        """Move bytes from src's receive buffer into dst's send buffer, never
        more than dst can take (so nothing piles up in between), in chunks of
        at most relay_buffer; then pass a FIN on once everything before it went."""
        s, d = self.legs[src], self.legs[dst]
        if self.eof_sent[dst] or not eng.can_send(d):
            return
        moved = 0
        pend = self.pending[src]
        if pend:
            n = d.send(pend)
            moved += n
            pend = pend[n:]
        if not pend:
            space = d.send_space()
            chunk = self.relay_buffer
            while space > 0:
                data = s.recv(space if space < chunk else chunk)
                if not data:
                    break
                n = d.send(data)
                moved += n
                space -= n
                if n < len(data):  # the engine took less than it said it had room for
                    pend = data[n:]
                    break
        self.pending[src] = pend
        if moved:
            self.bytes_relayed[src] += moved
            self.last_activity = now_us()
        if not pend and s.at_eof():
            # Every byte before the FIN went on: pass the FIN on (half-close, RFC 9293 §3.6).
            d.send_eof()
            self.eof_sent[dst] = True

    def _flush(self, now: int) -> None:
        if not self.ready:
            return
        for i in (CLIENT, SERVER):
            pkts = self.legs[i].packets_to_send(now)
            if pkts and self.ports[i] is not None:
                if i == CLIENT and not self.client_started:
                    continue  # a LISTEN leg has nothing to say
                self.ports[i].send(pkts, self.hops[i])

    def _finish(self, outcome: Outcome, abort: bool) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self.disp.counters[f"ended_{outcome.value}"] += 1
        if abort and self.legs:
            for i, leg in enumerate(self.legs):
                if i == CLIENT and not self.client_started:
                    continue
                if leg.state not in ("CLOSED", "TIME-WAIT", "LISTEN"):
                    leg.abort()
        self._flush(now_us())

    # -- ICMP errors (stackpep.pep.icmp) -----------------------------------------------
    def icmp_error(self, i: int, err, now: int) -> None:
        """An ICMP error about a packet leg i sent, already rate-limited and parsed."""
        c = self.disp.counters
        if not self.ready or (i == CLIENT and not self.client_started):
            c["icmp_drop_not_ready"] += 1
            return
        leg = self.legs[i]
        if not self.disp.icmp.validate(err, leg):
            return
        name = LEG_NAMES[i]
        if err.packet_too_big:
            # RFC 1191 §6.1 / RFC 8201 §4: a smaller MSS, and what was lost resent at once
            if leg.icmp_packet_too_big(err.path_mtu(), now, err.quoted_seq):
                c[f"icmp_ptb_{name}_leg"] += 1
                log.info("%s: %s leg path MTU lowered to %d (%s)", self, name, err.path_mtu(), err.describe())
                self._wake.set()
            else:
                c["icmp_ptb_no_change"] += 1
            return
        # RFC 1122 §4.2.3.9 / RFC 5461 §4: soft, even the "hard" codes in synchronized
        # states; the leg's own retransmission timeout decides.
        self.soft_errors[i] += 1
        self.last_soft_error = f"{name} leg: {err.describe()}"
        c[f"icmp_soft_error_{name}_leg"] += 1

    def _soft_error_note(self) -> str:
        if self.last_soft_error is None:
            return ""
        return f" (last ICMP error: {self.last_soft_error}, {sum(self.soft_errors)} in all)"

    def __repr__(self) -> str:
        import ipaddress

        c = ipaddress.ip_address(self.client_addr)
        s = ipaddress.ip_address(self.server_addr)
        return f"<split [{c}]:{self.client_port} -> [{s}]:{self.server_port}>"
