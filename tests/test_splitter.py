"""The split connection over in-memory ports, in virtual time: a client engine
and a server engine (stackpep's own, driven as trio streams) talk through the
splitter exactly as two real hosts would talk through the box.

What is checked: addresses stay the endpoints' own on both sides; data both
ways; half-close each way; handshake policy (SYN-ACK only after the server
accepted; refused -> RST; silent -> nothing, entry freed after the timeout;
immediate mode); RST propagation; idle timeout; table limit with its counter;
RST for unknown flows; relay memory bounded when the server does not read."""
import hashlib
import os
import struct

import pytest
import trio
import trio.testing

from stackpep.io.ports import MemoryPort, MemoryRouter
from stackpep.pep.api import open_pep
from stackpep.pep.config import from_dict
from stackpep._fast import tcp
from stackpep._fast.checksum import internet_checksum
from stackpep.pep.reset import reset_for
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.stream import EngineDriver, TcpStream
from stackpep.wire import Segment, parse_packet

C4, S4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
C6 = bytes.fromhex("fd000001" + "00" * 11 + "02")
S6 = bytes.fromhex("fd000002" + "00" * 11 + "02")


def pep_config(**over):
    d = {"interfaces": {"client": ["c"], "server": ["s"]},
         "intercept": {"prefixes": ["198.18.1.0/24", "fd00:2::/64"], "ports": [80]},
         "handshake": {"timeout": 5.0}}
    for k, v in over.items():
        d.setdefault(k, {}).update(v)
    return from_dict(d)


def addrs_of(pkt):
    if pkt[0] >> 4 == 4:
        return bytes(pkt[12:16]), bytes(pkt[16:20])
    return bytes(pkt[8:24]), bytes(pkt[24:40])


class Box:
    """Client host and server host joined through the splitter's memory ports."""

    def __init__(self, nursery, client_addr=C4, server_addr=S4, server_mode="listen"):
        self.nursery = nursery
        self.cport = MemoryPort("c", client_side=True)
        self.sport = MemoryPort("s", client_side=False)
        self.router = MemoryRouter([("198.18.0.0/24", self.cport), ("fd00:1::/64", self.cport),
                                    ("198.18.1.0/24", self.sport), ("fd00:2::/64", self.sport)])
        self.client_addr, self.server_addr = client_addr, server_addr
        self.server_mode = server_mode  # listen | refuse | silent
        self.client_wire = []  # every packet on the client's wire, both ways
        self.server_wire = []
        self.servers = {}  # client port -> server driver
        self.accepted = trio.open_memory_channel(100)
        self.cport.on_send = self._to_client
        self.sport.on_send = self._to_server
        self.clients = {}

    # packets the splitter emits
    def _to_client(self, pkt):
        self.client_wire.append(pkt)
        d = self.clients.get(struct.unpack("!H", pkt[(pkt[0] & 15) * 4 + 2 if pkt[0] >> 4 == 4 else 42:][:2])[0])
        if d is not None:
            d.deliver(pkt)

    def _to_server(self, pkt):
        self.server_wire.append(pkt)
        off = (pkt[0] & 15) * 4 if pkt[0] >> 4 == 4 else 40
        sport_ = struct.unpack("!H", pkt[off:off + 2])[0]
        flags = pkt[off + 13]
        if self.server_mode == "silent":
            return
        if self.server_mode == "refuse":
            rst = reset_for(pkt)
            if rst is not None:
                self.sport.inject(rst)
            return
        d = self.servers.get(sport_)
        if d is None and flags & 0x02:
            conn = tcp.TcpConnection(TcpConfig(), self.server_addr, 80, self.client_addr, sport_,
                                     int.from_bytes(os.urandom(4), "big"))

            def tx(p):
                self.server_wire.append(p)
                self.sport.inject(p)

            d = self.servers[sport_] = EngineDriver(conn, tx)
            d.listen()
            self.nursery.start_soon(d.run)
            self.accepted[0].send_nowait(TcpStream(d))
        if d is not None:
            d.deliver(pkt)

    async def connect(self, port=40000, wait=True, config=None):
        conn = tcp.TcpConnection(config or TcpConfig(), self.client_addr, port, self.server_addr, 80,
                                 int.from_bytes(os.urandom(4), "big"))

        def tx(p):
            self.client_wire.append(p)
            self.cport.inject(p)

        d = self.clients[port] = EngineDriver(conn, tx)
        self.nursery.start_soon(d.run)
        d.connect()
        s = TcpStream(d)
        if wait:
            await s.wait_connected()
        return s

    async def accept(self):
        return await self.accepted[1].receive()


