"""The TCP engine behind a Linux TUN device: the thinnest possible I/O edge.

A TUN device hands us whole IP packets the kernel routes to it and takes IP
packets we write as if they arrived on an interface.  ``TunDevice`` is the
device; ``TunTcpEndpoint`` shuttles packets between one device and one
``TcpConnection`` in a plain ``poll()`` loop (the engine stays sans-IO: the
loop passes ``now`` in microseconds from the monotonic clock to the engine's
``stackpep.tcp.driver.ConnectionDriver``, which fires its timer when due).

``open_tun_stream`` does the same under Trio and returns a
``stackpep.tcp.stream.TcpStream``.  ``python -m stackpep.tcp.tun [--trio]``
runs a bulk transfer over a device (used by the kernel interop tests) and
prints a JSON result with the SHA-256 of the bytes sent and received and the
engine's statistics.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import ipaddress
import json
import os
import random
import select
import struct
import sys
import time
from dataclasses import asdict, is_dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from stackpep.tcp.driver import ConnectionDriver
from stackpep.tcp.events import ConnectionProgress, TcpEvent
from stackpep.tcp.states import TcpState

__all__ = ["TunDevice", "TunTcpEndpoint", "bulk_data", "tcp_flow_of", "open_tun_stream", "trio_transfer"]

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

_READ_BATCH = 512  # packets read per wake-up before the engine's output is flushed


class TunDevice:
    """An open TUN device (IFF_TUN | IFF_NO_PI): read/write whole IP packets.

    Opening a name that exists (``ip tuntap add dev NAME mode tun``) attaches
    to it; otherwise the kernel creates a device that lives as long as the fd.
    The device belongs to the network namespace of the opening process.
    """

    def __init__(self, name: str, nonblocking: bool = True):
        if len(name.encode()) > 15:
            raise ValueError("interface names are at most 15 bytes")
        flags = os.O_RDWR | (os.O_NONBLOCK if nonblocking else 0)
        self.fd = os.open("/dev/net/tun", flags)
        try:
            ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            res = fcntl.ioctl(self.fd, TUNSETIFF, ifr)
        except OSError:
            os.close(self.fd)
            raise
        self.name = res[:16].rstrip(b"\0").decode()

    def fileno(self) -> int:
        return self.fd

    def read(self, bufsize: int = 65536) -> Optional[bytes]:
        """One packet, or None if none is waiting (non-blocking device)."""
        try:
            return os.read(self.fd, bufsize)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        os.write(self.fd, packet)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "TunDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tcp_flow_of(pkt: bytes) -> Optional[Tuple[bytes, int, bytes, int, int]]:
    """(src, sport, dst, dport, tcp_flags) of an IPv4/IPv6 TCP packet, else None.

    Only the fixed headers are looked at (no IPv6 extension headers): enough
    to demultiplex; the engine validates everything else.
    """
    if len(pkt) < 20:
        return None
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 15) * 4
        if pkt[9] != 6 or len(pkt) < ihl + 14:
            return None
        src, dst, off = pkt[12:16], pkt[16:20], ihl
    elif v == 6:
        if len(pkt) < 54 or pkt[6] != 6:
            return None
        src, dst, off = pkt[8:24], pkt[24:40], 40
    else:
        return None
    sport, dport = struct.unpack_from("!HH", pkt, off)
    return src, sport, dst, dport, pkt[off + 13]


def bulk_data(nbytes: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (both ends of a test can regenerate them)."""
    return random.Random(seed).randbytes(nbytes)


