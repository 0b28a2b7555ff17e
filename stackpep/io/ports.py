"""Packet ports: where the splitter gets captured TCP and puts what it emits.

The split-connection logic talks only to `PacketPort` and `Router`, so the same
code runs over real interfaces (AF_PACKET, below) or in memory (tests).

A port yields batches of (flow_key, ip_packet, tcp_flags); flow_key is
client address + client port + server address + server port (see
stackpep._fast.capture.flow_key), whichever direction the packet travels.
An ICMP error comes as (key of the flow it quotes, ip_packet, ICMP_ERROR),
its checksum checked (stackpep.pep.icmp).
"""
from __future__ import annotations

import abc
import ipaddress
from typing import Dict, List, Optional, Sequence, Tuple

import trio

from stackpep._fast.capture import ICMP_ERROR, PacketRing, flow_key, icmp_error_key, split_key
from stackpep._fast.wire import WireError, parse_packet

Batch = List[Tuple[bytes, bytes, int]]

__all__ = ["PacketPort", "Router", "AfPacketPort", "KernelRouter", "MemoryPort", "MemoryRouter",
           "flow_key", "split_key"]


class PacketPort(abc.ABC):
    """One interface's worth of captured and emitted IP packets."""

    name: str
    client_side: bool  # True: faces clients; False: faces servers

    @abc.abstractmethod
    async def receive_batch(self) -> Batch:
        """Wait until packets arrived; return them (never an empty list unless closed).
        Every TCP packet a port yields has been checked: IPv4 header and TCP
        checksums verified (or vouched for by the kernel), so the engines take them
        without summing them again (SplitConnection.deliver)."""

    def poll_batch(self) -> Batch:
        """What has arrived by now, without waiting (possibly nothing): the
        dispatcher reads the rings again between slices of a long pass."""
        return []

    def poll_fast(self, fast, now: int) -> Batch:
        """poll_batch, with the segments of the flows `fast` (a
        stackpep._fast.capture.FastFlows) has an opened leg for handed to that
        leg's engine at `now` (µs) and left out of the batch; `fast.take()`
        reports them.  Here over the batch poll_batch made (same rules, same C
        code); a ring port does it from ring memory."""
        batch = self.poll_batch()
        return fast.filter(batch, self.client_side, now) if batch else batch

    # -- waited on by the dispatcher's one loop (stackpep.pep.dispatcher._serve) --------
    def wait_fd(self) -> Optional[int]:
        """A file descriptor that polls readable when `poll_batch` has something,
        or None: then the dispatcher runs a `receive_batch` task for this port."""
        return None

    def pending(self) -> bool:
        """More is ready now than the last `poll_batch` took (the fd may not say so)."""
        return False

    def rx_bytes(self) -> int:
        """Bytes received so far (a batch's size: the wake-up grid's hold)."""
        return 0

    @abc.abstractmethod
    def send(self, packets: List[bytes], hop: object) -> int:
        """Emit IP packets towards `hop` (from Router.next_hop); returns the number sent."""

    @abc.abstractmethod
    def statistics(self) -> Dict[str, int]:
        ...

    def close(self) -> None:
        pass

    # -- batching what goes out --------------------------------------------------------
    def defer(self) -> None:
        """From now until `flush()`, `send()` may queue instead of sending: the
        caller is about to hand over a whole batch's worth of packets (several
        connections' turns) and `flush()` emits them in one go."""

    def flush(self) -> int:
        """Emit what `send()` queued since `defer()`; returns the number sent."""
        return 0

    # -- the last packets (a PEP stopping: its resets must reach every peer) ----------
    def hold_failed_sends(self) -> None:
        """From now on keep every packet the device refuses (a full queue) for
        `retry_held`, in order, instead of dropping it as TCP's own loss."""

    async def retry_held(self, deadline: float) -> int:
        """Send what `hold_failed_sends` kept, retrying until `deadline` (trio
        time); returns the number still unsent."""
        return 0


class Router(abc.ABC):
    """Where packets for an address leave: a port and a link-level next hop."""

    @abc.abstractmethod
    async def next_hop(self, addr: bytes) -> Tuple[PacketPort, object]:
        """Raise LookupError if addr is unreachable."""

    def statistics(self) -> Dict[str, int]:
        """The lookup counters (KernelRouter: stackpep.io.routes.NextHopCache.counters)."""
        return {}

    def warm(self) -> None:
        """Blocking (run in a thread before the first packet): load whatever the
        first lookups would otherwise wait for."""


# ------------------------------------------------------------------ AF_PACKET
#: A pass that brought less than this many bytes (all rings together) means a low
#: packet rate: the dispatcher's one loop then looks at the rings again only at the
#: next multiple of `capture.hold_us` (stackpep.pep.dispatcher).
HOLD_MAX_BYTES = 64 * 1024