async def recv_all(stream, n=None):
    buf = bytearray()
    while n is None or len(buf) < n:
        d = await stream.receive_some(1 << 16)
        if not d:
            break
        buf += d
    return bytes(buf)


def run_virtual(fn):
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_data_both_ways_with_real_addresses_and_half_close(fam):
    ca, sa = (C4, S4) if fam == "v4" else (C6, S6)
    up, down = os.urandom(300_000), os.urandom(200_000)

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, ca, sa)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                async with trio.open_nursery() as n2:
                    n2.start_soon(c.send_all, up)
                    got_up = await recv_all(s, len(up))
                assert got_up == up
                await c.send_eof()  # client half-closes ...
                assert await s.receive_some(10) == b""  # ... the server sees EOF
                await s.send_all(down)  # ... and can still send
                await s.send_eof()
                assert await recv_all(c) == down
                st = pep.statistics()
                assert st["connections_opened"] == 1
                st = pep.statistics()
                while st["connections_active"] + st["connections_time_wait"]:
                    await trio.sleep(1)  # TIME-WAIT runs out in virtual time
                    st = pep.statistics()
                assert pep.statistics()["ended_closed"] == 1
            n.cancel_scope.cancel()
        # Only the two endpoints' addresses on either wire.
        for wire in (box.client_wire, box.server_wire):
            assert {addrs_of(p) for p in wire} == {(ca, sa), (sa, ca)}

    run_virtual(main)


def test_syn_ack_only_after_server_accepted_and_refusal_is_rst():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="refuse")
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect(wait=False)
                with pytest.raises(trio.BrokenResourceError):
                    await c.wait_connected()
                # the client never saw a SYN-ACK, only the RST for its SYN
                from_box = [p for p in box.client_wire if addrs_of(p)[0] == S4]
                flags = [p[20 + 13] for p in from_box]
                assert flags == [0x14]  # RST|ACK
                await trio.sleep(0.1)
                assert pep.statistics()["ended_refused"] == 1
                assert pep.statistics()["connections_active"] == 0
            n.cancel_scope.cancel()

    run_virtual(main)


def test_silent_server_client_hears_nothing_and_entry_is_freed():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="silent")
            async with open_pep(pep_config(handshake={"timeout": 3.0}), ports=[box.cport, box.sport],
                                router=box.router) as pep:
                # one SYN only, so no retransmission opens a second split connection
                c = await box.connect(wait=False, config=TcpConfig(syn_retries=0))
                t0 = trio.current_time()
                while pep.statistics()["ended_handshake_timeout"] == 0:
                    await trio.sleep(0.1)
                assert 3.0 <= trio.current_time() - t0 < 3.5
                assert pep.statistics()["connections_active"] == 0
                # nothing at all came back to the client; the server got SYNs only
                assert [p for p in box.client_wire if addrs_of(p)[0] == S4] == []
                assert {p[20 + 13] for p in box.server_wire} == {0x02}
                assert not c.driver.connected
            n.cancel_scope.cancel()

    run_virtual(main)


def test_immediate_mode_answers_at_once_then_resets_on_timeout():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n, server_mode="silent")
            cfg = pep_config(handshake={"mode": "immediate", "timeout": 2.0})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()  # established although the server never answered
                assert c.driver.connected
                with pytest.raises(trio.BrokenResourceError):
                    await c.receive_some(10)
                assert pep.statistics()["ended_handshake_timeout"] == 1
            n.cancel_scope.cancel()

    run_virtual(main)


