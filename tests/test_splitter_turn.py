"""A split connection's steady-state turn in one C call (stackpep._fast.tcp.split_turn,
taken by SplitConnection.turn while both legs are established; issue 11, "Cost per
byte at satellite rates") does exactly what the turn taken step by step in Python
does: the same packets out of both legs, the same deadlines filed, the same bytes
relayed and the same last activity, turn by turn, on scripted exchanges through a
real SplitConnection between two in-memory peers (benchmarks/turn.py SplitPair;
600 ms long link, virtual time, 4 ms wake-up grid) -- bulk both ways with losses
and an outage (SACK recovery and retransmission timeouts fired inside the C call),
a FIN each way, a RST, the idle limit, header compression on the long leg."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from stackpep._fast import tcp
from stackpep.pep import splitter
from stackpep.pep.splitter import CLIENT, SERVER, Outcome

_spec = importlib.util.spec_from_file_location("turn_bench", Path(__file__).parents[1] / "benchmarks" / "turn.py")
turn_bench = importlib.util.module_from_spec(_spec)
sys.modules["turn_bench"] = turn_bench
_spec.loader.exec_module(turn_bench)

GRID = 4000  # µs: capture.hold_us with [wan] (rtt 0.6 s)


class Calls:
    """split_turn as SplitConnection.turn sees it: the real one (fast) or one that
    always declines (slow: every turn the long way); what it answered, counted."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.outcomes = {"none": 0, tcp.TURN_DONE: 0, tcp.TURN_AFTER_TIMERS: 0, tcp.TURN_AFTER_OUTPUT: 0}
        self.timeouts_inside = 0  # RTOs fired by split_turn (a leg's `timeouts` grew in the call)

    def __call__(self, ce, se, *args):
        if not self.fast:
            self.outcomes["none"] += 1
            return None
        before = ce.statistics().timeouts + se.statistics().timeouts
        r = tcp.split_turn(ce, se, *args)
        self.outcomes["none" if r is None else r[0]] += 1
        if r is not None:
            self.timeouts_inside += ce.statistics().timeouts + se.statistics().timeouts - before
        return r


class Compressor:
    """A stand-in for the long leg's SCPS header compression: marks what it "compresses"
    (data segments), leaves the rest (Leg._compressed sends those plain)."""

    def __init__(self) -> None:
        self.compressed = 0

    def compress(self, p: bytes):
        if len(p) < 200:
            return None
        self.compressed += 1
        return b"HC" + p

    def expand(self, p: bytes) -> bytes:
        return p[2:] if p[:2] == b"HC" else p

    def close(self) -> None:
        pass


def run(monkeypatch, fast: bool, script, steps: int, limits=None, compressor=None, drop=None):
    """The scripted exchange; returns (trace, calls, pair).  One trace row a wake-up:
    what each leg sent, the deadline filed, bytes relayed, last activity, leg states,
    the outcome."""
    calls = Calls(fast)
    monkeypatch.setattr(splitter, "split_turn", calls)
    monkeypatch.setattr(splitter, "_iss", lambda: 0x10000000)
    trace = []
    box = {}

    async def main():
        pair = turn_bench.SplitPair(turn_bench.pep_config(50, 0.6, **(limits or {})), long_delay_us=300_000,
                                    compressor=compressor)
        box["pair"] = pair
        assert pair.config.hold_us == GRID
        await pair.open(0)
        conn = pair.conn
        assert not conn.embryonic and conn.leg_states() == ["ESTABLISHED", "ESTABLISHED"]
        now = 1_000_000
        lose = drop() if drop else None
        for i in range(steps):
            now += GRID
            up, down = script(i, pair)
            turned = pair.step(now, up, down, drop=(lambda p, i=i: lose(i, p)) if lose else None)
            trace.append((now, turned, tuple(pair.ports[CLIENT].sent), tuple(pair.ports[SERVER].sent),
                          conn.timer.due, conn.bytes_relayed, conn.last_activity, tuple(conn.leg_states()),
                          conn.outcome))
            if conn.done and not (pair.ports[CLIENT].sent or pair.ports[SERVER].sent or pair.to_s or pair.from_s):
                break

    trio.run(main, clock=trio.testing.MockClock())
    return trace, calls, box["pair"]


def same(monkeypatch, **kw):
    """Run the exchange both ways; the traces must agree row for row."""
    fast_trace, fast_calls, fast_pair = run(monkeypatch, True, **kw)
    slow_trace, slow_calls, slow_pair = run(monkeypatch, False, **kw)
    for a, b in zip(fast_trace, slow_trace):
        assert a == b, f"first difference at t={a[0]} us"
    assert len(fast_trace) == len(slow_trace)
    assert slow_calls.outcomes[tcp.TURN_DONE] == 0
    return fast_trace, fast_calls, fast_pair


