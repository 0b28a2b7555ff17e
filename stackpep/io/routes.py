"""Interfaces, routes and neighbours through rtnetlink (pyroute2).

What the splitter needs to put a frame on the wire itself: the egress
interface and next hop for a destination (a route lookup as the kernel would do
it, RFC 1812 §5.2.4), the interface's MAC and MTU, and the next hop's link-layer
address (ARP, RFC 826; IPv6 neighbour discovery, RFC 4861 §7.2), asking the
kernel to resolve it when the entry is missing.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from pyroute2 import IPRoute

Addr = Union[str, bytes, ipaddress.IPv4Address, ipaddress.IPv6Address]

# include/uapi/linux/neighbour.h
NTF_USE = 0x01
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_VALID = NUD_PERMANENT | NUD_NOARP | NUD_REACHABLE | NUD_PROBE | NUD_STALE | NUD_DELAY
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
# include/uapi/linux/rtnetlink.h
RTN_UNICAST = 1
RT_TABLE_DEFAULT, RT_TABLE_MAIN, RT_TABLE_LOCAL = 253, 254, 255
#: routes a snapshot may hold at most; a bigger table (a full BGP feed) is not
#: copied: every destination then asks the kernel (RouteTable)
ROUTE_TABLE_MAX = 10000


class RouteError(LookupError):
    """No route, no such interface, or a neighbour that did not resolve."""


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mac: bytes  # 6 bytes
    mtu: int
    up: bool  # administratively up and carrier present


@dataclass(frozen=True)
class Route:
    dst: str
    ifindex: int
    gateway: Optional[str]  # None when the destination is on-link
    prefsrc: Optional[str]

    @property
    def next_hop(self) -> str:
        return self.gateway or self.dst


def _addr_str(addr: Addr) -> str:
    if isinstance(addr, bytes):
        return str(ipaddress.ip_address(addr))
    return str(ipaddress.ip_address(addr))


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _mac_bytes(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


class Rtnl:
    """One rtnetlink handle (pyroute2 IPRoute) with the lookups the splitter uses.

    Thread-safe by a lock: the splitter may call it from a worker thread.
    """

    def __init__(self) -> None:
        self._ipr = IPRoute()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._ipr.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- interfaces -----------------------------------------------------------
    def link(self, name_or_index: Union[str, int]) -> Link:
        with self._lock:
            if isinstance(name_or_index, str):
                idx = self._ipr.link_lookup(ifname=name_or_index)
                if not idx:
                    raise RouteError(f"no interface {name_or_index!r}")
                index = idx[0]
            else:
                index = name_or_index
            try:
                (msg,) = self._ipr.get_links(index)
            except Exception as exc:  # pyroute2 raises NetlinkError(ENODEV)
                raise RouteError(f"no interface index {index}: {exc}") from None
        flags = msg["flags"]
        mac = msg.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
        return Link(
            index=index,
            name=msg.get_attr("IFLA_IFNAME"),
            mac=_mac_bytes(mac),
            mtu=msg.get_attr("IFLA_MTU"),
            up=bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP),
        )

    def local_addresses(self) -> set:
        """Every address configured on this host (as strings)."""
        with self._lock:
            return {a.get_attr("IFA_ADDRESS") for a in self._ipr.get_addr()}

    # -- routes ---------------------------------------------------------------
    def route(self, dst: Addr) -> Route:
        """The kernel's route for dst (RTM_GETROUTE): egress interface and next hop."""
        d = _addr_str(dst)
        with self._lock:
            try:
                msgs = self._ipr.route("get", dst=d)
            except Exception as exc:
                raise RouteError(f"no route to {d}: {exc}") from None
        if not msgs:
            raise RouteError(f"no route to {d}")
        m = msgs[0]
        oif = m.get_attr("RTA_OIF")
        if oif is None:
            raise RouteError(f"route to {d} has no output interface")
        return Route(dst=d, ifindex=oif, gateway=m.get_attr("RTA_GATEWAY"), prefsrc=m.get_attr("RTA_PREFSRC"))

    def route_dump(self) -> Optional[List[Tuple[int, str, int, str, Optional[int], Optional[str], Optional[str],
                                                 bool]]]:
        """Every route of the local, main and default tables in both families as
        (table, dst, dst_len, type-is-unicast, oif, gateway, prefsrc, simple), or None
        when in-process matching would not be the kernel's lookup: policy rules
        besides the three defaults (local, main, default), or more than
        ROUTE_TABLE_MAX routes.  `simple`: one output interface, no source
        prefix, TOS or multipath (RTA_MULTIPATH) -- what the snapshot may answer."""
        out = []
        with self._lock:
            for fam in (socket.AF_INET, socket.AF_INET6):
                for rule in self._ipr.get_rules(family=fam):
                    table = rule.get_attr("FRA_TABLE") or rule["table"]
                    # anything but the table, priority, protocol and unset suppressors selects
                    selectors = [a for a, v in rule["attrs"] if a not in ("FRA_TABLE", "FRA_PRIORITY", "FRA_PROTOCOL")
                                 and not (a in ("FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP") and v == 0xFFFFFFFF)]
                    if table not in (RT_TABLE_LOCAL, RT_TABLE_MAIN, RT_TABLE_DEFAULT) or selectors or \
                            rule["src_len"] or rule["dst_len"] or rule["tos"] or rule["action"] != 1:
                        return None
                for table in (RT_TABLE_LOCAL, RT_TABLE_MAIN, RT_TABLE_DEFAULT):
                    for m in self._ipr.get_routes(family=fam, table=table):
                        t = m.get_attr("RTA_TABLE") or m["table"]
                        if t != table:
                            continue
                        dst = m.get_attr("RTA_DST") or ("0.0.0.0" if fam == socket.AF_INET else "::")
                        simple = (not m["src_len"] and not m["tos"] and m.get_attr("RTA_MULTIPATH") is None
                                  and m.get_attr("RTA_OIF") is not None)
                        out.append((table, dst, m["dst_len"], m["type"] == RTN_UNICAST, m.get_attr("RTA_OIF"),
                                    m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_PREFSRC"), simple))
                        if len(out) > ROUTE_TABLE_MAX:
                            return None
        return out

    # -- neighbours -----------------------------------------------------------
    def neighbour(self, ifindex: int, addr: Addr) -> Optional[bytes]:
        """The link-layer address of addr on ifindex if the entry is usable, else None."""
        a = _addr_str(addr)
        with self._lock:
            msgs = self._ipr.get_neighbours(family=_family(a), ifindex=ifindex, dst=a)
        for m in msgs:
            if m.get_attr("NDA_DST") != a:
                continue
            ll = m.get_attr("NDA_LLADDR")
            if ll and (m["state"] & NUD_VALID):
                return _mac_bytes(ll)
        return None

    def trigger_resolution(self, ifindex: int, addr: Addr) -> None:
        """Ask the kernel to resolve addr (RTM_NEWNEIGH with NTF_USE runs
        neigh_event_send(), which sends the ARP request / neighbour solicitation)."""
        a = _addr_str(addr)
        with self._lock:
            try:
                self._ipr.neigh("replace", dst=a, ifindex=ifindex, family=_family(a),
                                flags=NTF_USE, state=NUD_INCOMPLETE)
            except Exception:
                # Fallback: a datagram to the discard port makes the kernel resolve too.
                self._udp_probe(a)

    @staticmethod
    def _udp_probe(a: str) -> None:
        s = socket.socket(_family(a), socket.SOCK_DGRAM)
        try:
            s.setblocking(False)
            s.sendto(b"", (a, 9))
        except OSError:
            pass
        finally:
            s.close()

    def resolve(self, ifindex: int, addr: Addr, timeout: float = 3.0, interval: float = 0.01) -> bytes:
        """Blocking: the neighbour's MAC, triggering resolution if needed.  The
        neighbour table is looked at again after 0.25 ms, then at doubling
        intervals up to `interval`: an ARP / neighbour-discovery answer on a LAN
        takes well under a millisecond, and a fixed 10 ms poll made a box's first
        connection wait 10 ms per leg for it."""
        mac = self.neighbour(ifindex, addr)
        if mac is not None:
            return mac
        deadline = time.monotonic() + timeout
        self.trigger_resolution(ifindex, addr)
        next_trigger = time.monotonic() + 1.0
        wait = min(0.00025, interval)
        while time.monotonic() < deadline:
            time.sleep(wait)
            wait = min(wait * 2, interval)
            mac = self.neighbour(ifindex, addr)
            if mac is not None:
                return mac
            if time.monotonic() >= next_trigger:
                self.trigger_resolution(ifindex, addr)
                next_trigger = time.monotonic() + 1.0
        raise RouteError(f"neighbour {_addr_str(addr)} on ifindex {ifindex} did not resolve in {timeout}s")


@dataclass(frozen=True)
class NextHop:
    """Where a leg's frames go: interface, Ethernet addresses, MTU."""

    ifindex: int
    ifname: str
    dst_mac: bytes
    src_mac: bytes
    mtu: int

    @property
    def macs(self) -> bytes:
        return self.dst_mac + self.src_mac


class RouteTable:
    """A snapshot of the kernel's routes for longest-prefix matching in process
    (RFC 1812 §5.2.4.3), so that a new destination on a known route costs no
    netlink round trip.

    It answers only where its answer is the kernel's: the local table is looked
    at first, as the kernel's first rule does, and a destination that matches
    any of its routes is left to the kernel (`match` returns None); so is one
    whose main-table match is not a plain unicast route with one output
    interface (multipath, blackhole, source- or TOS-specific, or two routes of
    one prefix told apart by metric or interface state) and anything the main
    table does not hold (the default table, then "no route")."""

    def __init__(self, dump: List[Tuple]) -> None:
        # family bits -> (prefix lengths longest first, {(plen, prefix >> (bits - plen)): entry or None})
        self._local: Dict[int, Tuple[List[int], Dict[Tuple[int, int], object]]] = {}
        self._main: Dict[int, Tuple[List[int], Dict[Tuple[int, int], object]]] = {}
        for table, dst, plen, unicast, oif, gw, prefsrc, simple in dump:
            target = self._local if table == RT_TABLE_LOCAL else self._main if table == RT_TABLE_MAIN else None
            if target is None:
                continue  # the default table: only consulted when main has no match (-> the kernel)
            ip = ipaddress.ip_address(dst)
            bits = ip.max_prefixlen
            lens, entries = target.setdefault(bits, ([], {}))
            key = (plen, int(ip) >> (bits - plen))
            entry = (oif, gw, prefsrc) if unicast and simple else None
            if key in entries:
                entry = None  # two routes for one prefix (metric, link state): the kernel decides
            entries[key] = entry
            if plen not in lens:
                lens.append(plen)
        for lens, _ in (*self._local.values(), *self._main.values()):
            lens.sort(reverse=True)

    @staticmethod
    def _lookup(tables, n: int, bits: int):
        t = tables.get(bits)
        if t is None:
            return False, None
        lens, entries = t
        for plen in lens:
            key = (plen, n >> (bits - plen))
            if key in entries:
                return True, entries[key]
        return False, None

    def match(self, dst: str) -> Optional[Route]:
        """The route for dst if the snapshot can tell it, else None (ask the kernel)."""
        ip = ipaddress.ip_address(dst)
        n, bits = int(ip), ip.max_prefixlen
        found, _ = self._lookup(self._local, n, bits)
        if found:
            return None
        found, entry = self._lookup(self._main, n, bits)
        if not found or entry is None:
            return None
        oif, gw, prefsrc = entry
        return Route(dst=dst, ifindex=oif, gateway=gw, prefsrc=prefsrc)


class NextHopCache:
    """Route + neighbour lookups per destination, cached for `ttl` seconds.

    A new destination first tries the route snapshot (RouteTable, refreshed
    after `route_ttl` seconds of `clock` or by `invalidate_routes()`), then the
    kernel (RTM_GETROUTE); the next hop's MAC behind a gateway is cached per
    gateway.  So a new source on a known route -- a flood of spoofed ones
    behind one router -- costs no netlink round trip at all (`lookup_nowait`).
    route_ttl = 0 turns the snapshot off.  Counters: `counters`."""

    def __init__(self, rtnl: Rtnl, ttl: float = 30.0, max_entries: int = 65536, route_ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rtnl = rtnl
        self.ttl = ttl
        self.route_ttl = route_ttl
        self.clock = clock
        self._routes: Optional[RouteTable] = None
        self._routes_expire = 0.0
        self.counters = {"route_cache_hits": 0, "route_cache_misses": 0, "route_table_dumps": 0,
                         "route_table_invalidations": 0, "route_queries": 0}
        self.max_entries = max_entries
        self._cache: Dict[str, Tuple[float, NextHop]] = {}
        self._links: Dict[int, Link] = {}
        # (ifindex, gateway) -> (expires, MAC): the many destinations behind one
        # router (a flood of spoofed sources) cost one route query each, not a
        # neighbour lookup too
        self._gateways: Dict[Tuple[int, str], Tuple[float, bytes]] = {}

    def invalidate_routes(self) -> None:
        """A route changed: the next lookup takes a fresh snapshot."""
        self._routes = None
        self._routes_expire = 0.0
        self.counters["route_table_invalidations"] += 1

    def _route_table(self, now: float) -> Optional[RouteTable]:
        if not self.route_ttl:
            return None
        if now >= self._routes_expire:
            self.counters["route_table_dumps"] += 1
            try:
                dump = self.rtnl.route_dump()
            except Exception:
                dump = None
            self._routes = RouteTable(dump) if dump is not None else None
            self._routes_expire = now + self.route_ttl
        return self._routes

    def _route(self, d: str, now: float) -> Route:
        table = self._route_table(now)
        r = table.match(d) if table is not None else None
        if r is not None:
            self.counters["route_cache_hits"] += 1
            return r
        self.counters["route_cache_misses"] += 1
        self.counters["route_queries"] += 1
        return self.rtnl.route(d)

    def warm(self, ifindexes: Sequence[int] = ()) -> None:
        """Blocking: take the route snapshot and learn the links `ifindexes` now,
        so that the first lookups find them (errors are left to those lookups)."""
        self._route_table(self.clock())
        for ifindex in ifindexes:
            if ifindex not in self._links:
                try:
                    self._links[ifindex] = self.rtnl.link(ifindex)
                except Exception:
                    pass

    def lookup_nowait(self, dst: Addr) -> Optional[NextHop]:
        """The next hop if known without asking the kernel anything that may wait
        (the per-destination cache, or the route snapshot and a gateway whose MAC
        is cached), else None: then `lookup` (blocking, in a thread)."""
        d = _addr_str(dst)
        now = self.clock()
        hit = self._cache.get(d)
        if hit and hit[0] > now:
            return hit[1]
        if self._routes is None or now >= self._routes_expire:
            return None  # a dump is a netlink round trip: lookup() does it
        r = self._routes.match(d)
        if r is None or not r.gateway:
            return None
        gw = self._gateways.get((r.ifindex, r.gateway))
        link = self._links.get(r.ifindex)
        if gw is None or gw[0] <= now or link is None:
            return None
        self.counters["route_cache_hits"] += 1
        return self._remember(d, NextHop(r.ifindex, link.name, gw[1], link.mac, link.mtu), now)

    def lookup(self, dst: Addr, timeout: float = 3.0) -> NextHop:
        d = _addr_str(dst)
        hit = self._cache.get(d)
        now = self.clock()
        if hit and hit[0] > now:
            return hit[1]
        r = self._route(d, now)
        link = self._links.get(r.ifindex)
        if link is None:
            link = self._links[r.ifindex] = self.rtnl.link(r.ifindex)
        gw = self._gateways.get((r.ifindex, r.gateway)) if r.gateway else None
        if gw is not None and gw[0] > now:
            mac = gw[1]
        else:
            mac = self.rtnl.resolve(r.ifindex, r.next_hop, timeout=timeout)
            if r.gateway:
                self._gateways[(r.ifindex, r.gateway)] = (now + self.ttl, mac)
        return self._remember(d, NextHop(r.ifindex, link.name, mac, link.mac, link.mtu), now)

    def _remember(self, d: str, nh: NextHop, now: float) -> NextHop:
        self._cache[d] = (now + self.ttl, nh)
        if len(self._cache) > self.max_entries:  # bounded: expired entries go, then the oldest
            for k in [k for k, v in self._cache.items() if v[0] <= now] or list(self._cache)[:len(self._cache) // 4]:
                del self._cache[k]
        return nh

    def cached(self, dst: Addr) -> Optional[NextHop]:
        hit = self._cache.get(_addr_str(dst))
        if hit and hit[0] > self.clock():
            return hit[1]
        return None

    def forget(self, dst: Addr) -> None:
        self._cache.pop(_addr_str(dst), None)
