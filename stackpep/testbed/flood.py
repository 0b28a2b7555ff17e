"""Spoofed SYNs for the flood benchmarks and tests: raw IPv4/IPv6 SYNs from
source addresses nobody owns, sent from a namespace, bounded in count and rate.

Only 198.18.0.0/15 and fd00::/8 are accepted (as sources and destination); a
run refuses anything else.  Run inside a namespace (as root):

    python -m stackpep.testbed.flood --src 198.18.16.0/20 --dst 198.18.1.2 --dport 80 \\
        --count 20000 --rate 20000

Each SYN carries MSS, SACK-permitted, timestamps and window scale, like a
Linux client's, from a different source address/port (cycling through --src)
with a random ISN.  Prints one JSON line: how many were sent and how long it took.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from typing import Iterator, Tuple

from stackpep._fast.wire import Segment

ALLOWED = (ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("fd00::/8"))


def _allowed(addr) -> bool:
    return any(addr.version == n.version and addr in n for n in ALLOWED)


def check_network(net: str) -> ipaddress._BaseNetwork:
    n = ipaddress.ip_network(net, strict=False)
    if not _allowed(n.network_address) or not _allowed(n.broadcast_address):
        raise ValueError(f"{net}: only 198.18.0.0/15 and fd00::/8 may be used")
    return n


def sources(net: str, count: int) -> Iterator[Tuple[bytes, int]]:
    """(address, port) pairs: the addresses of `net` in turn (network/broadcast
    address skipped for IPv4), a new port each round."""
    n = check_network(net)
    if n.num_addresses <= 2:  # /32, /31 (/128, /127): every address
        first, size = int(n.network_address), n.num_addresses
    else:
        first, size = int(n.network_address) + 1, n.num_addresses - 2
    width = 4 if n.version == 4 else 16
    for i in range(count):
        addr = (first + i % size).to_bytes(width, "big")
        yield addr, 1024 + (i // size * 7 + i) % 60000


def syn(src: bytes, sport: int, dst: bytes, dport: int, isn: int, tsval: int = 1) -> bytes:
    s = Segment()
    s.ip_version = 4 if len(src) == 4 else 6
    s.src, s.dst, s.sport, s.dport = src, dst, sport, dport
    s.flags, s.seq, s.ack, s.window, s.ttl = 0x02, isn, 0, 64240, 64
    s.mss = 1460 if s.ip_version == 4 else 1440
    s.sack_perm = True
    s.ts = (tsval, 0)
    s.wscale = 7
    return s.to_bytes()


def flood(src_net: str, dst: str, dport: int, count: int, rate: float) -> dict:
    d = ipaddress.ip_address(dst)
    if not _allowed(d):
        raise ValueError(f"{dst}: only 198.18.0.0/15 and fd00::/8 may be used")
    fam = socket.AF_INET if d.version == 4 else socket.AF_INET6
    if d.version == 6:
        # IPPROTO_RAW on AF_INET6 takes the whole IPv6 header too (Linux raw(7), IPV6_HDRINCL).
        sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
    else:
        sock = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_RAW)
    dbytes = d.packed
    pkts = [syn(a, p, dbytes, dport, int.from_bytes(os.urandom(4), "big")) for a, p in sources(src_net, count)]
    t0 = time.monotonic()
    sent = 0
    batch = max(1, int(rate / 100)) if rate > 0 else len(pkts)
    for i in range(0, len(pkts), batch):
        for p in pkts[i:i + batch]:
            try:
                sock.sendto(p, (dst, 0))
                sent += 1
            except OSError:
                pass
        if rate > 0:
            ahead = t0 + (i + batch) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    return {"sent": sent, "seconds": round(time.monotonic() - t0, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="spoofed source network (inside 198.18.0.0/15 or fd00::/8)")
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dport", type=int, default=80)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20000, help="SYNs per second (0: as fast as possible)")
    a = ap.parse_args(argv)
    if not 0 < a.count <= 1_000_000:
        ap.error("--count must be 1..1000000")
    print(json.dumps(flood(a.src, a.dst, a.dport, a.count, a.rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------- helpers for a topology
SPOOFED4 = "198.18.16.0/20"  # sources nobody owns, routed by the box towards the client side


def route_spoofed(box, via: str, net: str = SPOOFED4) -> None:
    """The box reaches the spoofed sources through the client namespace, which
    owns none of them and drops what the box sends there (no one answers)."""
    box.run(f"ip route add {net} via {via}")


def count_syns(server, net: str = SPOOFED4) -> None:
    """An nft counter in the server namespace: SYNs (without ACK) from `net`, and
    the set of their (source, port): the connections opened towards the server
    (retransmitted SYNs count once there)."""
    server.run(["nft", "add", "table", "inet", "floodcount"])
    server.run(["nft", "add", "set", "inet", "floodcount", "opens",
                "{ type ipv4_addr . inet_service; flags dynamic; size 262144; }"])
    server.run(["nft", "add", "chain", "inet", "floodcount", "in", "{ type filter hook input priority -10; }"])
    server.run(["nft", "add", "rule", "inet", "floodcount", "in", f"ip saddr {net}",
                "tcp flags & (syn | ack) == syn", "counter", "add @opens { ip saddr . tcp sport }"])


def opens_seen(server) -> int:
    """How many distinct (source, port) opened a connection to the server (count_syns)."""
    out = json.loads(server.run(["nft", "-j", "list", "set", "inet", "floodcount", "opens"]).stdout)
    for item in out["nftables"]:
        if "set" in item:
            return len(item["set"].get("elem", []))
    return 0


def syns_counted(server) -> int:
    out = server.run(["nft", "list", "chain", "inet", "floodcount", "in"]).stdout
    for line in out.splitlines():
        if "counter packets" in line:
            return int(line.split("counter packets")[1].split()[0])
    raise RuntimeError(f"no counter in {out!r}")


#: A fetch loop for the client namespace: sequential HTTP GETs for `seconds`,
#: printing {"ok", "failed", "times"} as JSON (times in seconds, successes only).
FETCH_LOOP = r'''
import json, socket, sys, time
host, port, path, seconds, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
ok, failed, times, errors = 0, 0, [], {}
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        if not data.startswith(b"HTTP/1.1 200"):
            raise OSError(data[:40])
        ok += 1
        times.append(time.monotonic() - t0)
    except OSError as exc:
        failed += 1
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
print(json.dumps({"ok": ok, "failed": failed, "times": times, "errors": errors}))
'''