def _snapshot(obj: Any) -> Any:
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_snapshot(v) for v in obj]
    if is_dataclass(obj):
        return _snapshot(asdict(obj))
    if hasattr(obj, "_asdict"):
        return _snapshot(obj._asdict())
    if hasattr(obj, "__slots__"):
        return {k: _snapshot(getattr(obj, k)) for k in obj.__slots__ if hasattr(obj, k)}
    if hasattr(obj, "__dict__"):
        return {k: _snapshot(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return repr(obj)


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class TunTcpEndpoint(ConnectionProgress):
    """One engine connection behind a TUN device, driven by a poll() loop.

    ``engine_factory(remote_addr, remote_port)`` builds the ``TcpConnection``
    (for a passive open it is called when the first SYN for ``local_port``
    arrives, since the engine is created per 4-tuple).
    """

    def __init__(self, tun: TunDevice, local_addr: bytes, local_port: int,
                 engine_factory: Callable[[bytes, int], Any], clock: Callable[[], int] = _now_us):
        super().__init__()
        self.tun = tun
        self.local_addr = local_addr
        self.local_port = local_port
        self.factory = engine_factory
        self.clock = clock
        self.conn: Any = None
        self.driver: Optional[ConnectionDriver] = None
        self.remote: Optional[Tuple[bytes, int]] = None
        self.ignored = 0  # packets on the device that were not for this connection
        self.events: list = []

    # -- opening ------------------------------------------------------------------
    def connect(self, remote_addr: bytes, remote_port: int) -> None:
        self.remote = (remote_addr, remote_port)
        self._attach(self.factory(remote_addr, remote_port))
        self.conn.connect(self.clock())
        self.flush()

    def accept(self, timeout: float = 10.0) -> None:
        """Wait for a SYN to local_port and hand it to a listening engine."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.tun.fd, select.POLLIN)
        while time.monotonic() < deadline:
            poller.poll(100)
            while True:
                pkt = self.tun.read()
                if pkt is None:
                    break
                flow = tcp_flow_of(pkt)
                if (flow is None or flow[2] != self.local_addr or flow[3] != self.local_port
                        or flow[4] & 0x17 != 0x02):  # SYN without ACK/RST/FIN
                    self.ignored += 1
                    continue
                self.remote = (flow[0], flow[1])
                self._attach(self.factory(flow[0], flow[1]))
                self.conn.listen()
                self.conn.receive_packet(pkt, self.clock())
                self.flush()
                return
        raise TimeoutError(f"no SYN for port {self.local_port} within {timeout} s")

    def _attach(self, conn: Any) -> None:
        self.conn = conn
        self.driver = ConnectionDriver(conn, self._on_event, self._write_all)

    def _write_all(self, pkts) -> None:
        write = self.tun.write
        for pkt in pkts:
            write(pkt)

    def _on_event(self, ev: TcpEvent) -> bool:
        self.events.append(type(ev).__name__)  # reported by name in transfer()'s summary
        self.apply_event(ev)
        return False

    # -- the loop -----------------------------------------------------------------
    def _ours(self, pkt: bytes) -> bool:
        flow = tcp_flow_of(pkt)
        return (flow is not None and flow[2] == self.local_addr and flow[3] == self.local_port
                and (flow[0], flow[1]) == self.remote)

    def flush(self) -> None:
        self.driver.flush(self.clock())
        self.driver.drain_events()

    def poll_once(self, max_wait: float) -> None:
        """Wait for packets or the engine's timer (at most max_wait s), then process."""
        conn = self.conn
        now = self.clock()
        deadline = conn.get_timer()
        wait_ms = max_wait * 1000.0
        if deadline is not None:
            wait_ms = min(wait_ms, max(0.0, (deadline - now) / 1000.0))
        r, _, _ = select.select([self.tun.fd], [], [], wait_ms / 1000.0)
        if r:
            for _ in range(_READ_BATCH):
                pkt = self.tun.read()
                if pkt is None:
                    break
                if self._ours(pkt):
                    conn.receive_packet(pkt, self.clock())
                else:
                    self.ignored += 1
        self.driver.fire_timer(self.clock())
        self.flush()

    def transfer(self, send_data: bytes = b"", receive: bool = True, timeout: float = 120.0,
                 send_eof: bool = True, linger: float = 2.0) -> Dict[str, Any]:
        """Send ``send_data`` (then FIN), read until the peer's FIN; return a summary.

        The engine's receive buffer is drained as soon as data arrives (hashing
        it), so a slow reader never limits the test.
        """
        conn = self.conn
        start = time.monotonic()
        hasher = hashlib.sha256()
        received = 0
        view = memoryview(send_data)
        sent = 0
        eof_sent = False
        while True:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"transfer not done after {timeout} s: sent {sent}/{len(send_data)},"
                                   f" received {received}, state {conn.state}")
            if sent < len(view):
                n = conn.send(view[sent:sent + (1 << 20)])
                sent += n
            elif send_eof and not eof_sent and self.connected:
                # not before the handshake: CLOSE in SYN-SENT deletes the
                # connection (RFC 9293 §3.10.4), queued data and all
                conn.send_eof()
                eof_sent = True
            while receive:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                hasher.update(chunk)
                received += len(chunk)
            self.flush()
            if self.reset:
                raise ConnectionResetError(f"engine connection reset (state {conn.state})")
            done_sending = sent == len(view) and (eof_sent or not send_eof)
            if done_sending and (self.eof_received or not receive):
                break
            self.poll_once(0.05)
        elapsed = time.monotonic() - start
        # Keep answering until both FINs are acknowledged (or linger runs out),
        # so the kernel side sees a clean close.
        end = time.monotonic() + linger
        while conn.tcp_state not in (TcpState.CLOSED, TcpState.TIME_WAIT) and time.monotonic() < end:
            self.poll_once(0.05)
        return {
            "sent": sent,
            "sent_sha256": hashlib.sha256(send_data).hexdigest(),
            "received": received,
            "received_sha256": hasher.hexdigest(),
            "elapsed": elapsed,
            "final_state": conn.state,
            "ignored_packets": self.ignored,
            "events": sorted(set(self.events)),
            "statistics": _snapshot(conn.statistics()),
        }


# -- the same under Trio: a TcpStream over the device ---------------------------------
async def _read_packets(tun: TunDevice):
    import trio

    while True:
        pkt = tun.read()
        if pkt is None:
            await trio.lowlevel.wait_readable(tun.fd)
            continue
        yield pkt


async def open_tun_stream(nursery, tun: TunDevice, local_addr: bytes, local_port: int,
                          engine_factory: Callable[[bytes, int], Any],
                          remote: Optional[Tuple[bytes, int]] = None):
    """A ``stackpep.tcp.stream.TcpStream`` over one engine connection behind ``tun``.

    With ``remote`` an active open to it; without, wait for the first SYN to
    ``local_port`` (passive open).  The device reader and the engine's timer
    run as tasks in ``nursery``; packets for other flows are ignored.
    """
    from stackpep.tcp.stream import EngineDriver, TcpStream

    syn = None
    if remote is None:
        async for pkt in _read_packets(tun):
            flow = tcp_flow_of(pkt)
            if (flow is not None and flow[2] == local_addr and flow[3] == local_port
                    and flow[4] & 0x17 == 0x02):
                syn, remote = pkt, (flow[0], flow[1])
                break
    conn = engine_factory(*remote)
    driver = EngineDriver(conn, tun.write)
    if syn is None:
        driver.connect()
    else:
        driver.listen()
        driver.deliver(syn)

    async def reader() -> None:
        async for pkt in _read_packets(tun):
            flow = tcp_flow_of(pkt)
            if flow is not None and flow[2] == local_addr and flow[3] == local_port and (flow[0], flow[1]) == remote:
                driver.deliver(pkt)

    nursery.start_soon(reader)
    nursery.start_soon(driver.run)
    stream = TcpStream(driver)
    await stream.wait_connected()
    return stream


async def trio_transfer(stream, send_data: bytes, timeout: float = 120.0) -> Dict[str, Any]:
    """Send ``send_data`` then EOF while reading to EOF, through a TcpStream."""
    import trio

    hasher = hashlib.sha256()
    received = 0
    start = time.monotonic()

    async def sender() -> None:
        view = memoryview(send_data)
        for i in range(0, len(view), 1 << 16):
            await stream.send_all(view[i:i + (1 << 16)])
        await stream.send_eof()

    async def receiver() -> None:
        nonlocal received
        while True:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                return
            hasher.update(chunk)
            received += len(chunk)

    with trio.fail_after(timeout):
        async with trio.open_nursery() as n:
            n.start_soon(sender)
            n.start_soon(receiver)
        elapsed = time.monotonic() - start
        # answer until both FINs are acknowledged (the driver keeps running)
        with trio.move_on_after(2):
            while stream.conn.tcp_state not in (TcpState.CLOSED, TcpState.TIME_WAIT):
                await trio.sleep(0.01)
    return {
        "sent": len(send_data),
        "sent_sha256": hashlib.sha256(send_data).hexdigest(),
        "received": received,
        "received_sha256": hasher.hexdigest(),
        "elapsed": elapsed,
        "final_state": stream.conn.state,
        "statistics": _snapshot(stream.conn.statistics()),
        "via": "trio",
    }


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stackpep.tcp.tun",
                                 description="bulk transfer through the TCP engine behind a TUN device")
    ap.add_argument("--dev", required=True, help="TUN device name (attached or created)")
    ap.add_argument("--local", required=True, help="the engine's IP address")
    ap.add_argument("--port", type=int, required=True, help="the engine's TCP port")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--connect", metavar="ADDR:PORT", help="active open to ADDR:PORT ([v6]:port)")
    mode.add_argument("--listen", action="store_true", help="passive open on --port")
    ap.add_argument("--send", type=int, default=0, help="bytes to send (bulk_data(N, --seed))")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--iss", type=int, default=12345)
    ap.add_argument("--config", action="append", default=[], help="TcpConfig KEY=VALUE")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--trio", action="store_true", help="drive the engine through a Trio TcpStream")
    args = ap.parse_args(argv)

    from stackpep._fast.tcp import TcpConnection
    from stackpep.tcp.config import TcpConfig
    from stackpep.tcp.script import _config_value

    cfg = TcpConfig(**{k: _config_value(v) for k, _, v in (c.partition("=") for c in args.config)})
    local = ipaddress.ip_address(args.local).packed

    def factory(raddr: bytes, rport: int):
        return TcpConnection(cfg, local, args.port, raddr, rport, args.iss)

    data = bulk_data(args.send, args.seed)
    remote = None
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        remote = (ipaddress.ip_address(host.strip("[]")).packed, int(port))
    if args.trio:
        import trio

        async def main() -> Dict[str, Any]:
            with TunDevice(args.dev) as tun:
                async with trio.open_nursery() as nursery:
                    if remote is None:
                        print(json.dumps({"listening": True}), flush=True)
                    stream = await open_tun_stream(nursery, tun, local, args.port, factory, remote)
                    result = await trio_transfer(stream, data, timeout=args.timeout)
                    nursery.cancel_scope.cancel()
            return result

        print(json.dumps(trio.run(main)), flush=True)
        return 0
    with TunDevice(args.dev) as tun:
        ep = TunTcpEndpoint(tun, local, args.port, factory)
        if args.listen:
            print(json.dumps({"listening": True}), flush=True)
            ep.accept(timeout=args.timeout)
        else:
            ep.connect(*remote)
        result = ep.transfer(data, timeout=args.timeout)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
