"""Split-connection turn benchmark: the CPU of one `SplitConnection.turn(now)` in the
steady state of a bulk transfer, without the network (issue 11, "Cost per byte at
satellite rates").

One real SplitConnection (built by its own `_start`, routes answered in memory)
sits between two in-memory TcpConnection peers: the client (C) and the server
(S).  The box's legs send through `MemoryLegPort`s that only collect packets.  On a
virtual clock advancing one wake-up grid step (capture.hold_us, 4 ms) per round,
as the box's loop at 50 Mbit/s does (250 wake-ups a second):

  the peers take what the box sent them, fire their timers, C writes
  rate * step bytes (upload; S for --direction down), S reads everything; the
  peers' packets are delivered to the connection (`deliver`), and one `turn(now)`
  runs -- only that call is timed (time.perf_counter_ns and thread_time_ns).

The box has the GEO testbed's [wan] (rate control at --rate, --rtt 600 ms) on the
server leg, as pep-a: the client leg is the LAN side (no delay), the server leg the
long one (a delay line of rtt / 2 each way between it and S).

    .venv/bin/python benchmarks/turn.py [--rate 50] [--seconds 20] [--direction up|down]
        [--baseline-python /work/base/.venv/bin/python] [--pieces]

With --baseline-python the same script runs under that interpreter too (its
`stackpep`), and the two are printed side by side.  The tests use `SplitPair`
(tests/test_splitter_turn.py).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import trio

from stackpep.pep import engine as eng
from stackpep.pep.config import from_dict
from stackpep.pep.splitter import CLIENT, SERVER, SplitConnection, SplitContext
from stackpep.pep.timers import Timers
from stackpep._fast.tcp import TcpConnection

C_ADDR = bytes([198, 18, 0, 2])
S_ADDR = bytes([198, 19, 0, 2])
C_PORT, S_PORT = 40000, 5201


class MemoryLegPort:
    """Where a leg's packets go: collected (`sent`), for the pump to hand on."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: List[bytes] = []

    def send(self, pkts: List[bytes], hop: Any) -> int:
        self.sent += pkts
        return len(pkts)

    def take(self) -> List[bytes]:
        out, self.sent = self.sent, []
        return out