def test_server_reset_resets_client():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                await c.send_all(b"hello")
                assert await s.receive_some(10) == b"hello"
                s.conn.abort()
                s.driver.flush()
                with pytest.raises(trio.BrokenResourceError):
                    await c.receive_some(10)
                await trio.sleep(0.1)
                assert pep.statistics()["ended_reset_by_server"] == 1
            n.cancel_scope.cancel()

    run_virtual(main)


def test_idle_timeout_resets_both_legs():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(limits={"idle_timeout": 30.0})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                t0 = trio.current_time()
                with pytest.raises(trio.BrokenResourceError):
                    await c.receive_some(10)
                assert 30.0 <= trio.current_time() - t0 < 31.0
                with pytest.raises(trio.BrokenResourceError):
                    await s.receive_some(10)
                assert pep.statistics()["ended_idle_timeout"] == 1
            n.cancel_scope.cancel()

    run_virtual(main)


def test_table_limit_drops_syn_and_counts():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(limits={"max_connections": 1})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                await box.connect(40000)
                await box.accept()
                c2 = await box.connect(40001, wait=False)
                await trio.sleep(2.5)  # the client retransmits its SYN meanwhile
                assert not c2.driver.connected
                syns = [p for p in box.client_wire if p[20:22] == (40001).to_bytes(2, "big") and p[33] == 0x02]
                assert len(syns) >= 2
                st = pep.statistics()
                assert st["drop_table_full"] == len(syns) and st["connections_opened"] == 1
            n.cancel_scope.cancel()

    run_virtual(main)


def seg(src, sport, dst, dport, flags, seq, ack, payload=b""):
    """An intact segment (checksums filled by the wire layer)."""
    s = Segment()
    s.ip_version = 4 if len(src) == 4 else 6
    s.src, s.dst, s.sport, s.dport = src, dst, sport, dport
    s.flags, s.seq, s.ack, s.window, s.ttl = flags, seq, ack, 1000, 64
    return s.to_bytes(payload)


def test_unknown_flow_gets_rst_and_not_intercepted_is_ignored():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                box.cport.inject(seg(C4, 40000, S4, 80, 0x10, 1000, 777))  # ACK of a flow nobody knows
                box.cport.inject(seg(C4, 40000, S4, 81, 0x10, 1000, 777))  # port 81 is not intercepted
                await trio.sleep(0.1)
                (rst,) = box.client_wire[-1:]
                assert addrs_of(rst) == (S4, C4)
                sp, dp, seq, ack, off, flags = struct.unpack("!HHIIBB", rst[20:34])
                assert (sp, dp, seq, flags) == (80, 40000, 777, 0x04)  # RFC 9293 §3.10.7.1
                st = pep.statistics()
                assert st["drop_unknown_flow"] == 1 and st["rst_sent_unknown_flow"] == 1
                assert st["drop_not_intercepted"] == 1 and st["connections_opened"] == 0
            n.cancel_scope.cancel()

    run_virtual(main)


def test_relay_memory_stays_bounded_when_server_does_not_read():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(limits={"relay_buffer": 16384})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                sent = 0
                chunk = b"x" * 65536
                with trio.move_on_after(20):
                    while True:
                        await c.send_all(chunk)
                        sent += len(chunk)
                (conn,) = pep.connections()
                # The client is stalled: what it got rid of sits in bounded buffers.
                assert all(len(leg.pending) <= 16384 for leg in conn.legs)
                # Bound: the client's send buffer, both legs' buffers on the box, the
                # server's receive buffer, the relay buffer.
                t = TcpConfig()
                bound = 2 * t.snd_buf + 2 * t.rcv_buf + 16384
                assert t.rcv_buf < sent <= bound + len(chunk)
                # ... and nothing was lost: the server reads it all once it starts.
                await c.send_eof()
                got = 0
                while True:
                    d = await s.receive_some(1 << 16)
                    if not d:
                        break
                    got += len(d)
                # the client's send_all that was cancelled may have queued part of a chunk
                assert sent <= got < sent + len(chunk)
            n.cancel_scope.cancel()

    run_virtual(main)


