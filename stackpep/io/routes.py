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
from typing import Dict, Optional, Tuple, Union

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
        """Blocking: the neighbour's MAC, triggering resolution if needed."""
        mac = self.neighbour(ifindex, addr)
        if mac is not None:
            return mac
        deadline = time.monotonic() + timeout
        self.trigger_resolution(ifindex, addr)
        next_trigger = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            time.sleep(interval)
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


class NextHopCache:
    """Route + neighbour lookups per destination, cached for `ttl` seconds."""

    def __init__(self, rtnl: Rtnl, ttl: float = 30.0, max_entries: int = 65536) -> None:
        self.rtnl = rtnl
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: Dict[str, Tuple[float, NextHop]] = {}
        self._links: Dict[int, Link] = {}
        # (ifindex, gateway) -> (expires, MAC): the many destinations behind one
        # router (a flood of spoofed sources) cost one route query each, not a
        # neighbour lookup too
        self._gateways: Dict[Tuple[int, str], Tuple[float, bytes]] = {}

    def lookup(self, dst: Addr, timeout: float = 3.0) -> NextHop:
        d = _addr_str(dst)
        hit = self._cache.get(d)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        r = self.rtnl.route(d)
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
        nh = NextHop(r.ifindex, link.name, mac, link.mac, link.mtu)
        self._cache[d] = (now + self.ttl, nh)
        if len(self._cache) > self.max_entries:  # bounded: expired entries go, then the oldest
            for k in [k for k, v in self._cache.items() if v[0] <= now] or list(self._cache)[:len(self._cache) // 4]:
                del self._cache[k]
        return nh

    def cached(self, dst: Addr) -> Optional[NextHop]:
        hit = self._cache.get(_addr_str(dst))
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def forget(self, dst: Addr) -> None:
        self._cache.pop(_addr_str(dst), None)
