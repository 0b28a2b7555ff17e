"""Workers (stackpep.pep.workers): the PACKET_FANOUT program that sends both
directions of a flow to one worker, run by a small classic-BPF interpreter
over crafted packets; the rate-share table; the stats merge."""
import ipaddress
import struct

import pytest

from stackpep._fast.capture import FANOUT_PROGRAM
from stackpep.pep.workers import RateShares, merge_snapshots, merge_sum, worker_view

NET_OFF = -0x100000
AD_OFF = -0x1000
U32 = 0xFFFFFFFF


class Abort(Exception):
    """A load beyond the packet: the kernel ends the program with 0."""


def run_cbpf(prog, packet: bytes, ethertype: int) -> int:
    """Classic BPF (Documentation/networking/filter.rst) for what FANOUT_PROGRAM
    uses: ld/ldh/ldb absolute and indirect (k relative to the network header:
    SKF_NET_OFF), the ethertype ancillary load, ld #k, ld/ldx/st M[k], ALU
    and/lsh/rsh/xor, tax, ja, jeq, ret.  `packet` starts at the network header."""
    a = x = 0
    mem = [None] * 16
    pc = 0

    def load(off, size):
        if off == AD_OFF:                         # SKF_AD_PROTOCOL
            return ethertype
        assert off >= NET_OFF and off < AD_OFF, hex(off)
        off -= NET_OFF
        if off + size > len(packet):
            raise Abort
        return int.from_bytes(packet[off:off + size], "big")

    def signed(k):
        return k - (1 << 32) if k & 0x80000000 else k

    try:
        for _ in range(10_000):
            code, jt, jf, k = prog[pc]
            pc += 1
            sk = signed(k)
            if code in (0x20, 0x28, 0x30):           # ld{,h,b} [k]
                a = load(sk, {0x20: 4, 0x28: 2, 0x30: 1}[code])
            elif code in (0x40, 0x48, 0x50):         # ld{,h,b} [x + k]
                a = load(sk + x, {0x40: 4, 0x48: 2, 0x50: 1}[code])
            elif code == 0x00:
                a = k
            elif code == 0x60:
                assert mem[k] is not None, "read of an unwritten M[] (the kernel's checker refuses it)"
                a = mem[k]
            elif code == 0x61:
                assert mem[k] is not None, "read of an unwritten M[]"
                x = mem[k]
            elif code == 0x02:
                mem[k] = a
            elif code == 0x54:
                a &= k
            elif code == 0x64:
                a = (a << k) & U32
            elif code == 0x74:
                a >>= k
            elif code == 0x24:
                a = (a * k) & U32
            elif code == 0xAC:
                a ^= x
            elif code == 0x07:
                x = a
            elif code == 0x05:
                pc += k
            elif code == 0x15:
                pc += jt if a == k else jf
            elif code == 0x16:
                return a
            elif code == 0x06:
                return k
            else:
                raise AssertionError(f"opcode {code:#x} not in the interpreter")
    except Abort:
        return 0
    raise AssertionError("no return")


def tcp(src, dst, sport, dport, payload=b""):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    th = struct.pack("!HHIIBBHHH", sport, dport, 1, 2, 5 << 4, 0x10, 65535, 0, 0) + payload
    if s.version == 4:
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(th), 0, 0x4000, 64, 6, 0, s.packed, d.packed) + th
    return struct.pack("!IHBB16s16s", 6 << 28, len(th), 6, 64, s.packed, d.packed) + th


def icmp_error(router, to, quoted: bytes):
    """ICMPv4 destination unreachable (frag needed) / ICMPv6 packet too big quoting `quoted`."""
    r, t = ipaddress.ip_address(router), ipaddress.ip_address(to)
    if r.version == 4:
        body = struct.pack("!BBHHH", 3, 4, 0, 0, 1400) + quoted[:28]
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 1, 0, r.packed, t.packed) + body
    body = struct.pack("!BBHI", 2, 0, 0, 1280) + quoted[:1232]
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 58, 64, r.packed, t.packed) + body


def worker(pkt: bytes, n: int) -> int:
    et = 0x86DD if pkt[0] >> 4 == 6 else 0x0800
    return run_cbpf(FANOUT_PROGRAM, pkt, et) % n


FLOWS = [("198.18.0.2", "198.18.1.2"), ("fd00:1::2", "fd00:2::2"), ("198.18.0.77", "198.18.1.9"),
         ("fd00:1::1234:5678", "fd00:2::abcd")]


@pytest.mark.parametrize("client,server", FLOWS)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_both_directions_of_a_flow_reach_the_same_worker(client, server, n):
    # client->server arrives on the client interface, server->client on the server
    # interface: both groups run the same program, so the same index.
    for cport in range(32768, 32768 + 200):
        up = tcp(client, server, cport, 80, b"GET /")
        down = tcp(server, client, 80, cport, b"HTTP/1.1 200")
        assert worker(up, n) == worker(down, n), cport


@pytest.mark.parametrize("client,server", FLOWS)
def test_flows_spread_over_the_workers(client, server):
    # one client, one server, ephemeral ports of one parity (Linux's connect()
    # steps by 2): every worker gets a fair part
    for n in (2, 3, 4):
        counts = [0] * n
        for cport in range(40000, 40000 + 800, 2):
            counts[worker(tcp(client, server, cport, 443), n)] += 1
        assert min(counts) >= 400 // n * 3 // 4, (n, counts)


