"""The route snapshot of NextHopCache (stackpep.io.routes.RouteTable): a new
destination on a known route costs no netlink round trip; the snapshot is
refreshed after route_ttl on the cache's clock or when invalidated; where its
answer might not be the kernel's, the kernel is asked.  A fake rtnetlink
handle counts what would have crossed netlink; a virtual clock drives the TTL."""
from __future__ import annotations

from stackpep.io.routes import RT_TABLE_LOCAL, RT_TABLE_MAIN, Link, NextHopCache, Route, RouteTable

GW_MAC = bytes.fromhex("020000000001")
HOST_MAC = bytes.fromhex("020000000099")

# (table, dst, dst_len, unicast, oif, gateway, prefsrc, simple): as Rtnl.route_dump()
DUMP = [
    (RT_TABLE_LOCAL, "198.18.0.1", 32, False, 2, None, "198.18.0.1", True),  # our own address
    (RT_TABLE_MAIN, "0.0.0.0", 0, True, 3, "198.18.1.254", None, True),  # default via the server side
    (RT_TABLE_MAIN, "198.18.0.0", 24, True, 2, None, "198.18.0.1", True),  # the client LAN
    (RT_TABLE_MAIN, "198.18.16.0", 20, True, 2, "198.18.0.2", None, True),  # spoofed sources, via a router
    (RT_TABLE_MAIN, "198.18.32.0", 24, True, 2, None, None, False),  # multipath: not simple
    (RT_TABLE_MAIN, "198.18.40.0", 24, False, None, None, None, True),  # blackhole
    (RT_TABLE_MAIN, "fd00:5e::", 32, True, 3, "fd00:2::1", None, True),
]


class FakeRtnl:
    def __init__(self, dump=DUMP):
        self.dump = None if dump is None else list(dump)
        self.dumps = 0
        self.queries = []
        self.resolves = []

    def route_dump(self):
        self.dumps += 1
        return self.dump

    def route(self, d):
        self.queries.append(d)
        return Route(dst=d, ifindex=2, gateway=None, prefsrc=None)

    def link(self, ifindex):
        return Link(index=ifindex, name=f"if{ifindex}", mac=HOST_MAC, mtu=1500, up=True)

    def resolve(self, ifindex, addr, timeout=3.0):
        self.resolves.append(addr)
        return GW_MAC


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_new_sources_behind_a_known_router_need_no_route_query():
    rt, clock = FakeRtnl(), Clock()
    cache = NextHopCache(rt, route_ttl=5.0, clock=clock)
    nh = cache.lookup("198.18.16.5")
    # one dump, no RTM_GETROUTE, one neighbour resolution of the gateway
    assert (rt.dumps, rt.queries, rt.resolves) == (1, [], ["198.18.0.2"])
    assert (nh.ifindex, nh.dst_mac, nh.src_mac) == (2, GW_MAC, HOST_MAC)
    # every further source behind that router: answered in process, without a thread
    for i in range(6, 106):
        assert cache.lookup_nowait(f"198.18.{16 + i // 256}.{i % 256}") is not None
    assert (rt.dumps, rt.queries, rt.resolves) == (1, [], ["198.18.0.2"])
    assert cache.counters["route_cache_hits"] == 101
    assert cache.counters["route_queries"] == 0


def test_snapshot_expires_on_the_clock_and_on_invalidation():
    rt, clock = FakeRtnl(), Clock()
    cache = NextHopCache(rt, route_ttl=5.0, clock=clock)
    cache.lookup("198.18.16.5")
    clock.t += 4.9
    cache.lookup("198.18.16.6")
    assert rt.dumps == 1
    clock.t += 0.2  # past route_ttl: a fresh snapshot
    assert cache.lookup_nowait("198.18.16.7") is None  # a dump is a round trip: not without waiting
    cache.lookup("198.18.16.7")
    assert rt.dumps == 2
    cache.invalidate_routes()  # a route changed
    cache.lookup("198.18.16.8")
    assert rt.dumps == 3
    assert cache.counters["route_table_invalidations"] == 1
    assert cache.counters["route_table_dumps"] == 3


def test_what_the_snapshot_cannot_tell_goes_to_the_kernel():
    rt, clock = FakeRtnl(), Clock()
    cache = NextHopCache(rt, route_ttl=5.0, clock=clock)
    for d in ("198.18.0.1",  # matches the local table: the kernel's first rule
              "198.18.32.9",  # multipath
              "198.18.40.9"):  # blackhole (the kernel says no route)
        cache.lookup(d)
    assert rt.queries == ["198.18.0.1", "198.18.32.9", "198.18.40.9"]
    assert cache.counters["route_cache_misses"] == 3


def test_no_snapshot_when_policy_rules_or_size_forbid_it():
    rt, clock = FakeRtnl(dump=None), Clock()  # route_dump() returned None
    cache = NextHopCache(rt, route_ttl=5.0, clock=clock)
    cache.lookup("198.18.16.5")
    cache.lookup("198.18.16.6")
    assert rt.queries == ["198.18.16.5", "198.18.16.6"]
    off = NextHopCache(FakeRtnl(), route_ttl=0, clock=clock)  # turned off
    off.lookup("198.18.16.5")
    assert off.rtnl.dumps == 0 and off.rtnl.queries == ["198.18.16.5"]


def test_longest_prefix_wins_and_two_routes_for_one_prefix_are_left_to_the_kernel():
    t = RouteTable(DUMP + [(RT_TABLE_MAIN, "198.18.16.0", 24, True, 3, None, None, True),
                           (RT_TABLE_MAIN, "198.18.50.0", 24, True, 2, None, None, True),
                           (RT_TABLE_MAIN, "198.18.50.0", 24, True, 3, None, None, True)])
    assert t.match("198.18.16.9") == Route(dst="198.18.16.9", ifindex=3, gateway=None, prefsrc=None)  # /24 over /20
    assert t.match("198.18.17.9").gateway == "198.18.0.2"  # the /20
    assert t.match("198.19.0.1").gateway == "198.18.1.254"  # the default route
    assert t.match("198.18.50.1") is None  # same prefix twice (metric, link state)
    assert t.match("fd00:5e:3::2").gateway == "fd00:2::1"
    assert t.match("fd00:9::1") is None  # no IPv6 default: the kernel says


def test_warm_takes_the_snapshot_and_the_links_before_the_first_lookup():
    """KernelRouter.warm at start: the first connection does not wait for the route
    dump (a netlink request per table and family) or its output link."""
    class CountingRtnl(FakeRtnl):
        links = 0

        def link(self, ifindex):
            self.links += 1
            return super().link(ifindex)

    rt, clock = CountingRtnl(), Clock()
    cache = NextHopCache(rt, route_ttl=5.0, clock=clock)
    cache.warm([2, 3])
    assert (rt.dumps, rt.links) == (1, 2)
    assert cache.lookup("198.18.0.7").ifname == "if2"  # directly on the client LAN
    assert (rt.dumps, rt.links, rt.queries) == (1, 2, [])  # nothing asked again
    cache.warm([2, 3])  # within route_ttl: nothing either
    assert (rt.dumps, rt.links) == (1, 2)