def lossy():
    """Every 50th long-link packet for a while (SACK recovery), then a 2.4 s outage (RTO)."""
    n = [0]

    def drop(i: int, p: bytes) -> bool:
        if 150 <= i < 300:
            n[0] += 1
            return n[0] % 50 == 0
        return 700 <= i < 1300
    return drop


def test_bulk_both_ways_with_losses_an_outage_and_fins_turn_for_turn(monkeypatch):
    sent = [0, 0]

    def script(i, pair):
        if i == 2000:
            pair.C.send_eof()  # the client's FIN: passed on once everything before it went
        if i == 2100:
            pair.S.send_eof()
        if i >= 2000:
            return 0, 0
        sent[0] += 25_000
        sent[1] += 10_000
        return 25_000, 10_000

    trace, calls, pair = same(monkeypatch, script=script, steps=40_000, drop=lossy)
    conn = pair.conn
    # the fast path carried the bulk; the outage's retransmission timeouts fired inside it
    assert calls.outcomes[tcp.TURN_DONE] > 1000
    assert calls.timeouts_inside > 0
    assert calls.outcomes["none"] > 0  # the FINs' turns went the long way
    assert pair.conn.legs[SERVER].engine.statistics().timeouts > 0
    assert pair.conn.legs[SERVER].engine.statistics().retransmits > pair.conn.legs[SERVER].engine.statistics().timeouts
    # every byte relayed and read, both FINs passed, the connection closed normally
    assert conn.outcome is Outcome.CLOSED
    assert conn.bytes_relayed == (pair.received[1], pair.received[0])
    assert pair.received == [pair.C.statistics().bytes_received, pair.S.statistics().bytes_received]
    assert pair.C.at_eof() and pair.S.at_eof()
    assert conn.legs[CLIENT].eof_sent and conn.legs[SERVER].eof_sent


def test_client_reset_during_bulk_resets_the_server_turn_for_turn(monkeypatch):
    def script(i, pair):
        if i == 600:
            pair.C.abort()
        return (25_000, 5_000) if i < 600 else (0, 0)

    trace, calls, pair = same(monkeypatch, script=script, steps=2000)
    assert calls.outcomes[tcp.TURN_DONE] > 300
    assert pair.conn.outcome is Outcome.RESET_BY_CLIENT
    assert pair.S.state == "CLOSED"  # the RST reached the server
    assert pair.conn.leg_states() == ["CLOSED", "CLOSED"]


def test_idle_limit_after_bulk_ends_the_connection_at_its_deadline(monkeypatch):
    def script(i, pair):
        return (25_000, 0) if i < 250 else (0, 0)

    trace, calls, pair = same(monkeypatch, script=script, steps=5000, limits={"idle_timeout": 3})
    conn = pair.conn
    assert calls.outcomes[tcp.TURN_DONE] > 200
    assert conn.outcome is Outcome.IDLE_TIMEOUT
    # last bytes moved at `last`: the limit's deadline (rounded up to the grid) was filed
    # by a fast turn and the idle turn came then, not a wake-up later
    last = conn.last_activity
    limit = -(-(last + 3_000_000) // GRID) * GRID
    ended = next(row for row in trace if row[8] is not None)
    assert ended[0] == limit
    assert any(row[4] == limit for row in trace if row[0] < limit)
    assert pair.C.state == "CLOSED" and pair.S.state == "CLOSED"  # both peers got RST


def test_long_leg_header_compression_in_the_fast_path(monkeypatch):
    def script(i, pair):
        return (25_000, 3_000) if i < 500 else (0, 0)

    hc_fast = Compressor()
    trace, calls, pair = run(monkeypatch, True, script=script, steps=600, compressor=hc_fast)
    hc_slow = Compressor()
    slow, _, _ = run(monkeypatch, False, script=script, steps=600, compressor=hc_slow)
    assert trace == slow
    assert calls.outcomes[tcp.TURN_DONE] > 300
    assert hc_fast.compressed == hc_slow.compressed > 5000
    assert any(p[:2] == b"HC" for row in trace for p in row[3])
    assert not any(p[:2] == b"HC" for row in trace for p in row[2])  # the client leg: plain


def test_split_turn_declines_what_is_not_the_plain_case():
    cfg = turn_bench.pep_config(0)
    a = tcp.TcpConnection(turn_bench.eng.tcp_config(cfg.tcp_client), turn_bench.C_ADDR, 1, turn_bench.S_ADDR, 2, 1)
    b = tcp.TcpConnection(turn_bench.eng.tcp_config(cfg.tcp_client), turn_bench.S_ADDR, 2, turn_bench.C_ADDR, 1, 9)
    b.listen()
    a.connect(0)
    # SYN-SENT / LISTEN: nothing done, the SYN still queued
    assert tcp.split_turn(a, b, 0, 0, 10**9, 1000, 65536, 4000) is None
    assert len(a.packets_to_send(0)) == 1
