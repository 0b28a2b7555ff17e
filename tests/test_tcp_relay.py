"""The split connection's relay helpers in the engine (issue 11, "Cost per byte at
satellite rates"): ``relay_to`` moves one engine's readable bytes into another's
send buffer in C (recv() + send() without a bytes object), ``next_event_not_flow``
passes over DataReadable / SendSpace without making their objects.  Peers are
played by hand with exact segments (tests/test_tcp_engine.py)."""
from __future__ import annotations

import pytest

from stackpep.tcp import events as ev
from stackpep.tcp.config import TcpConfig
from tests.test_tcp_engine import ACK, FIN, established


def _src_dst(snd_buf: int = 4 << 20):
    src = established()
    dst = established(TcpConfig(timestamps=False, snd_buf=snd_buf, nagle=False))
    return src, dst


@pytest.mark.parametrize("chunk", [1000, 7000, 1 << 20])
def test_relay_moves_every_readable_byte_in_order(chunk):
    src, dst = _src_dst()
    data = bytes(range(256)) * 40  # 10,240 bytes in 8 segments of <= 1,460
    for i in range(0, len(data), 1460):
        src.send(ACK, 1 + i, 1, payload=data[i:i + 1460])
    assert src.conn.relay_to(dst.conn, chunk) == len(data)
    assert src.conn.recv_available() == 0
    assert dst.conn.send_buffered == len(data)
    # what dst sends is exactly what src received
    out = b"".join(s.payload for s in dst.out())
    assert out == data


def test_relay_takes_no_more_than_the_destination_has_room_for():
    src, dst = _src_dst(snd_buf=3000)
    src.send(ACK, 1, 1, payload=b"a" * 1460)
    src.send(ACK, 1461, 1, payload=b"b" * 1460)
    src.send(ACK, 2921, 1, payload=b"c" * 1460)
    assert src.conn.relay_to(dst.conn, 1 << 20) == 3000
    assert src.conn.recv_available() == 4380 - 3000  # the rest stays in src's receive buffer
    assert dst.conn.send_space() == 0
    assert src.conn.relay_to(dst.conn, 1 << 20) == 0  # full: nothing moves, nothing is lost
    assert src.conn.recv(10_000) == b"c" * 1380


def test_relay_into_a_leg_that_sent_its_fin_moves_nothing():
    src, dst = _src_dst()
    src.send(ACK, 1, 1, payload=b"x" * 100)
    dst.conn.send_eof()
    assert src.conn.relay_to(dst.conn, 1 << 20) == 0
    assert src.conn.recv_available() == 100


def test_relay_of_nothing_rearms_the_readable_event():
    # as recv() finding nothing: the next data raises DataReadable again
    src, dst = _src_dst()
    src.send(ACK, 1, 1, payload=b"x" * 100)
    assert [type(e) for e in src.events()] == [ev.DataReadable]
    assert src.conn.relay_to(dst.conn, 1 << 20) == 100
    assert src.conn.relay_to(dst.conn, 1 << 20) == 0
    src.send(ACK, 101, 1, payload=b"y" * 100)
    assert [type(e) for e in src.events()] == [ev.DataReadable]


def test_next_event_not_flow_passes_over_data_events_only():
    src, _ = _src_dst()
    src.send(ACK, 1, 1, payload=b"x" * 100)
    src.send(ACK | FIN, 101, 1)
    # queued: DataReadable, EofReceived; the relay sees only the FIN
    assert type(src.conn.next_event_not_flow()) is ev.EofReceived
    assert src.conn.next_event_not_flow() is None
    assert src.conn.next_event() is None