def test_a_failing_connection_is_reset_and_the_box_goes_on():
    class Boom(Exception):
        pass

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c1 = await box.connect(40000)
                s1 = await box.accept()
                (conn,) = pep.connections()
                real = conn.legs[0].engine

                class Exploding:  # the client leg's engine raises on the next packet
                    def __getattr__(self, name):
                        return getattr(real, name)

                    def receive_packet(self, packet, now):
                        raise Boom("engine bug")

                conn.legs[0].engine = Exploding()
                # (its segments would go from the capture to the real engine in C: the
                # Python path, SplitConnection.deliver, is what fails here)
                pep.dispatcher.fast.discard(conn.key)
                await c1.send_all(b"x")
                with pytest.raises(trio.BrokenResourceError):
                    await s1.receive_some(10)  # the server leg was reset
                st = pep.statistics()
                assert st["ended_error"] == 1
                # a second connection works as before
                c2 = await box.connect(40001)
                s2 = await box.accept()
                await c2.send_all(b"still here")
                assert await s2.receive_some(100) == b"still here"
            n.cancel_scope.cancel()

    run_virtual(main)


def test_corrupt_segments_open_nothing_and_are_counted_by_reason():
    # A SYN that fails a checksum or an integrity check creates no
    # state and sends nothing to the server.
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                syn = bytearray(seg(C4, 40000, S4, 80, 0x02, 1000, 0))
                bad_tcp = bytearray(syn); bad_tcp[36] ^= 0xFF          # TCP checksum
                bad_ip = bytearray(syn); bad_ip[10] ^= 0xFF            # IPv4 header checksum
                short = bytearray(syn[:32]); short[2:4] = (32).to_bytes(2, "big")  # TCP header cut at 12 bytes
                short[10:12] = b"\0\0"
                short[10:12] = internet_checksum(bytes(short[:20])).to_bytes(2, "big")
                doff = bytearray(syn); doff[32] = 4 << 4               # data offset < 5
                for p in (bad_tcp, bad_ip, short, doff):
                    box.cport.inject(bytes(p))
                await trio.sleep(1)
                st = pep.statistics()
                assert st["connections_opened"] == 0 and st["packets_in"] == 0
                assert box.server_wire == [] and box.client_wire == []
                assert st["ports"]["c"]["rx_drop_malformed"] == 4
                assert {k: v for k, v in st["ports"]["c"].items() if k.startswith("rx_drop_") and k != "rx_drop_malformed"
                        and v} == {"rx_drop_tcp_checksum": 1, "rx_drop_ipv4_checksum": 1,
                                   "rx_drop_tcp_truncated": 1, "rx_drop_tcp_doff": 1}
            n.cancel_scope.cancel()

    run_virtual(main)


def test_unknown_flow_rsts_are_rate_limited_per_source_and_overall():
    # RFC 5961 §7: [resets] per_source 3 at once (1/s), the box 5 at once (2/s).
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(resets={"per_source_rate": 1, "per_source_burst": 3, "rate": 2, "burst": 5})
            a, b = C4, bytes([198, 18, 0, 3])
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                for i in range(10):
                    box.cport.inject(seg(a, 40000, S4, 80, 0x10, 1000 + i, 777))
                for i in range(10):
                    box.cport.inject(seg(b, 40000, S4, 80, 0x10, 1000 + i, 777))
                await trio.sleep(0.1)
                st = pep.statistics()
                # a: 3 sent, then its own bucket is empty; b: the box's last 2, then the box's is empty
                assert (st["rst_sent_unknown_flow"], st["rst_suppressed_per_source"], st["rst_suppressed_total"]) \
                    == (5, 7, 8)
                assert st["drop_unknown_flow"] == 20
                # (each RST is sent from a task of its own: any order)
                assert sorted(addrs_of(p)[1] for p in box.client_wire) == [a] * 3 + [b] * 2
                await trio.sleep(1.0)  # one token more for a, two for the box
                box.cport.inject(seg(a, 40000, S4, 80, 0x10, 2000, 777))
                box.cport.inject(seg(a, 40000, S4, 80, 0x10, 2001, 777))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert (st["rst_sent_unknown_flow"], st["rst_suppressed_per_source"], st["rst_suppressed_total"]) \
                    == (6, 8, 8)
            n.cancel_scope.cancel()

    run_virtual(main)


