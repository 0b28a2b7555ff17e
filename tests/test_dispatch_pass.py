"""The dispatcher's pass: rings read again between slices of connection turns
(issue 11: 10,000 connections fetching at once), and the route lookups'
counters in the statistics, `stackpep stats` and the metrics."""
from __future__ import annotations

import struct

import trio

from stackpep.io.ports import MemoryPort, MemoryRouter, PacketPort
from stackpep.pep.api import intercept_spec
from stackpep.pep import dispatcher as dmod
from stackpep.pep.dispatcher import Dispatcher
from stackpep.pep.config import from_dict
from stackpep.pep.metrics import render_stats
from stackpep.pep.observe import summary_lines
from stackpep.pep.workers import merge_snapshots

import stackpep._fast.tcp  # noqa: F401  (a missing build is a failure, not a skip)

ACK = 0x10


def config():
    return from_dict({"interfaces": {"client": ["c"], "server": ["s"]},
                      "intercept": {"prefixes": ["198.18.1.0/24"], "ports": [80]}})


def key(i: int) -> bytes:
    # client 198.18.0.2:(10000 + i) -> server 198.18.1.2:80 (stackpep._fast.capture.flow_key layout)
    return bytes([198, 18, 0, 2]) + struct.pack("!H", 10000 + i) + bytes([198, 18, 1, 2]) + struct.pack("!H", 80)


class FakeConn:
    """Takes every packet; records its turns in the shared event log."""

    passive = 0

    def __init__(self, i, log):
        self.i, self.log = i, log

    def deliver(self, from_client, pkt, flags, now):
        self.log.append(("deliver", self.i))
        return True

    def turn(self, now):
        self.log.append(("turn", self.i))

    def reusable_by_new_syn(self):
        return False


class FakePort(PacketPort):
    """A ring: `poll_batch` hands over what `arrive()` queued; every look,
    flush and defer is logged."""

    def __init__(self, name, client_side, log):
        self.name, self.client_side, self.log = name, client_side, log
        self.queue = []

    async def receive_batch(self):
        raise AssertionError("the test drives Dispatcher._pass itself")

    def poll_batch(self):
        batch, self.queue = self.queue, []
        self.log.append(("read", self.name, len(batch)))
        return batch

    def send(self, packets, hop):
        return len(packets)

    def defer(self):
        self.log.append(("defer", self.name))

    def flush(self):
        self.log.append(("flush", self.name))
        return 0

    def statistics(self):
        return {}


def make(n):
    log = []
    cport, sport = FakePort("c", True, log), FakePort("s", False, log)
    d = Dispatcher(config(), [cport, sport], MemoryRouter([]), intercept_spec(config()))
    conns = [FakeConn(i, log) for i in range(n)]
    for i, c in enumerate(conns):
        d.table[key(i)] = c
    return d, cport, sport, log


def run_pass(d, port, batch):
    async def main():
        d._pass(port, batch)

    trio.run(main)


def turns_between_reads(log):
    """The number of turns run between consecutive looks at the rings."""
    runs, n = [], 0
    for e in log:
        if e[0] == "turn":
            n += 1
        elif e[0] == "read" and e[1] == "c":
            runs.append(n)
            n = 0
    runs.append(n)
    return runs


def test_many_turns_are_sliced_and_every_ring_is_read_between_slices():
    k = dmod.TURNS_PER_PASS
    n = 3 * k + 5
    d, cport, sport, log = make(n)
    run_pass(d, cport, [(key(i), b"p", ACK) for i in range(n)])
    # every connection took its packet and got exactly one turn, in arrival order
    assert [e[1] for e in log if e[0] == "turn"] == list(range(n))
    # K turns, then the rings are looked at (twice: before and after the slice's
    # output left), three times; the last slice ends the pass
    assert turns_between_reads(log) == [k, 0, k, 0, k, 0, 5]
    assert [e for e in log if e[0] == "read"] == [("read", "c", 0), ("read", "s", 0)] * 6
    # between the two looks what the slice emitted leaves
    first_read = log.index(("read", "c", 0))
    assert log[first_read:first_read + 8] == [
        ("read", "c", 0), ("read", "s", 0), ("flush", "c"), ("defer", "c"), ("flush", "s"), ("defer", "s"),
        ("read", "c", 0), ("read", "s", 0)]
    assert log[-2:] == [("flush", "c"), ("flush", "s")]
    assert d.counters["dispatch_ring_rereads"] == 6 and d.counters["dispatch_reread_packets"] == 0
    assert d.counters["packets_in"] == n == d.counters["packets_to_connections"]


