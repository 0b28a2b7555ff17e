"""The dispatcher's one loop (Dispatcher._serve) in virtual time: every ring and
every connection deadline served by one task, at most one wake-up of it per grid
step with a [wan] hold, at once without; the split connections' own tasks do not
wake for their timers (issue 11: cost per byte)."""
from __future__ import annotations

import collections
import os
import socket
import struct
import threading
import time

import pytest
import trio
import trio.testing

from stackpep.io.ports import MemoryPort, MemoryRouter, PacketPort
from stackpep.pep.api import intercept_spec, open_pep
from stackpep.pep.config import from_dict
from stackpep.pep.dispatcher import Dispatcher
from stackpep.pep.splitter import SplitConnection

import stackpep._fast.tcp  # noqa: F401  (a missing build is a failure, not a skip)

ACK = 0x10


def config(**capture):
    d = {"interfaces": {"client": ["c"], "server": ["s"]},
         "intercept": {"prefixes": ["198.18.1.0/24"], "ports": [80]}}
    if capture:
        d["capture"] = capture
    return from_dict(d)


def key(i: int) -> bytes:
    # client 198.18.0.2:(10000 + i) -> server 198.18.9.2:80: not intercepted (counted, nothing else)
    return bytes([198, 18, 0, 2]) + struct.pack("!H", 10000 + i) + bytes([198, 18, 9, 2]) + struct.pack("!H", 80)


class PipePort(PacketPort):
    """A ring stand-in with a real fd (a pipe): `arrive()` queues packets and
    makes the fd readable, as a retired ring block does."""

    def __init__(self, name, client_side):
        self.name, self.client_side = name, client_side
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.queue = []
        self.bytes = 0
        self.looks = 0

    def arrive(self, pkts):
        self.queue += pkts
        os.write(self.w, b"x")

    async def receive_batch(self):
        raise AssertionError("the dispatcher's loop reads this port itself")

    def poll_batch(self):
        self.looks += 1
        batch, self.queue = self.queue, []
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        self.bytes += sum(len(p) for _, p, _ in batch)
        return batch

    def wait_fd(self):
        return self.r

    def rx_bytes(self):
        return self.bytes

    def send(self, packets, hop):
        return len(packets)

    def statistics(self):
        return {}

    def close(self):
        os.close(self.r)
        os.close(self.w)


def steady_stream(hold_us, ms=100):
    """One packet every millisecond for `ms` ms on the client port; returns the
    dispatcher's counters and the time (µs) of each loop wake-up (trio's task
    steps of the loop, but the last: the one that takes the final cancellation)."""
    cport, sport = PipePort("c", True), PipePort("s", False)
    d = Dispatcher(config(hold_us=hold_us), [cport, sport], MemoryRouter([]), intercept_spec(config()))
    wakeups = []

    async def main():
        async with trio.open_nursery() as n:
            await n.start(d.run)
            await trio.sleep(0.0005)  # (the loop is waiting on the rings)
            for i in range(ms):
                cport.arrive([(key(i), b"p" * 100, ACK)])
                await trio.sleep(0.001)
            n.cancel_scope.cancel()

    class Wakeups(trio.abc.Instrument):
        def before_task_step(self, task):
            if task.name.endswith("Dispatcher._serve"):
                wakeups.append(round(trio.current_time() * 1e6))

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[Wakeups()])
    finally:
        cport.close()
        sport.close()
    return d.counters, wakeups[:-1], cport


def test_without_hold_every_packet_is_read_at_once():
    c, wakeups, port = steady_stream(hold_us=0)
    assert c["drop_not_intercepted"] == 100 == c["packets_in"]
    # the first look, then one wake-up per packet, at the packet's time; never a timed one
    assert c["dispatch_wakeups"] == 101 == len(wakeups) and c["dispatch_timed_waits"] == 0
    assert wakeups == [0] + [500 + 1000 * i for i in range(100)]
    # both rings looked at in every pass (one loop for every port)
    assert port.looks == 101


