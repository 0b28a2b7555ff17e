"""The link emulator measures its own accuracy.

For each rate the testbed is built once and the emulator set to `delay` one way
and `rate` in both directions; then, from the client across the link to the server:

* delay: UDP probes, 64-byte payloads at 100 per second; the receiver takes the
  kernel's receive timestamp (SO_TIMESTAMPNS) and subtracts the send time in the
  payload (all namespaces share one clock).  Expected one-way time = delay + the
  probe's own serialization (IP bytes * 8 / rate).
* rate: a paced UDP stream of 1500-byte IP packets at 110 % of the rate for
  `duration` seconds, so the emulator's queue stays busy; the received rate is
  the IP bytes after the first packet over the time from first to last arrival.

* lateness under TCP: an iperf3 download (cubic) through the same link; the
  relay counts the frames it sent more than 1 ms after their departure time.

Pass: delay error (median and 95th percentile) within 1 ms; rate within 2 %; at
most 1 % of the frames of the TCP download more than 1 ms late.

    python -m stackpep.testbed.selftest [--rates 20,50,100] [--delay 50] [--duration 5]
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

PORT = 9009
IP_UDP = 28  # IPv4 + UDP header bytes
PROBE = struct.Struct("!cIq")  # kind, seq, send time (ns, CLOCK_REALTIME)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


# -- sender and receiver (run inside namespaces) -------------------------------
def send_probes(dst: str, count: int, interval: float, size: int = 64) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * (size - PROBE.size)
    t = time.monotonic()
    for seq in range(count):
        s.sendto(PROBE.pack(b"D", seq, time.time_ns()) + pad, (dst, PORT))
        t += interval
        time.sleep(max(0.0, t - time.monotonic()))
    _send_end(s, dst)


def send_stream(dst: str, rate_bps: float, duration: float, size: int = 1472) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = b"\0" * (size - PROBE.size)
    pkt_time = (size + IP_UDP) * 8 / rate_bps
    start = time.monotonic()
    sent = 0
    seq = 0
    while True:
        now = time.monotonic()
        if now - start >= duration:
            break
        due = int((now - start) / pkt_time) + 1
        while sent < due:
            try:
                s.sendto(PROBE.pack(b"R", seq, time.time_ns()) + pad, (dst, PORT))
            except BlockingIOError:  # pragma: no cover
                break
            sent += 1
            seq += 1
        time.sleep(0.0005)
    time.sleep(0.3)
    _send_end(s, dst)


def _send_end(s: socket.socket, dst: str) -> None:
    for _ in range(5):
        s.sendto(PROBE.pack(b"E", 0, time.time_ns()), (dst, PORT))
        time.sleep(0.05)


def receive(out: str, timeout: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", PORT))
    s.settimeout(timeout)
    one_way_ns: List[int] = []
    probe_seqs: List[int] = []
    n_rate = 0
    bytes_rate = 0
    first_ns = last_ns = None
    first_len = 0
    try:
        while True:
            data, anc, _, _ = s.recvmsg(2048, 64)
            rx_ns = time.time_ns()
            for level, typ, val in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    rx_ns = sec * 1_000_000_000 + nsec
            kind, seq, tx_ns = PROBE.unpack_from(data)
            if kind == b"E":
                break
            if kind == b"D":
                one_way_ns.append(rx_ns - tx_ns)
                probe_seqs.append(seq)
            elif kind == b"R":
                n_rate += 1
                if first_ns is None:
                    first_ns, first_len = rx_ns, len(data) + IP_UDP
                last_ns = rx_ns
                bytes_rate += len(data) + IP_UDP
    except socket.timeout:
        pass
    res = {"one_way_us": [x / 1000 for x in one_way_ns], "probe_seqs": probe_seqs, "rate_packets": n_rate}
    if first_ns is not None and last_ns is not None and last_ns > first_ns:
        res["rate_bps"] = (bytes_rate - first_len) * 8 / ((last_ns - first_ns) / 1e9)
        res["rate_window_s"] = (last_ns - first_ns) / 1e9
    with open(out, "w") as f:
        json.dump(res, f)


# -- the self-test ----------------------------------------------------------------
@dataclass
class RateResult:
    rate_mbit: float
    delay_ms: float
    delay_error_median_ms: float
    delay_error_p95_ms: float
    delay_error_max_ms: float
    probes: int
    measured_rate_mbit: float
    rate_error: float  # relative
    link: Optional[dict] = None
    delay_error_min_ms: float = 0.0  # signed: < 0 would be a probe that left early
    probes_reordered: int = 0  # probes that arrived after a later-sent one
    rate_window_s: float = 0.0  # first to last arrival of the rate stream
    rate_late_max_ms: float = 0.0  # the emulator's worst send lateness (probes and stream)
    tcp_goodput_mbit: Optional[float] = None  # iperf3 download through the link
    tcp_frames: int = 0
    tcp_late_over_1ms: int = 0  # frames the relay sent > 1 ms after their time
    tcp_late_max_ms: Optional[float] = None

    @property
    def delay_ok(self) -> bool:
        return abs(self.delay_error_median_ms) <= 1.0 and abs(self.delay_error_p95_ms) <= 1.0

    def rate_allowance_mbit(self) -> float:
        """The most the measured rate may exceed the setting by: the emulator never
        sends a frame before its departure time, and frames it sends late leave back
        to back, so over the stream's window it can pass at most the bytes of its
        worst lateness (rate x late) plus one frame more than rate x window."""
        if not self.rate_window_s:
            return float("inf")
        extra_bits = self.rate_mbit * 1e6 * self.rate_late_max_ms / 1000 + 1500 * 8
        return extra_bits / self.rate_window_s / 1e6

    @property
    def rate_ok(self) -> bool:
        return abs(self.rate_error) <= 0.02

    @property
    def tcp_ok(self) -> bool:
        """Under real TCP traffic (bursts, both directions) at least 99 % of the
        frames leave within 1 ms of their time."""
        if self.tcp_goodput_mbit is None:
            return True
        return self.tcp_frames > 0 and self.tcp_late_over_1ms <= 0.01 * self.tcp_frames

    def as_dict(self) -> Dict:
        d = {k: v for k, v in self.__dict__.items() if k != "link"}
        d.update(delay_ok=self.delay_ok, rate_ok=self.rate_ok, tcp_ok=self.tcp_ok)
        if self.link:
            d["emulator_send_late_max_us"] = self.link.get("send_late_max_us")
            d["emulator_cpu_share"] = self.link.get("cpu_share")
        return d


def _reordered(seqs: Sequence[int]) -> int:
    """How many arrived after one sent later than them."""
    top, n = -1, 0
    for s in seqs:
        if s < top:
            n += 1
        top = max(top, s)
    return n


def _percentile(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def measure(rates_mbit: Sequence[float] = (20, 50, 100), delay_ms: float = 50.0, duration: float = 5.0,
            probes: int = 200, progress=print, tcp_seconds: float = 0.0) -> List[RateResult]:
    from stackpep.testbed.emulator import DirectionParams
    from stackpep.testbed.topology import SERVER4, LinkSpec, Topology, python_command, python_env

    results = []
    env = python_env()
    me = python_command("stackpep.testbed.selftest")
    with Topology() as topo:
        for rate in rates_mbit:
            p = DirectionParams(delay_ms=delay_ms, rate_bps=rate * 1e6, queue_ms=100)
            topo.start_link(LinkSpec(p, p))
            topo.warm_up()
            out = topo.workdir / f"selftest-{rate:g}.json"
            timeout = delay_ms / 1000 + 5

            rx = topo.server.popen([*me, "recv", "--out", str(out) + ".d", "--timeout", str(timeout)], env=env)
            time.sleep(0.3)
            topo.client.run([*me, "send-probes", "--dst", SERVER4, "--count", str(probes)], env=env,
                            timeout=probes * 0.01 + 30)
            rx.wait(timeout=timeout + 10)
            d = json.loads(open(str(out) + ".d").read())

            rx = topo.server.popen([*me, "recv", "--out", str(out) + ".r", "--timeout", str(timeout)], env=env)
            time.sleep(0.3)
            topo.client.run([*me, "send-stream", "--dst", SERVER4, "--rate", str(rate * 1.1e6),
                             "--duration", str(duration)], env=env, timeout=duration + 30)
            rx.wait(timeout=timeout + 10)
            r = json.loads(open(str(out) + ".r").read())
            link = topo.stop_link()

            probe_ser_ms = (64 + IP_UDP) * 8 / (rate * 1e6) * 1000
            errs = [x / 1000 - delay_ms - probe_ser_ms for x in d["one_way_us"]]
            if not errs or "rate_bps" not in r:
                raise RuntimeError(f"self-test at {rate} Mbit/s got no probes/stream through the link: {link}")
            res = RateResult(
                rate_mbit=rate, delay_ms=delay_ms,
                delay_error_median_ms=round(statistics.median(errs), 3),
                delay_error_p95_ms=round(_percentile([abs(e) for e in errs], 0.95), 3),
                delay_error_max_ms=round(max(abs(e) for e in errs), 3),
                probes=len(errs),
                measured_rate_mbit=round(r["rate_bps"] / 1e6, 3),
                rate_error=round(r["rate_bps"] / (rate * 1e6) - 1, 5),
                link=link,
                delay_error_min_ms=round(min(errs), 3),
                probes_reordered=_reordered(d["probe_seqs"]),
                rate_window_s=round(r["rate_window_s"], 6),
                rate_late_max_ms=round((link or {}).get("send_late_max_us", 0.0) / 1000, 3),
            )
            if tcp_seconds:
                from stackpep.testbed.workloads import bulk

                topo.start_link(LinkSpec(p, p))
                topo.set_congestion("cubic")
                b = bulk(topo, "download", tcp_seconds)
                st = topo.stop_link() or {}
                res.tcp_goodput_mbit = round(b.get("goodput_bps", 0.0) / 1e6, 3)
                res.tcp_frames = int(st.get("frames_sent", 0))
                res.tcp_late_over_1ms = int(st.get("send_late_over_1ms", 0))
                res.tcp_late_max_ms = round(st.get("send_late_max_us", 0.0) / 1000, 3)
            progress(format_result(res))
            results.append(res)
    return results


def format_result(r: RateResult) -> str:
    return (f"{r.rate_mbit:>6g} Mbit/s: delay error median {r.delay_error_median_ms:+.3f} ms, "
            f"p95 {r.delay_error_p95_ms:.3f} ms, max {r.delay_error_max_ms:.3f} ms "
            f"({r.probes} probes) {'ok' if r.delay_ok else 'FAIL'}; "
            f"rate {r.measured_rate_mbit:.3f} Mbit/s ({r.rate_error * 100:+.2f} %) {'ok' if r.rate_ok else 'FAIL'}"
            + (f"; TCP {r.tcp_goodput_mbit:.1f} Mbit/s: {r.tcp_late_over_1ms} of {r.tcp_frames} frames "
               f">1 ms late (max {r.tcp_late_max_ms:.1f} ms) {'ok' if r.tcp_ok else 'FAIL'}"
               if r.tcp_goodput_mbit is not None else ""))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("recv", "send-probes", "send-stream"):
        return run_selftest_cli(argv)
    ap = argparse.ArgumentParser(prog="python -m stackpep.testbed.selftest")
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("recv")
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=10)
    p = sub.add_parser("send-probes")
    p.add_argument("--dst", required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--interval", type=float, default=0.01)
    p = sub.add_parser("send-stream")
    p.add_argument("--dst", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, default=5)
    args = ap.parse_args(argv)
    if args.cmd == "recv":
        receive(args.out, args.timeout)
        return 0
    if args.cmd == "send-probes":
        send_probes(args.dst, args.count, args.interval)
        return 0
    if args.cmd == "send-stream":
        send_stream(args.dst, args.rate, args.duration)
    return 0


def add_selftest_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rates", default="20,50,100", help="Mbit/s, comma-separated")
    ap.add_argument("--delay", type=float, default=50.0, help="one-way delay in ms")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of the rate stream")
    ap.add_argument("--tcp-seconds", type=float, default=5.0,
                    help="seconds of iperf3 download per rate for the lateness check (0 = skip)")
    ap.add_argument("--json", help="write the results to this file")


def run_selftest(args) -> int:
    rates = [float(x) for x in args.rates.split(",") if x]
    print(f"link emulator self-test: delay {args.delay:g} ms, rates {args.rates} Mbit/s, "
          f"{args.duration:g} s streams", flush=True)
    res = measure(rates, args.delay, args.duration, progress=lambda s: print(s, flush=True),
                  tcp_seconds=args.tcp_seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in res], f, indent=1)
    ok = all(r.delay_ok and r.rate_ok and r.tcp_ok for r in res)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def run_selftest_cli(argv) -> int:
    ap = argparse.ArgumentParser(prog="python -m stackpep.testbed.selftest")
    add_selftest_args(ap)
    return run_selftest(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
