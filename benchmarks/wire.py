#!/usr/bin/env python3
"""Wire-layer benchmark: parse+validate of 60/1500/9000-byte TCP packets and
checksum throughput, side by side with dpkt, scapy and a pure-Python checksum,
all measured in one run (timing here is noisy: compare ratios, not absolutes).

    .venv/bin/python benchmarks/wire.py [--quick]

Rows:
  parse_packet       one Python call per packet: parse_ip_tcp into a Segment object
                     (IP + TCP + options checked, TCP checksum verified)
  check_packet       one Python call per packet, returns the code (no object built)
  parse_many         batch loop inside Cython/C over a buffer of packets
  dpkt / scapy       the same packet dissected by an independent library
                     (dpkt: IP + TCP + options, checksum verified with dpkt.in_cksum;
                     scapy: IP(...) dissection only, no checksum check)
  checksum           internet checksum of one buffer per call / a batch inside C,
                     against pure Python (struct + sum), scapy's and dpkt's
"""
import argparse
import platform
import struct
import sys
import time

from stackpep._fast import checksum as cs
from stackpep._fast import wire as w

try:
    import dpkt
except ImportError:  # pragma: no cover
    dpkt = None
try:
    import logging
    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.layers.inet import IP as ScapyIP
    from scapy.utils import checksum as scapy_checksum
except ImportError:  # pragma: no cover
    ScapyIP = None


def make_packet(total: int) -> bytes:
    """An IPv4 TCP data segment of `total` bytes with timestamps (like Linux sends)."""
    s = w.Segment()
    s.ip_version, s.src, s.dst = 4, bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    s.sport, s.dport, s.seq, s.ack, s.flags, s.window = 40000, 443, 123456, 654321, 0x18, 502
    s.ts = (1000, 2000)
    s.ip_df, s.ttl = True, 64
    plen = total - 20 - 20 - s.options_len()
    return s.to_bytes(bytes(range(256)) * (plen // 256) + bytes(plen % 256))


def pure_python_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def per_call_ns(fn, arg, budget):
    """Best of 5 rounds of n calls: ns per call."""
    n = 1
    while True:                               # calibrate n to ~budget/5 seconds a round
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn(arg)
        dt = time.perf_counter_ns() - t0
        if dt > budget * 1e9 / 5 or n >= 1 << 22:
            break
        n *= 4
    best = dt / n
    for _ in range(4):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def batch_ns(fn, per_round, budget):
    """fn() processes per_round items; best-of-5 ns per item."""
    rounds = 1
    while True:
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            fn()
        dt = time.perf_counter_ns() - t0
        if dt > budget * 1e9 / 5 or rounds >= 1 << 20:
            break
        rounds *= 2
    best = dt / rounds / per_round
    for _ in range(4):
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / rounds / per_round)
    return best


def dpkt_parse(pkt):
    ip = dpkt.ip.IP(pkt)
    tcp = ip.data
    dpkt.tcp.parse_opts(tcp.opts)
    # validate like we do: TCP checksum over the pseudo-header
    ph = struct.pack("!4s4sxBH", ip.src, ip.dst, 6, len(ip) - ip.hl * 4)
    return dpkt.in_cksum(ph + bytes(pkt[ip.hl * 4:])) == 0


def fmt_ns(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.1f} ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter rounds (noisier)")
    args = ap.parse_args()
    budget = 0.1 if args.quick else 0.5
    cmd = ".venv/bin/python benchmarks/wire.py" + (" --quick" if args.quick else "")
    print(f"# {cmd}")
    print(f"# Python {platform.python_version()}, {platform.machine()}, {platform.processor() or ''}".rstrip(", "))
    print()
    rows = []
    for size in (60, 1500, 9000):
        pkt = make_packet(size)
        assert len(pkt) == size and w.parse_packet(pkt).payload_len == size - 52
        count = max(64, (1 << 20) // size)
        data = pkt * count
        r = {"size": size}
        r["parse_packet"] = per_call_ns(lambda p: w.parse_packet(p, 1), pkt, budget)
        r["check_packet"] = per_call_ns(lambda p: w.check_packet(p, 1), pkt, budget)
        r["batch_hdr"] = batch_ns(lambda: w.parse_many(data, size, count, 0), count, budget)
        r["batch_csum"] = batch_ns(lambda: w.parse_many(data, size, count, 1), count, budget)
        if dpkt is not None:
            assert dpkt_parse(pkt)
            r["dpkt"] = per_call_ns(dpkt_parse, pkt, budget)
        if ScapyIP is not None:
            r["scapy"] = per_call_ns(ScapyIP, pkt, budget)
        buf = pkt
        r["cs_call"] = per_call_ns(cs.internet_checksum, buf, budget)
        r["cs_batch"] = batch_ns(lambda: cs.checksum_many(data, size, count), count, budget)
        r["cs_py"] = per_call_ns(pure_python_checksum, buf, budget)
        if ScapyIP is not None:
            r["cs_scapy"] = per_call_ns(scapy_checksum, buf, budget)
        if dpkt is not None:
            r["cs_dpkt"] = per_call_ns(dpkt.in_cksum, buf, budget)
        rows.append(r)

    print("## parse + validate, time per packet (IPv4 TCP data segment with timestamps)")
    print()
    print("| size | parse_packet (1 call) | check_packet (1 call) | parse_many, headers | parse_many, + TCP checksum "
          "| dpkt (+checksum) | scapy (no checksum) | dpkt / parse_packet |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {fmt_ns(r['parse_packet'])} | {fmt_ns(r['check_packet'])} | {fmt_ns(r['batch_hdr'])} "
              f"| {fmt_ns(r['batch_csum'])} | {fmt_ns(r.get('dpkt', float('nan')))} "
              f"| {fmt_ns(r.get('scapy', float('nan')))} | {r.get('dpkt', float('nan')) / r['parse_packet']:.0f}× |")
    print()
    print("## internet checksum (RFC 1071), one buffer")
    print()
    print("| size | C, 1 call | C, batch in C | C batch GB/s | pure Python | scapy | dpkt | pure Python / C call |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']} | {fmt_ns(r['cs_call'])} | {fmt_ns(r['cs_batch'])} | {r['size'] / r['cs_batch']:.1f} "
              f"| {fmt_ns(r['cs_py'])} | {fmt_ns(r.get('cs_scapy', float('nan')))} "
              f"| {fmt_ns(r.get('cs_dpkt', float('nan')))} | {r['cs_py'] / r['cs_call']:.0f}× |")
    print()
    big = rows[-1]
    small = rows[0]
    checks = [
        ("checksum of 9000-byte buffers >= 4 GB/s (batch in C)", 9000 / big["cs_batch"] >= 4.0,
         f"{9000 / big['cs_batch']:.1f} GB/s"),
        ("batched parse <= 50 ns/packet (headers+options, 60..9000 B)",
         max(r["batch_hdr"] for r in rows) <= 50, f"max {max(r['batch_hdr'] for r in rows):.1f} ns"),
        ("batched parse incl. TCP checksum <= 50 ns/packet (60 B)", small["batch_csum"] <= 50,
         f"{small['batch_csum']:.1f} ns"),
        ("one call from Python <= 1 µs (parse_packet, 60 and 1500 B)",
         max(rows[0]["parse_packet"], rows[1]["parse_packet"]) <= 1000,
         f"max {max(rows[0]['parse_packet'], rows[1]['parse_packet']):.0f} ns"),
    ]
    print("## targets")
    print()
    for name, ok, val in checks:
        print(f"- [{'x' if ok else ' '}] {name}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