class AfPacketPort(PacketPort):
    """A TPACKET_V3 ring (stackpep._fast.capture.PacketRing) as a port.

    The dispatcher's one loop reads it with `poll_batch` and waits on its fd
    (`wait_fd`) together with every other ring, and applies the wake-up grid
    (`capture.hold_us`, interrupt moderation as NAPI does for a NIC) for the whole
    box.  `receive_batch` is a plain read for a caller of its own: the next batch,
    waiting on the ring's fd when nothing is there."""

    def __init__(self, ifname: str, client_side: bool, block_size: int = 1 << 18, block_count: int = 64,
                 retire_ms: int = 1, mark: int = 0, gso: bool = True, fanout_group=None, hc_table=None) -> None:
        self.name = ifname
        self.client_side = client_side
        self.hc_table = hc_table  # SCPS compressed headers (IP protocol 105) are expanded through it
        # fanout_group: None, "new" or a group id (PacketRing; stackpep.pep.workers)
        self.ring = PacketRing(ifname, client_side=client_side, block_size=block_size, block_nr=block_count,
                               retire_ms=retire_ms, mark=mark, gso=gso, fanout_group=fanout_group,
                               hc_table=hc_table)
        self.ifindex = self.ring.ifindex
        self._held: Optional[List[Tuple[bytes, object]]] = None
        self._txq: Optional[Dict[bytes, List[bytes]]] = None  # deferred packets by link-level header (defer)

    async def receive_batch(self) -> Batch:
        ring = self.ring
        while True:
            batch = ring.read_batch()
            if batch:
                return batch
            if not ring.pending():
                await trio.lowlevel.wait_readable(ring.fileno())

    def poll_batch(self) -> Batch:
        return self.ring.read_batch()

    def poll_fast(self, fast, now: int) -> Batch:
        return self.ring.read_batch(16, fast, now)

    def wait_fd(self) -> int:
        return self.ring.fileno()

    def pending(self) -> bool:
        return self.ring.pending()

    def rx_bytes(self) -> int:
        return self.ring.rx_bytes

    def send(self, packets: List[bytes], hop) -> int:
        held = self._held
        if held is None:
            q = self._txq
            if q is not None:
                # one sendmmsg() per batch instead of one per connection turn; runs
                # of segments queued by several turns merge into GSO super-frames
                macs = hop.macs
                pending = q.get(macs)
                if pending is None:
                    q[macs] = list(packets)
                else:
                    pending.extend(packets)
                return len(packets)
            return self.ring.send_batch(packets, hop.macs)
        # One at a time, so a refused packet is known; once one is held the rest
        # queue behind it (a RST must not overtake the data before it).
        sent = 0
        for p in packets:
            if held or not self.ring.send_batch([p], hop.macs):
                held.append((p, hop.macs))
            else:
                sent += 1
        return sent

    def defer(self) -> None:
        if self._txq is None:
            self._txq = {}

    def flush(self) -> int:
        q = self._txq
        if q is None:
            return 0
        self._txq = None
        sent = 0
        for macs, pkts in q.items():
            sent += self.ring.send_batch(pkts, macs)
        return sent

    def hold_failed_sends(self) -> None:
        self.flush()
        if self._held is None:
            self._held = []

    async def retry_held(self, deadline: float) -> int:
        held = self._held or []
        while held and trio.current_time() < deadline:
            p, macs = held[0]
            if self.ring.send_batch([p], macs):
                held.pop(0)
            else:  # ENOBUFS / EAGAIN: the queue drains in a moment
                await trio.sleep(0.002)
        return len(held)

    def statistics(self) -> Dict[str, int]:
        return self.ring.statistics()

    def close(self) -> None:
        self.ring.close()


class KernelRouter(Router):
    """Route and neighbour lookups in the kernel tables (pyroute2), cached."""

    def __init__(self, ports: Sequence[AfPacketPort], ttl: float = 30.0) -> None:
        from stackpep.io.routes import NextHopCache, Rtnl

        self.rtnl = Rtnl()
        self.cache = NextHopCache(self.rtnl, ttl=ttl)
        self.by_index = {p.ifindex: p for p in ports}
        self._lock = trio.Lock()

    async def next_hop(self, addr: bytes):
        # Fast path: cached entries (or a known route and gateway) need no thread hop.
        nh = self.cache.lookup_nowait(addr)
        if nh is None:
            async with self._lock:
                nh = await trio.to_thread.run_sync(self.cache.lookup, addr)
        port = self.by_index.get(nh.ifindex)
        if port is None:
            raise LookupError(f"{ipaddress.ip_address(addr)} leaves by {nh.ifname}, which stackpep does not drive")
        return port, nh

    def warm(self) -> None:
        """The route snapshot and the ports' links, loaded at start: on a cold
        cache the box's first connection waited ~25-60 ms for the route dump
        (a netlink request per table and family) before it could answer."""
        self.cache.warm(list(self.by_index))

    def next_hop_nowait(self, addr: bytes):
        """(port, hop) if the cache knows addr, else None (then: await next_hop)."""
        nh = self.cache.lookup_nowait(addr)
        if nh is None:
            return None
        port = self.by_index.get(nh.ifindex)
        return None if port is None else (port, nh)

    def statistics(self) -> Dict[str, int]:
        # route_cache_hits/misses (the route snapshot), route_table_dumps,
        # route_table_invalidations, route_queries (netlink round trips)
        return dict(self.cache.counters)

    def close(self) -> None:
        self.rtnl.close()


