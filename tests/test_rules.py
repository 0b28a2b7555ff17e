"""Netfilter rules: installed idempotently, every rule commented, removed
exactly, foreign rules never touched; both backends; cleanup after a crash.

Each test runs the rules code inside a fresh namespace (python -c under
`ip netns exec`), so the host's tables are never involved."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import stackpep

from stackpep.io.rules import InterceptSpec, IptablesLegacyBackend, NftBackend
from stackpep.testbed.netns import Network

ROOT = Path(__file__).resolve().parents[1]
# where `stackpep` is imported from: the installed package (CI) or the source tree (development)
PKG_ROOT = Path(stackpep.__file__).resolve().parents[1]
SPEC = InterceptSpec(("box1",), ("box2",), ("198.18.1.0/24", "fd00:2::/64"), ((80, 80), (5000, 5100)))

pytestmark = pytest.mark.netns


def in_ns(host, code):
    prog = "import sys, json; sys.path.insert(0, %r)\n" % str(PKG_ROOT) + textwrap.dedent(code)
    res = host.run([sys.executable, "-c", prog], check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def dump(host):
    out = {}
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        out[tool] = host.run([tool, "-w", "-t", "raw", "-S"]).stdout.splitlines()
    out["nft"] = host.run(["nft", "list", "ruleset"]).stdout
    return out


@pytest.fixture(scope="module")
def host():
    with Network() as net:
        yield net.add_host("rules")


def test_nft_render_comments_every_rule():
    text = NftBackend().render(SPEC)
    rule_lines = [l for l in text.splitlines() if " drop " in l or " notrack " in l]
    assert len(rule_lines) == 5  # 2 directions x 2 families + NOTRACK
    assert all('comment "stackpep' in l for l in rule_lines)
    # no fragment is matched (the kernel forwards them), TCP is found behind IPv6 extension headers
    assert ('iifname { "box1" } meta l4proto tcp ip frag-off & 0x3fff == 0 ip daddr { 198.18.1.0/24 } '
            'tcp dport { 80, 5000-5100 }') in text
    assert ('iifname { "box2" } meta l4proto tcp exthdr frag missing ip6 saddr { fd00:2::/64 } '
            'tcp sport { 80, 5000-5100 }') in text


def test_iptables_render_comments_every_rule():
    text = IptablesLegacyBackend().render(SPEC)
    rules = [l for l in text.splitlines() if l.startswith(("-A", "-I"))]
    assert len(rules) == 2 * (2 + 3) + 1  # per family: 2 jumps, 2 drops, 1 notrack; IPv6: fragments RETURN
    assert all("--comment" in l and "stackpep" in l for l in rules)
    drops = [l for l in rules if l.endswith("-j DROP")]
    v4 = [l for l in drops if "198.18." in l]
    assert len(v4) == 2 and all("-m u32 --u32 4&0x3FFF=0" in l for l in v4)  # MF clear and offset 0
    v6 = text.split("# ip6tables-legacy -t raw")[1].splitlines()
    first = [l for l in v6 if l.startswith("-A STACKPEP-PRE")][0]
    assert first.startswith("-A STACKPEP-PRE -m frag ") and first.endswith("-j RETURN")
    assert not any("u32" in l for l in v6)  # -p tcp walks the extension headers itself


def test_spec_matches_mirrors_the_rules():
    assert SPEC.matches(bytes([198, 18, 1, 7]), 80)
    assert SPEC.matches(bytes([198, 18, 1, 7]), 5100)
    assert not SPEC.matches(bytes([198, 18, 1, 7]), 5101)
    assert not SPEC.matches(bytes([198, 18, 2, 7]), 80)
    assert SPEC.matches(bytes.fromhex("fd000002" + "00" * 11 + "09"), 5000)
    assert not SPEC.matches(bytes.fromhex("fd000003" + "00" * 12), 80)
    every_port = InterceptSpec(("a",), ("b",), ("198.18.0.0/15",))
    assert every_port.matches(bytes([198, 19, 0, 1]), 1)


@pytest.mark.parametrize("backend", ["nft", "iptables-legacy"])
def test_install_is_idempotent_and_removal_exact(host, backend):
    # A foreign rule in the same hooks must survive everything stackpep does.
    host.run(["iptables-legacy", "-w", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "-j", "ACCEPT"])
    host.run(["nft", "add", "table", "inet", "mine"])
    host.run(["nft", "add", "chain", "inet", "mine", "pre", "{ type filter hook prerouting priority raw; }"])
    host.run(["nft", "add", "rule", "inet", "mine", "pre", "udp dport 53 accept"])
    before = dump(host)
    try:
        out = in_ns(host, f"""
            from stackpep.io.rules import *
            spec = InterceptSpec(("box1",), ("box2",), ("198.18.1.0/24", "fd00:2::/64"), ((80, 80),))
            b = BACKENDS[{backend!r}]()
            b.install(spec); b.install(spec)
            print(json.dumps(b.installed()))
        """)
        assert json.loads(out) is True
        mid = dump(host)
        if backend == "nft":
            assert mid["nft"].count("table inet stackpep") == 1  # twice installed, once present
            drops = [l for l in mid["nft"].splitlines() if " drop " in l]
            assert len(drops) == 4 and all('comment "stackpep: intercepted' in l for l in drops)
        else:
            for tool in ("iptables-legacy", "ip6tables-legacy"):
                lines = mid[tool]
                assert lines.count("-A PREROUTING -m comment --comment stackpep -j STACKPEP-PRE") == 1
                pre = [l for l in lines if l.startswith("-A STACKPEP-PRE")]
                # two drops; IPv6 first returns any packet with a Fragment header
                assert len(pre) == (2 if tool == "iptables-legacy" else 3), pre
        out = in_ns(host, f"""
            from stackpep.io.rules import *
            b = BACKENDS[{backend!r}]()
            n = b.remove(); print(json.dumps([n, b.installed(), b.remove()]))
        """)
        n, still, again = json.loads(out)
        assert n > 0 and still is False and again == 0
        assert dump(host) == before
    finally:
        host.run(["iptables-legacy", "-w", "-t", "raw", "-F", "PREROUTING"])
        host.run(["nft", "delete", "table", "inet", "mine"])


def test_cleanup_command_removes_every_instance_of_both_backends(host):
    before = dump(host)
    in_ns(host, """
        from stackpep.io.rules import *
        spec = InterceptSpec(("box1",), ("box2",), ("198.18.1.0/24",), ())
        NftBackend().install(spec)
        NftBackend().install(InterceptSpec(("box1",), ("box2",), ("fd00::/8",), (), instance="two"))
        IptablesLegacyBackend().install(spec)
    """)
    mid = dump(host)
    assert "table inet stackpep_two" in mid["nft"] and "STACKPEP-PRE" in "\n".join(mid["iptables-legacy"])
    res = host.run([sys.executable, "-m", "stackpep", "cleanup"], check=False, cwd="/",
                   env={"PYTHONPATH": str(PKG_ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "nft: removed 2 stackpep object(s)" in res.stdout
    assert "iptables-legacy: removed" in res.stdout
    assert dump(host) == before


def test_auto_prefers_nft_and_says_why(host):
    out = in_ns(host, """
        from stackpep.io.rules import choose_backend
        b, why = choose_backend("auto"); print(json.dumps([b.name, why]))
    """)
    name, why = json.loads(out)
    assert name == "nft" and why.startswith("nft (auto: nft works")


HC_SPEC = InterceptSpec(("box1",), ("box2",), ("198.18.1.0/24", "fd00:2::/64"), ((80, 80),), scps_compressed=True)


def test_nft_render_scps_compressed_headers():
    # protocol 105 to/from the prefixes, no port match (the compressed header has none), never a fragment
    text = NftBackend().render(HC_SPEC)
    hc = [l.strip() for l in text.splitlines() if "105" in l]
    assert hc == [
        'iifname { "box1" } ip protocol 105 ip frag-off & 0x3fff == 0 ip daddr { 198.18.1.0/24 } fib daddr type '
        '!= local counter drop comment "stackpep: intercepted ip client->server SCPS compressed"',
        'iifname { "box2" } ip protocol 105 ip frag-off & 0x3fff == 0 ip saddr { 198.18.1.0/24 } fib daddr type '
        '!= local counter drop comment "stackpep: intercepted ip server->client SCPS compressed"',
        'iifname { "box1" } ip6 nexthdr 105 ip6 daddr { fd00:2::/64 } fib daddr type != local counter drop '
        'comment "stackpep: intercepted ip6 client->server SCPS compressed"',
        'iifname { "box2" } ip6 nexthdr 105 ip6 saddr { fd00:2::/64 } fib daddr type != local counter drop '
        'comment "stackpep: intercepted ip6 server->client SCPS compressed"',
    ]
    assert "105" not in NftBackend().render(SPEC)                   # off unless asked for


def test_iptables_render_scps_compressed_headers():
    text = IptablesLegacyBackend().render(HC_SPEC)
    v4, v6 = text.split("# ip6tables-legacy -t raw")
    hc4 = [l for l in v4.splitlines() if "-p 105" in l]
    hc6 = [l for l in v6.splitlines() if "-p 105" in l]
    assert hc4 == [
        "-A STACKPEP-PRE -i box1 -p 105 -d 198.18.1.0/24 -m u32 --u32 4&0x3FFF=0 -m addrtype ! --dst-type LOCAL "
        "-m comment --comment stackpep: intercepted client->server SCPS compressed -j DROP",
        "-A STACKPEP-PRE -i box2 -p 105 -s 198.18.1.0/24 -m u32 --u32 4&0x3FFF=0 -m addrtype ! --dst-type LOCAL "
        "-m comment --comment stackpep: intercepted server->client SCPS compressed -j DROP",
    ]
    assert [l.split(" -m u32 ")[1].split(" ")[1] for l in hc6] == ["4>>8&0xFF=105"] * 2  # next header itself 105
    assert "-p 105" not in IptablesLegacyBackend().render(SPEC)


HC_SEND = """
import socket, time
for fam, dst in ((socket.AF_INET, "198.18.1.2"), (socket.AF_INET6, "fd00:2::2")):
    s = socket.socket(fam, socket.SOCK_RAW, 105)
    for i in range(3):
        s.sendto(b"\\x07\\x03" + bytes(14), (dst, 0))
