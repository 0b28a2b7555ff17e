"""rtnetlink lookups the splitter's emit path relies on: interface facts, the
kernel's route choice, and neighbour entries resolved on demand."""
import json
import sys
import textwrap
from pathlib import Path

import pytest

import stackpep

from stackpep.testbed.netns import Network

ROOT = Path(stackpep.__file__).resolve().parents[1]  # where stackpep is imported from
pytestmark = pytest.mark.netns


def in_ns(host, code):
    prog = "import sys, json; sys.path.insert(0, %r)\n" % str(ROOT) + textwrap.dedent(code)
    res = host.run([sys.executable, "-c", prog], check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_links_routes_and_neighbour_resolution():
    with Network() as net:
        a = net.add_host("a", forwarding=True)
        b = net.add_host("b")
        c = net.add_host("c")
        net.link(a, b, ["198.18.0.1/24", "fd00:1::1/64"], ["198.18.0.2/24", "fd00:1::2/64"],
                 a_ifname="ab", b_ifname="ba", mtu=1400)
        net.link(a, c, ["198.18.1.1/24"], ["198.18.1.2/24"], a_ifname="ac", b_ifname="ca")
        a.run("ip route add 198.18.9.0/24 via 198.18.1.2")
        a.run("ip link add dn type veth peer name dnp")  # created down
        facts = json.loads(a.run("ip -j link show ab").stdout)[0]
        b_mac = json.loads(b.run("ip -j link show ba").stdout)[0]["address"]
        c_mac = json.loads(c.run("ip -j link show ca").stdout)[0]["address"]
        # no entries for the addresses we look up (link-local ones come from router solicitations)
        assert "198.18.0.2" not in a.run("ip neigh show").stdout
        assert "fd00:1::2" not in a.run("ip neigh show").stdout
        out = in_ns(a, """
            from stackpep.io.routes import Rtnl, NextHopCache
            r = Rtnl()
            l = r.link("ab"); dn = r.link("dn")
            rt_direct = r.route("198.18.0.2"); rt_gw = r.route("198.18.9.7")
            missing = r.neighbour(rt_direct.ifindex, "198.18.0.2")
            mac = r.resolve(rt_direct.ifindex, "198.18.0.2", timeout=3)
            mac6 = r.resolve(l.index, "fd00:1::2", timeout=3)
            nh = NextHopCache(r).lookup("198.18.9.7")
            print(json.dumps({"index": l.index, "mac": l.mac.hex(), "mtu": l.mtu, "up": l.up, "dn_up": dn.up,
                              "direct": [rt_direct.ifindex, rt_direct.gateway], "gw": rt_gw.gateway,
                              "missing": missing, "mac4": mac.hex(), "mac6": mac6.hex(),
                              "nh": [nh.ifname, nh.dst_mac.hex(), nh.mtu]}))
        """)
        assert out["index"] == facts["ifindex"] and out["mac"] == facts["address"].replace(":", "")
        assert out["mtu"] == 1400 and out["up"] is True and out["dn_up"] is False
        assert out["direct"] == [facts["ifindex"], None]
        assert out["gw"] == "198.18.1.2"
        assert out["missing"] is None
        assert out["mac4"] == out["mac6"] == b_mac.replace(":", "")
        assert out["nh"] == ["ac", c_mac.replace(":", ""), 1500]
        with pytest.raises(AssertionError, match="RouteError"):
            in_ns(a, """
                from stackpep.io.routes import Rtnl
                Rtnl().resolve(Rtnl().link("ab").index, "198.18.0.99", timeout=1.5)
            """)