def test_late_segments_of_a_reset_flow_are_dropped_not_answered():
    # The client resets; the server's in-flight data for that flow arrives after
    # the box dropped the connection.  Both peers already got the box's RST, so
    # for resets.recent_close_time the late segments are dropped (counted), not
    # each answered with a RST; afterwards the flow is unknown.
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(resets={"recent_close_time": 2})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                await s.send_all(b"hello")
                assert await c.receive_some(10) == b"hello"
                c.conn.abort()
                c.driver.flush()
                with pytest.raises(trio.BrokenResourceError):
                    await s.receive_some(10)
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["ended_reset_by_client"] == 1 and st["connections_active"] == 0
                assert st["flows_recently_closed"] == 1
                n_server = len(box.server_wire)
                for i in range(50):
                    box.sport.inject(seg(S4, 80, C4, 40000, 0x18, 5000 + 1000 * i, 1, b"x" * 1000))
                box.sport.inject(seg(S4, 80, C4, 40000, 0x10, 60000, 1))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["drop_recently_closed"] == 51 and st["drop_unknown_flow"] == 0
                assert st["rst_sent_unknown_flow"] == 0 and len(box.server_wire) == n_server
                await trio.sleep(2.0)
                box.sport.inject(seg(S4, 80, C4, 40000, 0x18, 99000, 1, b"y"))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["drop_recently_closed"] == 51 and st["rst_sent_unknown_flow"] == 1
                (rst,) = box.server_wire[n_server:]
                r = parse_packet(rst)
                assert (r.src, r.dst, r.sport, r.dport, r.flags, r.seq) == (C4, S4, 40000, 80, 0x04, 1)
            n.cancel_scope.cancel()

    run_virtual(main)


def test_late_ack_of_a_normally_closed_flow_is_dropped_data_gets_rst():
    # After both FINs and the legs' TIME-WAIT, a late ACK-only segment is dropped
    # (counted); data on a flow that is gone gets RFC 9293 §3.10.7.1's RST.
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(resets={"recent_close_time": 30},
                             tcp={"client": {"time_wait_us": 1_000_000}, "server": {"time_wait_us": 1_000_000}})
            short_tw = TcpConfig(time_wait_us=1_000_000)
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect(config=short_tw)
                s = await box.accept()
                await c.send_eof()
                assert await recv_all(s) == b""
                await s.send_eof()
                assert await recv_all(c) == b""
                while pep.statistics()["ended_closed"] == 0:
                    await trio.sleep(0.5)
                await trio.sleep(3)  # every TIME-WAIT over
                st = pep.statistics()
                assert st["connections_active"] == 0 and st["connections_time_wait"] == 0
                assert st["flows_recently_closed"] == 1
                before = len(box.client_wire)
                box.cport.inject(seg(C4, 40000, S4, 80, 0x10, 10, 20))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["drop_recently_closed"] == 1 and st["rst_sent_unknown_flow"] == 0
                box.cport.inject(seg(C4, 40000, S4, 80, 0x18, 10, 20, b"late"))
                await trio.sleep(0.1)
                st = pep.statistics()
                assert st["drop_recently_closed"] == 1 and st["rst_sent_unknown_flow"] == 1
                (rst,) = [p for p in box.client_wire[before:] if parse_packet(p).flags & 0x04]
                assert parse_packet(rst).seq == 20
            n.cancel_scope.cancel()

    run_virtual(main)