def test_with_hold_a_steady_stream_costs_one_wake_up_per_grid_step():
    c, wakeups, port = steady_stream(hold_us=4000)
    assert c["drop_not_intercepted"] == 100 == c["packets_in"]
    # the first packet after the quiet start at once (500 µs), then the rings are
    # looked at on the 4 ms grid only: 4 packets per look, one timed wait each
    assert wakeups == [0, 500] + [4000 * i for i in range(1, 26)]
    assert c["dispatch_wakeups"] == len(wakeups) == 27
    # every wait after a look that found packets had the grid point as its deadline
    # (the last one, until 104 ms, ended by the test's cancellation)
    assert c["dispatch_timed_waits"] == 26


# ------------------------------------------------- a real split connection
class Steps(trio.abc.Instrument):
    """Task steps (trio wake-ups) by the task's function name."""

    def __init__(self):
        self.steps = {}

    def before_task_step(self, task):
        name = task.name.rsplit(".", 1)[-1]
        self.steps[name] = self.steps.get(name, 0) + 1


def test_connection_task_does_not_wake_for_its_timers():
    """A connection whose deadlines come up many times (the engines' delayed ACKs
    and retransmissions over a lossy 10 s) is served by the dispatcher's loop;
    its own task wakes a fixed number of times in its whole life."""
    from tests.test_splitter import Box, pep_config, recv_all

    steps = Steps()
    seen = {}

    async def main():
        async with trio.open_nursery() as nursery:
            box = Box(nursery)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router,
                                install_rules=False) as pep:
                s = await box.connect()
                srv = await box.accept()
                for _ in range(20):  # 20 exchanges half a second apart: deadlines in between
                    await s.send_all(b"x" * 500)  # one segment: its ACK is delayed (a deadline)
                    assert len(await srv.receive_some(1 << 16)) > 0
                    await trio.sleep(0.5)
                await s.send_eof()
                await srv.send_eof()
                await recv_all(s)
                await recv_all(srv)
                with trio.fail_after(300):
                    while pep.dispatcher.table:
                        await trio.sleep(0.1)
                seen.update(pep.dispatcher.counters)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0), instruments=[steps])
    assert seen["ended_closed"] == 1
    # the loop served the connection's deadlines (delayed ACKs, TIME-WAIT's end) ...
    assert seen["dispatch_timer_turns"] >= 20
    # ... and the connection's task ran twice: its start (routes, engines, then asleep
    # until the end) and its end (the route lookups of MemoryRouter do not block)
    assert steps.steps["_run_connection"] == 2


def test_real_clock_one_fd_serves_deadlines_and_wake_ups():
    """On trio's real clock the loop waits on one fd (stackpep._fast.waitset: the
    rings and a timerfd in one epoll): a connection's deadlines and a wake-up from
    outside the loop are served by it, each by one turn."""
    from stackpep.pep.splitter import now_us
    from stackpep.pep.timers import TimerHandle

    cport, sport = PipePort("c", True), PipePort("s", False)
    d = Dispatcher(config(), [cport, sport], MemoryRouter([]), intercept_spec(config()))
    turned = []

    class Conn:
        key = key(1)

        def turn(self, now):
            turned.append(now)
            if len(turned) < 3:
                d.timers.schedule(self.timer, now + 2000)

    conn = Conn()
    conn.timer = TimerHandle(conn)
    seen = {}

    async def wait_for(n):
        with trio.fail_after(10):  # (a guard against a hang, not a timing bound)
            while len(turned) < n:
                await trio.sleep(0.001)

    async def main():
        async with trio.open_nursery() as n:
            await n.start(d.run)
            await trio.sleep(0.001)
            first = now_us() + 2000
            d.timers.schedule(conn.timer, first)
            d._rearm()  # (what a reader task's pass does after filing deadlines)
            await wait_for(3)
            seen["waitset"] = d._waitset is not None and d._waitset.arms
            seen["first"] = first
            d._wake(conn)
            await wait_for(4)
            n.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        cport.close()
        sport.close()
    assert seen["waitset"] >= 3  # armed for each deadline (and the wake-up)
    assert d.counters["dispatch_timer_turns"] == 3 and d.counters["dispatch_woken_turns"] == 1
    # never before its deadline: the first at or after it, each next 2 ms after the last turn
    assert turned[0] >= seen["first"]
    assert turned[1] - turned[0] >= 2000 and turned[2] - turned[1] >= 2000
    assert d.counters["drop_not_intercepted"] == 0 and len(turned) == 4