def test_few_turns_need_no_second_look():
    d, cport, sport, log = make(10)
    run_pass(d, cport, [(key(i), b"p", ACK) for i in range(10)])
    assert [e[0] for e in log if e[0] != "deliver"] == ["defer", "defer"] + ["turn"] * 10 + ["flush", "flush"]
    assert d.counters["dispatch_ring_rereads"] == 0


def test_what_a_reread_brings_joins_the_pass_behind_the_waiting_turns():
    k = dmod.TURNS_PER_PASS
    n = 2 * k
    d, cport, sport, log = make(n + 2)
    # while the first slice runs, packets arrive on the server ring for connection n
    # and for one already turned (0), and a second packet for one still waiting (k + 1):
    # the new ones get a turn after the waiting ones, the waiting one only its own
    sport.queue = [(key(n), b"q", ACK), (key(0), b"q", ACK), (key(k + 1), b"q", ACK)]
    cport.queue = [(key(n + 1), b"r", ACK)]
    run_pass(d, cport, [(key(i), b"p", ACK) for i in range(n)])
    turns = [e[1] for e in log if e[0] == "turn"]
    assert turns == list(range(n)) + [n + 1, n, 0]
    assert d.counters["dispatch_ring_rereads"] == 4  # before and after the output of slices 1 and 2
    assert d.counters["dispatch_reread_packets"] == 4
    assert d.counters["packets_in"] == n + 4


def test_rereads_stop_after_a_bound_of_packets(monkeypatch):
    # a ring that is never empty: the pass still ends (the event loop gets its turn)
    monkeypatch.setattr(dmod, "TURNS_PER_PASS", 2)
    monkeypatch.setattr(dmod, "REREAD_PACKETS_PER_PASS", 9)
    d, cport, sport, log = make(100)
    seq = iter(range(4, 100))

    def refill():
        batch = [(key(next(seq)), b"x", ACK), (key(next(seq)), b"x", ACK)]
        log.append(("read", "c", len(batch)))
        return batch

    cport.poll_batch = refill
    run_pass(d, cport, [(key(i), b"p", ACK) for i in range(4)])
    # two looks per slice bring 4 packets: after 3 slices 12 >= 9, no more looks
    assert d.counters["dispatch_ring_rereads"] == 6 and d.counters["dispatch_reread_packets"] == 12
    # 4 + 12 connections, each turned once
    assert sorted(e[1] for e in log if e[0] == "turn") == list(range(16))


def test_a_superseded_connection_is_not_turned_its_successor_is():
    # (as the batch loop always did: one turn per key, the connection the key has
    # when the turns run)
    d, cport, sport, log = make(2)
    old = d.table[key(1)]
    new = FakeConn(99, log)

    def deliver_then_replace(from_client, pkt, flags, now):
        log.append(("deliver", 1))
        d.table[key(1)] = new  # (what a SYN that supersedes it does: SplitConnection.reusable_by_new_syn)
        return True

    old.deliver = deliver_then_replace
    run_pass(d, cport, [(key(1), b"p", ACK), (key(0), b"p", ACK), (key(1), b"p", ACK)])
    assert [e for e in log if e[0] in ("turn", "deliver")] == [
        ("deliver", 1), ("deliver", 0), ("deliver", 99), ("turn", 0), ("turn", 99)]


def test_memory_port_poll_batch_takes_what_is_queued_without_waiting():
    async def main():
        p = MemoryPort("c", client_side=True)
        assert p.poll_batch() == []
        p._send.send_nowait((key(1), b"a", ACK))  # (what inject() queues after its checks)
        p._send.send_nowait((key(2), b"b", ACK))
        assert p.poll_batch() == [(key(1), b"a", ACK), (key(2), b"b", ACK)]
        assert p.poll_batch() == [] and p.counters["rx_packets"] == 2

    trio.run(main)


# ------------------------------------------------------------- route counters
ROUTES = {"route_cache_hits": 7, "route_cache_misses": 2, "route_table_dumps": 1,
          "route_table_invalidations": 0, "route_queries": 2}


