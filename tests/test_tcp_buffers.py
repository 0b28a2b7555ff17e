"""Buffer storage of the engine (stackpep/_fast/chunkbuf.pxi): held in chunks only
while data is queued or unread, so an idle connection holds none (issue 11,
"10,000 connections a box").

``TcpConnection.buffer_bytes`` is what one connection holds (whole chunks plus
the chunk table of a buffer that holds any); ``buffer_statistics()`` is the
whole process's.  The peer is played by hand with exact segments, as in
tests/test_tcp_engine.py, or is a second engine (the wrap-around cases)."""
from __future__ import annotations

import random

import pytest

from stackpep._fast.tcp import TcpConnection, buffer_statistics, release_memory
from stackpep.tcp.config import TcpConfig
from tests.test_tcp_engine import ACK, L4, L6, R4, R6, established, rel

CHUNK = buffer_statistics()["chunk_size"]
PTR = 8  # one chunk-table entry


def table_bytes(buf: int) -> int:
    return -(-buf // CHUNK) * PTR


def held(chunks: int, buf: int = TcpConfig().rcv_buf) -> int:
    return chunks * CHUNK + table_bytes(buf)


@pytest.mark.parametrize("v6", [False, True])
def test_idle_established_engine_holds_no_buffer_storage(v6):
    before = buffer_statistics()["chunks"]
    peer = established(v6=v6)
    assert peer.conn.buffer_bytes == 0
    assert buffer_statistics()["chunks"] == before


@pytest.mark.parametrize("v6", [False, True])
def test_receive_storage_taken_when_data_arrives_and_given_back_when_read(v6):
    peer = established(v6=v6)
    conn = peer.conn
    chunks0 = buffer_statistics()["chunks"]
    peer.send(ACK, 1, 1, payload=b"x" * 1000)
    assert conn.buffer_bytes == held(1)
    assert buffer_statistics()["chunks"] == chunks0 + 1
    assert conn.recv(400) == b"x" * 400
    assert conn.buffer_bytes == held(1)  # 600 bytes still unread
    assert conn.recv(1000) == b"x" * 600
    assert conn.buffer_bytes == 0
    assert buffer_statistics()["chunks"] == chunks0


def test_out_of_order_data_keeps_its_chunk_until_the_hole_is_filled_and_read():
    peer = established()
    conn = peer.conn
    # 2,000 bytes beyond a 20,000-byte hole: they sit in the second chunk
    peer.send(ACK, 1 + 20_000, 1, payload=b"b" * 2000)
    assert conn.recv_available() == 0
    assert conn.buffer_bytes == held(1)
    peer.send(ACK, 1, 1, payload=b"a" * 20_000)  # the hole, in one (GRO-sized) segment
    assert conn.buffer_bytes == held(2)
    assert conn.recv(100_000) == b"a" * 20_000 + b"b" * 2000
    assert conn.buffer_bytes == 0


@pytest.mark.parametrize("v6", [False, True])
def test_send_storage_taken_when_queued_and_given_back_as_acknowledged(v6):
    peer = established(v6=v6)
    conn = peer.conn
    data = bytes(range(256)) * 160  # 40,960 bytes: three chunks
    assert conn.send(data) == len(data)
    assert conn.buffer_bytes == held(3, TcpConfig().snd_buf)
    acked = 0
    got = bytearray()
    out = peer.out()
    while acked < len(data):
        segs = [s for s in out if s.payload]
        assert segs, "the sender stopped with data unacknowledged"
        for s in segs:
            assert rel(s) == 1 + len(got)
            got += s.payload
        acked = len(got)
        out = peer.send(ACK, 1, 1 + acked)
        # chunks wholly below SND.UNA are given back; the rest of the queue keeps its own
        live_chunks = (len(data) - 1) // CHUNK - acked // CHUNK + 1 if acked < len(data) else 0
        assert conn.buffer_bytes == (held(live_chunks, TcpConfig().snd_buf) if live_chunks else 0)
    assert bytes(got) == data


def test_closed_engine_gives_back_its_send_storage():
    peer = established()
    conn = peer.conn
    conn.send(b"z" * 5000)
    assert conn.buffer_bytes == held(1, TcpConfig().snd_buf)
    conn.abort()
    assert conn.state == "CLOSED"
    assert conn.buffer_bytes == 0


def _pair(cfg, v6=False):
    la, ra = (L6, R6) if v6 else (L4, R4)
    a = TcpConnection(cfg, la, 40000, ra, 5201, 1)
    b = TcpConnection(cfg, ra, 5201, la, 40000, 2)
    b.listen()
    a.connect(0)
    for _ in range(3):
        for p in a.packets_to_send(0):
            b.receive_packet(p, 0)
        for p in b.packets_to_send(0):
            a.receive_packet(p, 0)
    assert a.state == b.state == "ESTABLISHED"
    return a, b


@pytest.mark.parametrize("v6,drop_every", [(False, 0), (True, 0), (False, 7)])
def test_data_intact_through_many_wraps_of_small_rings_and_nothing_held_after(v6, drop_every):
    # 20,000-byte buffers: two chunks, a ring modulus of 32 KiB, the stream wraps
    # ~25 times; with drop_every the receiver queues out-of-order data and the
    # sender keeps a SACK scoreboard (both given back once the stream is through).
    cfg = TcpConfig(snd_buf=20_000, rcv_buf=20_000, timestamps=True, sack=True, min_rto_us=200_000)
    a, b = _pair(cfg, v6)
    rng = random.Random(5)
    data = rng.randbytes(500_000)
    sent = 0
    got = bytearray()
    now = 0
    n_data = 0
    for _ in range(100_000):
        if sent < len(data):
            sent += a.send(data[sent:sent + 7000])
        moved = False
        for p in a.packets_to_send(now):
            n_data += 1
            moved = True
            if drop_every and n_data % drop_every == 0 and len(p) > 100:
                continue  # lost on the way
            b.receive_packet(p, now)
        while True:
            chunk = b.recv(3000)
            if not chunk:
                break
            got += chunk
        for p in b.packets_to_send(now):
            moved = True
            a.receive_packet(p, now)
        if len(got) == len(data) and a.send_buffered == 0:
            break
        now += 1
        if not moved:  # nothing in flight: on to the next timer (delayed ACK, RTO)
            timers = [x for x in (a.get_timer(), b.get_timer()) if x is not None]
            assert timers, "stalled with no timer armed"
            now = max(now, min(timers))
            for c in (a, b):
                if c.get_timer() is not None and c.get_timer() <= now:
                    c.handle_timer(now)
    assert bytes(got) == data
    assert a.send_buffered == 0
    assert a.buffer_bytes == 0 and b.buffer_bytes == 0


def test_release_memory_empties_the_free_chunk_pool():
    peer = established()
    peer.send(ACK, 1, 1, payload=b"q" * 3000)
    peer.conn.recv(3000)  # its chunk goes to the pool
    assert buffer_statistics()["pool_chunks"] >= 1
    pool = buffer_statistics()["pool_chunks"]
    assert release_memory() == pool * CHUNK
    assert buffer_statistics()["pool_chunks"] == 0