class ThreadPipePort(PipePort):
    """PipePort fed from another thread (a deque: appends and pops are atomic)."""

    def __init__(self, name, client_side):
        super().__init__(name, client_side)
        self.queue = collections.deque()

    def arrive(self, pkts):
        self.queue.extend(pkts)
        os.write(self.w, b"x")

    def poll_batch(self):
        self.looks += 1
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass
        batch = []
        while self.queue:
            batch.append(self.queue.popleft())
        self.bytes += sum(len(p) for _, p, _ in batch)
        return batch


@pytest.mark.parametrize("block_wait", [True, False])
def test_real_clock_loop_waits_outside_trio_yet_serves_trio(block_wait):
    """On trio's real clock, while trio has no task to run, the loop waits in its
    own epoll_wait (WaitSet.block) on the rings, its timer and trio's epoll fd:
    packets that arrive from outside trio are taken by loop iterations that are
    no trio task step of it, and meanwhile trio's deadlines, a thread's result
    (trio's wake-up fd) and another task's socket I/O are all still served.
    capture.own_wait = false: every wait goes through trio."""
    cport, sport = ThreadPipePort("c", True), ThreadPipePort("s", False)
    d = Dispatcher(config(own_wait=block_wait), [cport, sport], MemoryRouter([]), intercept_spec(config()))
    assert d.block_wait is block_wait
    steps = Steps()
    seen = {}

    def feed():  # another thread: 20 packets, one every 2 ms
        for i in range(20):
            cport.arrive([(key(i), b"p" * 100, ACK)])
            time.sleep(0.002)

    async def main():
        async with trio.open_nursery() as n:
            await n.start(d.run)
            await trio.to_thread.run_sync(feed)  # (its result reaches trio by its wake-up fd)
            with trio.fail_after(10):  # (guards against a hang, not timing bounds)
                while d.counters["packets_in"] < 20:
                    await trio.sleep(0.002)  # trio deadlines while the loop waits
                a, b = socket.socketpair()
                with a, b:
                    a.setblocking(False)
                    threading.Timer(0.01, b.send, (b"y",)).start()
                    await trio.lowlevel.wait_readable(a)  # trio I/O while the loop waits
                    seen["read"] = a.recv(1)
                await trio.sleep(0.01)
            seen["blocks"] = d._waitset.blocks
            n.cancel_scope.cancel()

    try:
        trio.run(main, instruments=[steps])
    finally:
        cport.close()
        sport.close()
    assert seen["read"] == b"y"
    assert d.counters["packets_in"] == 20 and d.counters["drop_not_intercepted"] == 20
    serve_steps = steps.steps.get("_serve", 0)
    if block_wait:
        assert d.counters["dispatch_blocked_waits"] == seen["blocks"] > 0
        # some packets were taken by iterations trio did not schedule
        assert d.counters["dispatch_wakeups"] > serve_steps
    else:
        assert d.counters["dispatch_blocked_waits"] == 0 and seen["blocks"] == 0
        assert d.counters["dispatch_wakeups"] <= serve_steps


def test_trio_idle_sees_tasks_of_the_current_batch():
    """The loop may wait in its own epoll_wait only when no other task can run:
    not in trio's run queue, and not in the batch trio is stepping now (trio
    takes a cycle's batch out of its run queue before it steps the tasks).  Two
    tasks woken together run in one batch: the first to run sees the other
    still to come (not idle), the second sees nobody."""
    from stackpep.pep.dispatcher import _trio_host, _trio_idle

    seen = []

    async def main():
        runner, _ = _trio_host()
        go, done = trio.Event(), trio.Event()

        async def waiter():
            await go.wait()
            seen.append(_trio_idle(runner, trio.lowlevel.current_task()))
            if len(seen) == 2:
                done.set()
            await trio.sleep_forever()

        async with trio.open_nursery() as n:
            n.start_soon(waiter)
            n.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert _trio_idle(runner, trio.lowlevel.current_task())  # the two wait, nothing else runs
            go.set()  # both woken: the next cycle's batch holds the two
            await done.wait()
            n.cancel_scope.cancel()

    trio.run(main)
    assert seen == [False, True]