class CountingRouter(MemoryRouter):
    def statistics(self):
        return dict(ROUTES)


def test_route_counters_in_statistics_stats_reply_metrics_and_workers_sum():
    from stackpep.pep.observe import stats_snapshot

    d = Dispatcher(config(), [MemoryPort("c", True), MemoryPort("s", False)], CountingRouter([]),
                   intercept_spec(config()))
    st = d.statistics()
    assert st["routes"] == ROUTES

    class FakePep:
        dispatcher = d
        started_monotonic = 0.0

        class config:
            instance = "x"

    async def snap():
        return stats_snapshot(FakePep(), connections=False)

    reply = trio.run(snap)
    assert reply["routes"] == ROUTES
    assert "routes: route_cache_hits=7, route_cache_misses=2, route_table_dumps=1, route_table_invalidations=0, " \
           "route_queries=2" in summary_lines(reply)
    text = render_stats(d.counters, st, 10, False)
    for k, v in ROUTES.items():
        assert f"# TYPE stackpep_{k}_total counter" in text
        assert f"\nstackpep_{k}_total {v}\n" in text
    # two workers: summed like every other counter, and the metrics of the sum
    m = merge_snapshots([reply, dict(reply, routes={**ROUTES, "route_cache_hits": 1})], [1, 2])
    assert m["routes"] == {k: 2 * v for k, v in ROUTES.items()} | {"route_cache_hits": 8}
    assert "\nstackpep_route_cache_hits_total 8\n" in render_stats(m["counters"], m, 20, False)


def test_kernel_router_statistics_are_the_next_hop_cache_counters():
    from stackpep.io.ports import KernelRouter
    from stackpep.io.routes import NextHopCache

    r = KernelRouter.__new__(KernelRouter)  # no netlink socket: only the counters are read
    r.cache = NextHopCache(rtnl=None)
    r.cache.invalidate_routes()
    assert r.statistics() == {"route_cache_hits": 0, "route_cache_misses": 0, "route_table_dumps": 0,
                              "route_table_invalidations": 1, "route_queries": 0}
    # a copy: the caller cannot change the cache's counters
    r.statistics()["route_queries"] = 5
    assert r.cache.counters["route_queries"] == 0


def test_memory_router_has_no_route_counters():
    d = Dispatcher(config(), [MemoryPort("c", True)], MemoryRouter([]), intercept_spec(config()))
    assert d.statistics()["routes"] == {}
    assert "stackpep_route_" not in render_stats(d.counters, d.statistics(), 10, False)


# ------------------------------------------- turns for deadlines and wake-ups
def test_woken_and_due_connections_join_the_pass_one_turn_each():
    from stackpep.pep.timers import TimerHandle

    d, cport, sport, log = make(4)
    for i in range(4):
        c = d.table[key(i)]
        c.key = key(i)
        c.timer = TimerHandle(c)
    c0, c1, c2, c3 = (d.table[key(i)] for i in range(4))
    d.timers.schedule(c2.timer, 1000)   # due
    d.timers.schedule(c1.timer, 900)    # due, and it takes a packet too: one turn
    d.timers.schedule(c3.timer, 10**12)  # not due
    d._woken = [c0, c2]                  # c2 also due: one turn

    async def main():
        d._pass(cport, [(key(1), b"p", ACK)], now=5000)

    trio.run(main)
    # the packet's connection first, then the due ones by deadline, then the woken
    assert [e[1] for e in log if e[0] == "turn"] == [1, 2, 0]
    assert d.counters["dispatch_timer_turns"] == 2 and d.counters["dispatch_woken_turns"] == 2
    assert d._woken == [] and d.timers.next_due() == 10**12


def test_a_woken_connection_whose_key_was_taken_over_still_gets_its_turn():
    # a connection superseded by a new SYN under its key asks for its last turn
    # (SplitConnection.shutdown -> wake): in the same pass the new connection took
    # a packet under that key -- both are turned, once each
    d, cport, sport, log = make(2)
    old = FakeConn(50, log)
    old.key = key(1)
    d._woken = [old]

    async def main():
        d._pass(cport, [(key(1), b"p", ACK)], now=5000)

    trio.run(main)
    assert [e[1] for e in log if e[0] == "turn"] == [1, 50]