print("sent")
"""

HC_COUNT = """
import socket, select, time, json
socks = [socket.socket(socket.AF_INET, socket.SOCK_RAW, 105), socket.socket(socket.AF_INET6, socket.SOCK_RAW, 105)]
print("READY", flush=True)
n = [0, 0]; end = time.time() + 1.5
while time.time() < end:
    r, _, _ = select.select(socks, [], [], 0.1)
    for s in r:
        s.recv(2048); n[socks.index(s)] += 1
print(json.dumps(n))
"""


@pytest.mark.parametrize("backend", ["nft", "iptables-legacy"])
def test_installed_rules_keep_compressed_headers_from_the_forwarding_path(backend):
    # Without the rules a forwarding box passes protocol 105 on; with them it drops
    # it (the capture takes it instead), and the rules' counters say so.
    with Network() as net:
        c = net.add_host("client")
        b = net.add_host("box", forwarding=True)
        s = net.add_host("server")
        _, bi = net.link(c, b, ["198.18.0.2/24", "fd00:1::2/64"], ["198.18.0.1/24", "fd00:1::1/64"])
        bo, _ = net.link(b, s, ["198.18.1.1/24", "fd00:2::1/64"], ["198.18.1.2/24", "fd00:2::2/64"])
        c.run("ip route add default via 198.18.0.1")
        c.run("ip -6 route add default via fd00:1::1")
        s.run("ip route add default via 198.18.1.1")
        s.run("ip -6 route add default via fd00:2::1")

        def forwarded():
            p = s.popen([sys.executable, "-c", HC_COUNT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "READY"
            c.run([sys.executable, "-c", HC_SEND])
            return json.loads(p.communicate(timeout=20)[0])

        assert forwarded() == [3, 3]
        in_ns(b, f"""
            from stackpep.io.rules import *
            BACKENDS[{backend!r}]().install(InterceptSpec(({bi!r},), ({bo!r},), ("198.18.1.0/24", "fd00:2::/64"),
                                                          ((80, 80),), scps_compressed=True))
        """)
        assert forwarded() == [0, 0]
        if backend == "nft":
            text = b.run(["nft", "list", "table", "inet", "stackpep"]).stdout
            hc = [l for l in text.splitlines() if "SCPS compressed" in l and "client->server" in l]
            assert len(hc) == 2 and all("counter packets 3 " in l for l in hc), hc
        else:
            for tool in ("iptables-legacy", "ip6tables-legacy"):
                out = b.run([tool, "-w", "-t", "raw", "-L", "STACKPEP-PRE", "-v", "-x", "-n"]).stdout
                hc = [l.split() for l in out.splitlines() if "SCPS compressed" in l and "client->server" in l]
                assert len(hc) == 1 and hc[0][0] == "3", out