@pytest.mark.parametrize("client,server", FLOWS)
def test_icmp_errors_reach_the_quoted_flows_worker(client, server):
    # What a router on either side sends back quotes a packet this box sent:
    # on the server side a server-leg packet (client -> server), on the client
    # side a client-leg one (server -> client).
    v6 = ":" in client
    router_s, router_c = ("fd00:2::99", "fd00:1::99") if v6 else ("198.18.1.99", "198.18.0.99")
    for cport in range(50000, 50064):
        flow = worker(tcp(client, server, cport, 80), 2)
        to_server = tcp(client, server, cport, 80, b"x" * 1400)
        to_client = tcp(server, client, 80, cport, b"y" * 1400)
        assert worker(icmp_error(router_s, client, to_server), 2) == flow
        assert worker(icmp_error(router_c, server, to_client), 2) == flow


def test_other_packets_never_fail_the_program():
    assert run_cbpf(FANOUT_PROGRAM, b"\x00" * 60, 0x0806) == 0          # ARP: member 0
    assert run_cbpf(FANOUT_PROGRAM, tcp("198.18.0.2", "198.18.1.2", 1, 2)[:22], 0x0800) == 0  # ports cut off
    udp = bytearray(tcp("198.18.0.2", "198.18.1.2", 1, 2))
    udp[9] = 17   # addresses only: still symmetric
    rev = bytearray(udp)
    rev[12:16], rev[16:20] = udp[16:20], udp[12:16]
    assert worker(bytes(udp), 2) == worker(bytes(rev), 2)


def test_program_is_valid_classic_bpf():
    assert len(FANOUT_PROGRAM) <= 4096
    for i, (code, jt, jf, k) in enumerate(FANOUT_PROGRAM):
        assert 0 <= jt < 256 and 0 <= jf < 256 and 0 <= k <= U32
        if code == 0x15:
            assert i + 1 + max(jt, jf) < len(FANOUT_PROGRAM)
    assert FANOUT_PROGRAM[-1][0] == 0x16


def test_rate_shares_count_every_workers_active_connections():
    class Share:
        def __init__(self, n):
            self.n_active = n
            self.others_active = 0

    t = RateShares(3)
    a, b, c = Share(2), Share(5), Share(0)
    t.publish(0, [a])
    t.publish(1, [b])
    t.publish(2, [c])
    t.publish(0, [a])
    assert (a.others_active, b.others_active, c.others_active) == (5, 2, 7)
    t.clear(1)           # a worker died: its connections are gone
    t.publish(0, [a])
    assert a.others_active == 0


def test_merge_sums_counters_and_lists_each_worker():
    w0 = {"instance": "", "uptime_s": 3.0, "draining": False, "max_connections": 2048,
          "counters": {"connections_opened": 3, "packets_in": 10}, "connections_active": 1,
          "connections_time_wait": 0, "leg_states": {"client_leg_ESTABLISHED": 1},
          "drops": {"drop_table_full": 0}, "engine_drops": {}, "ports": {"box1": {"rx_packets": 4}},
          "connections": [{"client": "a"}]}
    w1 = {"instance": "", "uptime_s": 2.0, "draining": True, "max_connections": 2048,
          "counters": {"connections_opened": 4, "packets_in": 1}, "connections_active": 2,
          "connections_time_wait": 1, "leg_states": {"client_leg_ESTABLISHED": 2, "server_leg_CLOSED": 1},
          "drops": {"drop_table_full": 2}, "engine_drops": {"x": 1}, "ports": {"box1": {"rx_packets": 6}},
          "connections": [{"client": "b"}, {"client": "c"}]}
    m = merge_snapshots([w0, w1], [11, 12])
    assert m["counters"] == {"connections_opened": 7, "packets_in": 11}
    assert m["connections_active"] == 3 and m["connections_time_wait"] == 1
    assert m["leg_states"] == {"client_leg_ESTABLISHED": 3, "server_leg_CLOSED": 1}
    assert m["ports"] == {"box1": {"rx_packets": 10}} and m["drops"] == {"drop_table_full": 2}
    assert m["draining"] is True and m["uptime_s"] == 3.0 and m["max_connections"] == 4096
    assert [c["worker"] for c in m["connections"]] == [0, 1, 1]
    assert [(w["index"], w["pid"], w["connections_opened"]) for w in m["workers"]] == [(0, 11, 3), (1, 12, 4)]
    assert merge_sum([{"a": 1}, None, {"a": 2, "b": 1}]) == {"a": 3, "b": 1}
    from stackpep.pep.observe import summary_lines

    assert "workers: 0 (pid 11): 1 active, 3 opened, 1 (pid 12): 2 active, 4 opened" in summary_lines(
        {k: v for k, v in m.items() if k != "connections"})


def test_worker_view_splits_the_limit_and_separates_files():
    from stackpep.pep.config import PepConfig

    cfg = PepConfig(("box1",), ("box2",), max_connections=10001, metrics_listen="127.0.0.1:9750",
                    pcap="/var/tmp/pep.pcapng", control_socket="/run/stackpep/x.sock", workers=2)
    v = worker_view(1, 2, "/tmp/d")(cfg)
    assert v.max_connections == 5001 and v.metrics_listen is None
    assert v.pcap == "/var/tmp/pep.w1.pcapng" and v.control_socket == "/tmp/d/w1.sock"


def test_workers_key_defaults_to_one_per_core_and_is_not_live():
    import os

    from stackpep.pep.config import ConfigError, from_dict
    from stackpep.pep.reload import compare

    base = {"interfaces": {"client": ["a"], "server": ["b"]}}
    assert from_dict(base).workers == (os.cpu_count() or 1)
    two = from_dict({**base, "pep": {"workers": 2}})
    assert two.workers == 2
    for bad in (0, 257, "2", True):
        with pytest.raises(ConfigError) as ei:
            from_dict({**base, "pep": {"workers": bad}})
        assert [p.key for p in ei.value.problems] == ["pep.workers"]
    res = compare(two, from_dict({**base, "pep": {"workers": 3}}))
    assert [k for k, _ in res.refused] == ["pep.workers"]