# --------------------------------------------------------------------- memory
class MemoryPort(PacketPort):
    """An in-memory port: `inject()` plays the wire towards us, `sent` (or the
    `on_send` callback) receives what we emit."""

    def __init__(self, name: str, client_side: bool, max_queue: int = 10000, hc_table=None) -> None:
        self.name = name
        self.client_side = client_side
        self.hc_table = hc_table  # as AfPacketPort: protocol 105 is expanded through it, else refused
        self._send, self._recv = trio.open_memory_channel(max_queue)
        self.sent: List[bytes] = []
        self.on_send = None
        self.counters = {"rx_packets": 0, "tx_packets": 0, "rx_drop_queue_full": 0, "rx_drop_malformed": 0}

    def inject(self, packet: bytes) -> None:
        """A packet arriving on this interface (raw IP, TCP inside).  Checked as
        the capture checks it (the wire layer, checksums included): a refused one
        is counted as rx_drop_malformed and rx_drop_<reason>."""
        if self.hc_table is not None and len(packet) >= 20 and (
                (packet[0] >> 4 == 4 and packet[9] == 105) or (packet[0] >> 4 == 6 and packet[6] == 105)):
            expanded = self.hc_table.expand(bytes(packet))
            if expanded is None:
                self.counters["rx_hc_dropped"] = self.counters.get("rx_hc_dropped", 0) + 1
                return
            self.counters["rx_hc_expanded"] = self.counters.get("rx_hc_expanded", 0) + 1
            packet = expanded
        try:
            key, flags = self._key(packet)
        except WireError as exc:
            self.counters["rx_drop_malformed"] += 1
            name = f"rx_drop_{exc.counter}"
            self.counters[name] = self.counters.get(name, 0) + 1
            return
        except ValueError:  # an ICMP message that is not an error quoting TCP
            self.counters["rx_drop_malformed"] += 1
            self.counters["rx_icmp_drop_malformed"] = self.counters.get("rx_icmp_drop_malformed", 0) + 1
            return
        try:
            self._send.send_nowait((key, bytes(packet), flags))
        except trio.WouldBlock:
            self.counters["rx_drop_queue_full"] += 1

    def _key(self, p: bytes):
        if len(p) >= 40 and ((p[0] >> 4 == 4 and p[9] == 1) or (p[0] >> 4 == 6 and p[6] == 58)):
            key = icmp_error_key(bytes(p), self.client_side)  # the ring's own C routine
            if key is None:
                raise ValueError("not an ICMP error we take")
            return key, ICMP_ERROR
        s = parse_packet(bytes(p), 1)
        if self.client_side:
            return flow_key(s.src, s.sport, s.dst, s.dport), s.flags
        return flow_key(s.dst, s.dport, s.src, s.sport), s.flags

    async def receive_batch(self) -> Batch:
        first = await self._recv.receive()
        return self.poll_batch([first])

    def poll_batch(self, batch: Optional[Batch] = None) -> Batch:
        batch = [] if batch is None else batch
        while True:
            try:
                batch.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self.counters["rx_packets"] += len(batch)
        return batch

    def send(self, packets: List[bytes], hop) -> int:
        self.counters["tx_packets"] += len(packets)
        if self.on_send is not None:
            for p in packets:
                self.on_send(p)
        else:
            self.sent.extend(packets)
        return len(packets)

    def statistics(self) -> Dict[str, int]:
        return dict(self.counters)


class MemoryRouter(Router):
    """Routes by prefix to memory ports: routes = [(prefix, port)]."""

    def __init__(self, routes: Sequence[Tuple[str, PacketPort]]) -> None:
        self.routes = [(ipaddress.ip_network(p), port) for p, port in routes]

    async def next_hop(self, addr: bytes):
        found = self.next_hop_nowait(addr)
        if found is None:
            raise LookupError(f"no route to {ipaddress.ip_address(addr)}")
        return found

    def next_hop_nowait(self, addr: bytes):
        ip = ipaddress.ip_address(addr)
        for net, port in self.routes:
            if ip.version == net.version and ip in net:
                return port, None
        return None
