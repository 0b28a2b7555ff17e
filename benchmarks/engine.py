"""Engine benchmark: a bulk transfer between two TcpConnection objects in memory.

No I/O and no link model: the sender's packets go straight into the receiver
(``receive_packet``) and the receiver's ACKs straight back, on a virtual clock
that advances 1 µs per round and jumps to the next timer when nothing moves.
With ``--loss`` a seeded fraction of data packets is dropped on the way, so
SACK recovery (and the odd RTO) runs too.

Reported per run: full-size data segments through the sender+receiver pair per
second of CPU time on one core (``time.process_time``), µs per segment, and
the goodput that corresponds to.  Both engines and the driver loop share the
one core, so the figure is the pair's, as the issue asks.

    .venv/bin/python benchmarks/engine.py [--mbytes 200] [--loss 0 0.01] [--json]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time

from stackpep._fast.tcp import TcpConnection
from stackpep.tcp.config import TcpConfig

A = bytes([198, 18, 0, 1])
B = bytes([198, 18, 0, 2])


def bulk(total: int, loss: float, seed: int = 1, congestion: str = "cubic", buf: int = 4 << 20,
         timestamps: bool = True, sack: bool = True) -> dict:
    cfg = TcpConfig(congestion=congestion, snd_buf=buf, rcv_buf=buf, timestamps=timestamps, sack=sack,
                    min_rto_us=200_000)
    a = TcpConnection(cfg, A, 40000, B, 5201, 1)
    b = TcpConnection(cfg, B, 5201, A, 40000, 2)
    rng = random.Random(seed)
    rnd = rng.random
    b.listen()
    now = 0
    a.connect(now)
    for _ in range(3):            # handshake
        for p in a.packets_to_send(now):
            b.receive_packet(p, now)
        for p in b.packets_to_send(now):
            a.receive_packet(p, now)
    assert a.state == "ESTABLISHED" and b.state == "ESTABLISHED", (a.state, b.state)
    chunk = memoryview(bytes(rng.randbytes(1 << 20)))
    sent = received = 0
    dropped = 0
    sink = bytearray(1 << 20)
    a_send, a_out, a_in = a.send, a.packets_to_send, a.receive_packet
    b_in, b_out, b_recv = b.receive_packet, b.packets_to_send, b.recv_into
    t_cpu = time.process_time()
    t_wall = time.perf_counter()
    while received < total:
        while sent < total:
            n = a_send(chunk[: min(len(chunk), total - sent)])
            if not n:
                break
            sent += n
        pkts = a_out(now)
        if loss:
            for p in pkts:
                if rnd() < loss:
                    dropped += 1
                else:
                    b_in(p, now)
        else:
            for p in pkts:
                b_in(p, now)
        while True:
            n = b_recv(sink)
            if not n:
                break
            received += n
        acks = b_out(now)
        for p in acks:
            a_in(p, now)
        if not pkts and not acks:
            ta, tb = a.get_timer(), b.get_timer()
            if ta is None and tb is None:
                raise RuntimeError(f"transfer stalled at {received} of {total} bytes")
            now = max(now + 1, min(t for t in (ta, tb) if t is not None))
            if ta is not None and ta <= now:
                a.handle_timer(now)
            if tb is not None and tb <= now:
                b.handle_timer(now)
        else:
            now += 1
    cpu = time.process_time() - t_cpu
    wall = time.perf_counter() - t_wall
    sa = a.statistics()
    sb = b.statistics()
    mss = sa.mss
    full_segments = total / mss
    return {
        "mbytes": total / 1e6, "loss": loss, "congestion": congestion, "mss": mss,
        "timestamps": timestamps, "sack": sack,
        "data_segments_sent": sa.segments_sent, "acks_sent": sb.segments_sent, "dropped": dropped,
        "retransmits": sa.retransmits, "timeouts": sa.timeouts, "fast_retransmits": sa.fast_retransmits,
        "cpu_s": cpu, "wall_s": wall,
        "segments_per_s": full_segments / cpu,
        "us_per_segment": cpu * 1e6 / full_segments,
        "goodput_gbit_s": total * 8 / cpu / 1e9,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mbytes", type=float, default=200.0)
    ap.add_argument("--loss", type=float, nargs="*", default=[0.0, 0.001, 0.01])
    ap.add_argument("--congestion", default="cubic")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for loss in args.loss:
        rows.append(bulk(int(args.mbytes * 1e6), loss, congestion=args.congestion))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"# stackpep engine benchmark: {platform.python_implementation()} {platform.python_version()},"
          f" {platform.machine()}, one core")
    print("| loss | MB | MSS | data segs sent | retransmits | RTOs | CPU s | segments/s | µs/segment | Gbit/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['loss']:.3%} | {r['mbytes']:.0f} | {r['mss']} | {r['data_segments_sent']} | {r['retransmits']}"
              f" | {r['timeouts']} | {r['cpu_s']:.2f} | {r['segments_per_s']:,.0f} | {r['us_per_segment']:.2f}"
              f" | {r['goodput_gbit_s']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
