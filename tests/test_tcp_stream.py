"""Issue 3 test 4: a Trio HalfCloseableStream over the engine passes
trio.testing.check_half_closeable_stream (two engines joined by an in-memory
packet pipe, each driven by its own timer task)."""
from __future__ import annotations

import hashlib
import random

import pytest
import trio
import trio.testing

from stackpep.tcp.config import TcpConfig
from stackpep.tcp.script import parse_segment
from stackpep.tcp.stream import MemoryPacketPipe, TcpStream, memory_stream_pair

SMALL = TcpConfig(snd_buf=4096, rcv_buf=4096, mss=1000)


async def _clogged_pair(nursery):
    """A pair whose sender is blocked until the receiver reads: the receiver's
    window is zero and the sender's buffer full."""
    a, b = await memory_stream_pair(nursery, SMALL, SMALL)
    while True:  # both ways (the checks also use the pair flipped), until nothing moves
        moved = 0
        for src in (a, b):
            while True:
                n = src.conn.send(b"c" * 4096)
                src.driver.flush()
                moved += n
                if n == 0:
                    break
        await trio.sleep(0.1)  # let delayed ACKs free space
        if not moved and a.conn.send_space() == 0 and b.conn.send_space() == 0:
            break
    assert a.conn.recv_available() > 0 and b.conn.recv_available() > 0
    return a, b


def test_check_half_closeable_stream():
    async def main():
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                async def maker():
                    return await memory_stream_pair(nursery)

                async def clogged():
                    return await _clogged_pair(nursery)

                await trio.testing.check_half_closeable_stream(maker, clogged)
                nursery.cancel_scope.cancel()

    trio.run(main)


def test_send_eof_sends_fin_and_peer_sees_eof():
    async def main():
        async with trio.open_nursery() as nursery:
            sent = []
            a, b = await memory_stream_pair(nursery)
            transmit = a.driver.transmit

            def spy(pkt):
                sent.append(parse_segment(pkt))
                transmit(pkt)

            a.driver.transmit = spy
            await a.send_all(b"hello")
            await a.send_eof()
            assert await b.receive_some(100) == b"hello"
            assert await b.receive_some(100) == b""
            assert a.conn.state in ("FIN-WAIT-1", "FIN-WAIT-2")
            assert b.conn.state == "CLOSE-WAIT"
            assert any(s.flags & 0x01 for s in sent), "no FIN left the engine"
            # the other direction still works
            await b.send_all(b"back")
            assert await a.receive_some(100) == b"back"
            await b.send_eof()
            assert await a.receive_some(100) == b""
            await trio.sleep(0.1)
            assert a.conn.state == "TIME-WAIT" and b.conn.state == "CLOSED"
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bulk_over_lossy_pipe_virtual_time(seed):
    """5 % loss both ways on a virtual clock: 2 MB each way arrive intact."""
    rng = random.Random(seed)
    data_a = random.Random(seed * 7).randbytes(2_000_000)
    data_b = random.Random(seed * 11).randbytes(2_000_000)

    async def main():
        async with trio.open_nursery() as nursery:
            a, b = await memory_stream_pair(nursery)
            # connect first (lossless), then lose 5 % of packets both ways
            pipe_drop = lambda direction, pkt: rng.random() < 0.05  # noqa: E731
            a.driver.pipe.drop = pipe_drop

            async def pump(src, dst, data, out):
                async def sender():
                    view = memoryview(data)
                    for i in range(0, len(view), 50_000):
                        await src.send_all(view[i:i + 50_000])
                    await src.send_eof()

                async def receiver():
                    h = hashlib.sha256()
                    while True:
                        chunk = await dst.receive_some(1 << 16)
                        if not chunk:
                            break
                        h.update(chunk)
                    out.append(h.hexdigest())

                async with trio.open_nursery() as n:
                    n.start_soon(sender)
                    n.start_soon(receiver)

            got_ab, got_ba = [], []
            async with trio.open_nursery() as n:
                n.start_soon(pump, a, b, data_a, got_ab)
                n.start_soon(pump, b, a, data_b, got_ba)
            assert got_ab == [hashlib.sha256(data_a).hexdigest()]
            assert got_ba == [hashlib.sha256(data_b).hexdigest()]
            assert a.statistics().retransmits > 0 and b.statistics().retransmits > 0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_aclose_with_unread_data_resets_peer():
    async def main():
        async with trio.open_nursery() as nursery:
            a, b = await memory_stream_pair(nursery)
            await a.send_all(b"unread")
            await trio.testing.wait_all_tasks_blocked()
            await b.aclose()  # data never read: RST (RFC 2525 §2.17)
            with pytest.raises(trio.BrokenResourceError):
                await a.receive_some(10)
            assert a.conn.state == "CLOSED"
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_stream_is_a_trio_half_closeable_stream():
    assert issubclass(TcpStream, trio.abc.HalfCloseableStream)
    assert TcpStream.send_eof is not trio.abc.HalfCloseableStream.send_eof


def test_memory_pipe_delivers_in_order_counts_drops_and_never_nests():
    events = []

    class End:
        def __init__(self, name, answer=None):
            self.name, self.answer = name, answer

        def deliver(self, pkt):
            events.append(f"{self.name}<{pkt.decode()}")
            if self.answer:
                self.answer(b"ack-" + pkt)  # sending from inside a delivery
            events.append(f"{self.name} done")

    pipe = MemoryPacketPipe()
    to_b, to_a = pipe.transmitter(0), pipe.transmitter(1)
    pipe.ends[0], pipe.ends[1] = End("a"), End("b", answer=to_a)
    to_b(b"1")
    # b's answer is queued and delivered after b's delivery returned, not inside it
    assert events == ["b<1", "b done", "a<ack-1", "a done"]
    assert pipe.delivered == [1, 1]
    events.clear()
    pipe.drop = lambda direction, pkt: direction == 0 and pkt == b"2"  # a -> b only
    to_b(b"2")
    to_b(b"3")
    assert events == ["b<3", "b done", "a<ack-3", "a done"]
    assert pipe.delivered == [2, 2]