def tcp_flags(pkt: bytes) -> int:
    ihl = (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40
    return pkt[ihl + 13]


def pep_config(rate_mbit: float = 50, rtt: float = 0.6, **limits: Any) -> Any:
    d: Dict[str, Any] = {"interfaces": {"client": ["c"], "server": ["s"]},
                         "intercept": {"prefixes": ["198.18.0.0/15"]}}
    if rate_mbit:
        d["wan"] = {"interface": "s", "rate": int(rate_mbit * 1e6), "rtt": rtt}
    if limits:
        d["limits"] = limits
    return from_dict(d)


class SplitPair:
    """A SplitConnection between client peer C and server peer S, all in memory
    (must be made and used inside trio.run: the splitter reads trio's clock once
    at creation).  `step(now)` is one wake-up of the box; `turn_ns` the last turn's
    time."""

    def __init__(self, config: Any = None, peer_buf: int = 8 << 20, compressor: Any = None,
                 long_delay_us: int = 0) -> None:
        self.config = config if config is not None else pep_config()
        cfg = self.config
        rates: Dict[Any, Any] = {}
        self.leg_cfg = (eng.tcp_config(cfg.tcp_client, rates), eng.tcp_config(cfg.tcp_server, rates))
        self.counters: collections.Counter = collections.Counter()
        self.outcomes: List[Any] = []
        self.woken: List[Any] = []
        self.timers = Timers()
        self.ports = (MemoryLegPort("c"), MemoryLegPort("s"))
        self.compressor = compressor
        # the long link (server leg <-> S) one way: packets wait in a delay line
        self.long_delay_us = long_delay_us
        self.to_s: collections.deque = collections.deque()  # (due, packet)
        self.from_s: collections.deque = collections.deque()

        async def next_hop(addr: bytes):
            return (self.ports[CLIENT] if addr == C_ADDR else self.ports[SERVER]), None

        self.ctx = SplitContext(config=cfg, next_hop=next_hop, leg_config=lambda side, mtu: self.leg_cfg[side],
                                icmp_validate=lambda err, engine: True, counters=self.counters,
                                report=lambda conn, outcome: self.outcomes.append(outcome),
                                wan_side={"client": CLIENT, "server": SERVER}.get(cfg.wan_leg),
                                timers=self.timers, wake=self.woken.append)
        from stackpep.tcp.config import TcpConfig

        pcfg = TcpConfig(snd_buf=peer_buf, rcv_buf=peer_buf)
        self.C = TcpConnection(pcfg, C_ADDR, C_PORT, S_ADDR, S_PORT, 1000)
        # S speaks over the long link as the far box's long leg would: the same [wan] settings
        self.S = TcpConnection(self.leg_cfg[SERVER] if cfg.wan_leg else pcfg, S_ADDR, S_PORT, C_ADDR, C_PORT, 5000)
        self.S.listen()
        self.conn: Optional[SplitConnection] = None
        self.received = [0, 0]  # bytes read by C, by S
        self.turn_ns = 0
        self.turn_cpu_ns = 0
        self.before_turn: Any = None  # called (untimed) just before each turn

    async def open(self, now: int = 0) -> None:
        """The handshakes (mode after-server): both legs ESTABLISHED."""
        self.C.connect(now)
        syn = self.C.packets_to_send(now)[0]
        key = C_ADDR + C_PORT.to_bytes(2, "big") + S_ADDR + S_PORT.to_bytes(2, "big")
        conn = self.conn = SplitConnection(self.ctx, key, syn, self.ports[CLIENT], True)
        conn.created = conn.last_activity = now
        await conn._start()
        conn._serving = True  # (what _serve does, without its task's sleep: it asks for a turn)
        self.woken.append(conn)
        for i in range(50 + 2 * self.long_delay_us // 1000):
            self.step(now + i * 1000)
            if not conn.embryonic:
                break
        if self.compressor is not None:
            conn.legs[SERVER].compressor = self.compressor

    def step(self, now: int, up: int = 0, down: int = 0, read: bool = True, drop=None) -> bool:
        """One wake-up: the peers answer what the box sent, C writes `up` bytes and
        S `down`, the peers' packets go into the connection; a turn, as the
        dispatcher's loop runs one: when a packet was delivered, when the
        connection's deadline came (ctx.timers) or when it asked (ctx.wake).
        `drop(packet)` True: a packet on the long link (either way) is lost.
        True if a turn ran."""
        C, S, conn = self.C, self.S, self.conn
        for p in self.ports[CLIENT].take():
            C.receive_packet(p, now)
        to_s, from_s, delay = self.to_s, self.from_s, self.long_delay_us
        for p in self.ports[SERVER].take():
            if self.compressor is not None:
                p = self.compressor.expand(p)
            if drop is None or not drop(p):
                to_s.append((now + delay, p))
        while to_s and to_s[0][0] <= now:
            S.receive_packet(to_s.popleft()[1], now)
        for peer in (C, S):
            t = peer.get_timer()
            if t is not None and t <= now:
                peer.handle_timer(now)
        if up:
            C.send(bytes(min(up, C.send_space())))
        if down:
            S.send(bytes(min(down, S.send_space())))
        if read:
            self.received[0] += len(C.recv(1 << 30))
            self.received[1] += len(S.recv(1 << 30))
        took = False
        for p in C.packets_to_send(now):
            took = conn.deliver(True, p, tcp_flags(p), now) or took
        for p in S.packets_to_send(now):
            if drop is None or not drop(p):
                from_s.append((now + delay, p))
        while from_s and from_s[0][0] <= now:
            p = from_s.popleft()[1]
            took = conn.deliver(False, p, tcp_flags(p), now) or took
        due = self.timers.expired(now)
        if not (took or due or self.woken):
            return False
        self.woken.clear()
        if self.before_turn is not None:
            self.before_turn()
        t0c = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        conn.turn(now)
        self.turn_ns = time.perf_counter_ns() - t0
        self.turn_cpu_ns = time.thread_time_ns() - t0c
        return True


def run(rate_mbit: float, seconds: float, direction: str, warmup: float, rtt: float, cold: int = 0) -> Dict[str, Any]:
    out: Dict[str, Any] = {}

    async def main() -> None:
        pair = SplitPair(pep_config(rate_mbit, rtt or 0.6), long_delay_us=int(rtt * 1e6 / 2))
        if cold:
            # between wake-ups the box's loop, the kernel and the other processes run: stand
            # in for them by writing `cold` MiB before every turn, so the turn starts with its
            # data and code out of the caches, as in a box (not timed)
            junk = bytearray(cold << 20)
            pair.before_turn = lambda: junk.__setitem__(slice(None), bytes(len(junk)))
        grid = pair.config.hold_us or 4000
        await pair.open(0)
        assert not pair.conn.embryonic, pair.conn.leg_states()
        per_step = int(rate_mbit * 1e6 / 8 * grid / 1e6)
        up, down = (per_step, 0) if direction == "up" else (0, per_step)
        now = 100_000
        wall: List[int] = []
        cpu: List[int] = []
        pkts = 0
        steps = int(seconds * 1e6 / grid)
        skip = int(warmup * 1e6 / grid)
        for i in range(steps):
            now += grid
            turned = pair.step(now, up, down)
            if i >= skip and turned:
                wall.append(pair.turn_ns)
                cpu.append(pair.turn_cpu_ns)
                pkts += len(pair.ports[CLIENT].sent) + len(pair.ports[SERVER].sent)
        n = len(wall)
        moved = pair.conn.bytes_relayed
        out.update(turns=n, us_median=statistics.median(wall) / 1e3, us_mean=sum(wall) / n / 1e3,
                   cpu_us_mean=sum(cpu) / n / 1e3, pkts_per_turn=pkts / n,
                   goodput_mbit=(moved[0] + moved[1]) * 8 / (steps * grid), states=pair.conn.leg_states())

    trio.run(main)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50, help="Mbit/s of the bulk transfer and of [wan]")
    ap.add_argument("--seconds", type=float, default=30, help="virtual seconds")
    ap.add_argument("--warmup", type=float, default=10, help="virtual seconds not counted (slow start)")
    ap.add_argument("--direction", choices=("up", "down"), default="up")
    ap.add_argument("--rtt", type=float, default=0.6, help="s: the long link's round trip (server leg <-> S)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best mean is reported")
    ap.add_argument("--baseline-python", help="also run under this interpreter (its stackpep), side by side")
    ap.add_argument("--json", action="store_true", help="one JSON line (used for --baseline-python)")
    ap.add_argument("--cold", type=int, default=0, metavar="MIB",
                    help="write this many MiB before each turn (untimed): caches cold, as in a box")
    ap.add_argument("--pieces", action="store_true",
                    help="time the steps of the turn taken step by step (the Python path) one by one instead")
    a = ap.parse_args()
    if a.pieces:
        print("$ " + " ".join([os.path.basename(sys.executable)] + sys.argv))
        r = pieces(a.rate, a.seconds, a.warmup, a.rtt)
        for k, v in r.items():
            print(f"{k:<24} {v / 1e3:6.2f} us")
        print(f"{'sum':<24} {sum(r.values()) / 1e3:6.2f} us")
        return
    runs = [run(a.rate, a.seconds, a.direction, a.warmup, a.rtt, a.cold) for _ in range(a.repeat)]
    best = min(runs, key=lambda r: r["us_mean"])
    if a.json:
        print(json.dumps(best))
        return
    print("$ " + " ".join([os.path.relpath(sys.executable)] + sys.argv))
    rows = [("this build", sys.executable, best)]
    if a.baseline_python:
        args = [a.baseline_python, os.path.abspath(__file__), "--rate", str(a.rate), "--seconds", str(a.seconds),
                "--warmup", str(a.warmup), "--rtt", str(a.rtt), "--cold", str(a.cold), "--direction", a.direction, "--repeat", str(a.repeat), "--json"]
        # run outside the source tree: the baseline interpreter imports its own installed stackpep
        res = subprocess.run(args, capture_output=True, text=True, check=True, cwd="/")
        rows.append(("baseline", a.baseline_python, json.loads(res.stdout.strip().splitlines()[-1])))
    print(f"{'build':<12} {'turns':>6} {'us/turn median':>15} {'us/turn mean':>13} {'cpu us mean':>12} "
          f"{'pkts/turn':>10} {'Mbit/s':>7}  legs")
    for name, _, r in rows:
        print(f"{name:<12} {r['turns']:>6} {r['us_median']:>15.1f} {r['us_mean']:>13.1f} {r['cpu_us_mean']:>12.1f} "
              f"{r['pkts_per_turn']:>10.1f} {r['goodput_mbit']:>7.1f}  {'/'.join(r['states'])}")
    for name, exe, _ in rows:
        print(f"  {name}: {exe}")



def pieces(rate_mbit: float = 50, seconds: float = 30, warmup: float = 10, rtt: float = 0.6) -> Dict[str, float]:
    """Where a turn's time goes: the baseline turn's steps timed one by one (an
    instrumented copy of SplitConnection.turn / _service; per-step perf_counter_ns,
    so each includes ~50 ns of timer).  Mean ns per turn by step."""
    from stackpep.tcp.driver import TIMER_SLACK_US

    acc: Dict[str, int] = collections.defaultdict(int)
    clock = time.perf_counter_ns

    def turn(self: SplitConnection, now: int) -> None:
        t0 = clock()
        self._check_limits(now)
        t1 = clock(); acc["check_limits"] += t1 - t0
        self._now = now
        client, server = self.legs
        ce, se = client.engine, server.engine
        for e in (ce, se):
            t = e.get_timer()
            if t is not None and t <= now + TIMER_SLACK_US:
                e.handle_timer(now if now > t else t)
        t2 = clock(); acc["engine timers"] += t2 - t1
        self._drain(client)
        self._drain(server)
        t3 = clock(); acc["drain x2 (before)"] += t3 - t2
        self._relay(client, server)
        t4 = clock(); acc["relay client->server"] += t4 - t3
        self._relay(server, client)
        t5 = clock(); acc["relay server->client"] += t5 - t4
        pk = [leg.engine.packets_to_send(now) for leg in self.legs]
        t6 = clock(); acc["packets_to_send x2"] += t6 - t5
        for leg, p in zip(self.legs, pk):
            if p:
                leg.transmit(p)
        t7 = clock(); acc["transmit (port.send)"] += t7 - t6
        self._drain(client)
        self._drain(server)
        t8 = clock(); acc["drain x2 (after)"] += t8 - t7
        w = self._wake_time()
        t9 = clock(); acc["_wake_time"] += t9 - t8
        self.ctx.timers.schedule(self.timer, w)
        acc["timers.schedule"] += clock() - t9

    async def main() -> None:
        pair = SplitPair(pep_config(rate_mbit, rtt), long_delay_us=int(rtt * 1e6 / 2))
        grid = pair.config.hold_us or 4000
        await pair.open(0)
        per_step = int(rate_mbit * 1e6 / 8 * grid / 1e6)
        now = 100_000
        skip = int(warmup * 1e6 / grid)
        steps = int(seconds * 1e6 / grid)
        conn = pair.conn
        n = 0
        for i in range(steps):
            now += grid
            if i == skip:
                acc.clear()
                type(conn).turn, orig = turn, type(conn).turn  # type: ignore[method-assign]
            if pair.step(now, per_step, 0) and i >= skip:
                n += 1
        type(conn).turn = orig
        for k in list(acc):
            acc[k] = acc[k] / n

    trio.run(main)
    return dict(acc)


if __name__ == "__main__":
    main()
