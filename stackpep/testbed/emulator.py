"""The link emulator: relays Ethernet frames between two interfaces of the link host.

It runs as its own process inside the link namespace

    python -m stackpep.testbed.emulator --if-a la --if-b lb \\
        --forward delay=300ms,rate=20mbit,queue=250ms,loss=0.01 \\
        --return  delay=300ms,rate=5mbit,queue=250ms,loss=0.01 --seed 1 --stats FILE

`--if-a` faces the client side, `--if-b` the server side.  As on a satellite
link, the *forward* direction carries traffic towards the user (b -> a, the
download) and the *return* direction traffic from the user (a -> b).

and reads every frame arriving on either interface with an AF_PACKET socket,
decides its fate in `LinkDirection.admit()` (the sans-IO core: frame size and
`now` in, departure time or a drop reason out) and sends it out of the other
interface when its time has come.

Per direction, applied in this order to each frame arriving at time t:

1. outage   -- the link is down during scheduled windows, or while an operator holds
               it down (SIGUSR1 down, SIGUSR2 up: `Topology.link_down()` /
               `link_up()`): frames arriving then are dropped ("outage").
2. queue    -- a drop-tail FIFO in front of a serializer of `rate` bit/s counted on
               IP bytes (frame length - 14).  The backlog is what is still to be
               serialized; a frame that would push it over `queue` (bytes, or ms
               of serialization at `rate`) is dropped ("queue").
3. serialization -- the frame leaves the queue at max(t, link free) + size*8/rate.
4. corruption -- a frame that used the link may still be lost: uniform random loss
               ("loss"), bit errors with P = 1 - (1 - BER)^(8 * IP bytes) ("ber"), and
               the Gilbert-Elliott two-state burst channel ("burst").  Lost frames
               consumed link capacity, which is why the capacity of a lossy link is
               rate * (1 - loss).
5. delay    -- propagation delay plus optional jitter: an offset uniform in
               +-jitter, redrawn every 2 x jitter; a frame never leaves before the
               one in front of it (jitter without reordering).

The randomness is seeded per direction, so a run is reproducible frame by frame.
Frames larger than the MTU (GRO/TSO super-frames: the topology turns those
offloads off) are dropped and counted as "oversize".
"""
from __future__ import annotations

import argparse
import collections
import errno
import gc
import json
import math
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Deque, Dict, List, Optional, Sequence, Tuple

ETH_HLEN = 14
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h, Linux >= 4.20
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

DROP_REASONS = ("outage", "queue", "loss", "ber", "burst", "oversize", "send_error")


# -- parameters -------------------------------------------------------------
@dataclass
class Outage:
    """The link is down from `start` for `duration` seconds (relative to the
    emulator's start); with `every` > 0 the window repeats with that period."""

    start: float
    duration: float
    every: float = 0.0

    def down(self, t: float) -> bool:
        if t < self.start:
            return False
        if self.every > 0:
            return (t - self.start) % self.every < self.duration
        return t < self.start + self.duration

    @classmethod
    def parse(cls, spec: str) -> "Outage":
        """'20:10' = down at 20 s for 10 s; '5:0.3/10' = from 5 s, 0.3 s every 10 s."""
        every = 0.0
        if "/" in spec:
            spec, ev = spec.split("/", 1)
            every = float(ev)
        start, dur = spec.split(":", 1)
        out = cls(float(start), float(dur), every)
        if out.duration <= 0 or out.start < 0 or (out.every and out.every <= out.duration):
            raise ValueError(f"bad outage {spec!r}: need start >= 0, duration > 0, period > duration")
        return out

    def spec(self) -> str:
        return f"{self.start:g}:{self.duration:g}" + (f"/{self.every:g}" if self.every else "")


@dataclass
class DirectionParams:
    """What one direction of the link does to frames (see the module docstring)."""

    delay_ms: float = 0.0
    rate_bps: float = 0.0  # 0 = unlimited (no serializer, no queue)
    queue_bytes: Optional[int] = None  # drop-tail limit in bytes ...
    queue_ms: Optional[float] = None  # ... or in ms of serialization at rate
    loss: float = 0.0  # uniform random loss probability per frame
    ber: float = 0.0  # bit-error rate (frame lost if any bit is hit)
    ge_p: float = 0.0  # Gilbert-Elliott P(good -> bad) per frame
    ge_r: float = 1.0  # Gilbert-Elliott P(bad -> good) per frame
    ge_loss_good: float = 0.0  # loss probability in the good state
    ge_loss_bad: float = 0.0  # loss probability in the bad state
    jitter_ms: float = 0.0  # delay offset uniform in +-jitter, redrawn every 2 x jitter (never reorders)
    mtu: int = 1500

    def queue_limit_bytes(self) -> Optional[float]:
        if self.rate_bps <= 0:
            return None
        limits = []
        if self.queue_bytes is not None:
            limits.append(float(self.queue_bytes))
        if self.queue_ms is not None:
            limits.append(self.queue_ms / 1000.0 * self.rate_bps / 8.0)
        return min(limits) if limits else None

    def ge_enabled(self) -> bool:
        return self.ge_p > 0 or self.ge_loss_good > 0

    # 'delay=300ms,rate=20mbit,queue=250ms,loss=0.01,ber=1e-7,jitter=2ms,ge_p=..'
    @classmethod
    def parse(cls, spec: str) -> "DirectionParams":
        p = cls()
        for item in filter(None, (s.strip() for s in spec.split(","))):
            if "=" not in item:
                raise ValueError(f"bad link parameter {item!r} (want key=value)")
            key, val = (s.strip() for s in item.split("=", 1))
            if key == "delay":
                p.delay_ms = parse_ms(val)
            elif key == "rate":
                p.rate_bps = parse_rate(val)
            elif key == "queue":
                if val.lower().endswith(("ms", "us")) or val.lower()[-1:] == "s" and val[:-1].replace(".", "").isdigit():
                    p.queue_ms = parse_ms(val)
                else:
                    p.queue_bytes = int(parse_size(val))
            elif key == "loss":
                p.loss = parse_prob(val)
            elif key == "ber":
                p.ber = float(val)
            elif key in ("ge_p", "ge_r", "ge_loss_good", "ge_loss_bad"):
                setattr(p, key, parse_prob(val))
            elif key == "jitter":
                p.jitter_ms = parse_ms(val)
            elif key == "mtu":
                p.mtu = int(val)
            else:
                raise ValueError(f"unknown link parameter {key!r}")
        for name in ("loss", "ber", "ge_p", "ge_r", "ge_loss_good", "ge_loss_bad"):
            v = getattr(p, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} is not a probability")
        if p.delay_ms < 0 or p.rate_bps < 0 or p.jitter_ms < 0:
            raise ValueError("delay, rate and jitter must not be negative")
        return p

    def spec(self) -> str:
        parts = [f"delay={self.delay_ms:g}ms"]
        if self.rate_bps:
            parts.append(f"rate={self.rate_bps / 1e6:g}mbit")
        if self.queue_bytes is not None:
            parts.append(f"queue={self.queue_bytes}")
        if self.queue_ms is not None:
            parts.append(f"queue={self.queue_ms:g}ms")
        for name in ("loss", "ber", "ge_p", "ge_r", "ge_loss_good", "ge_loss_bad"):
            v = getattr(self, name)
            if v != getattr(DirectionParams, name):
                parts.append(f"{name}={v:g}")
        if self.jitter_ms:
            parts.append(f"jitter={self.jitter_ms:g}ms")
        if self.mtu != 1500:
            parts.append(f"mtu={self.mtu}")
        return ",".join(parts)


def parse_ms(val: str) -> float:
    val = val.strip().lower()
    if val.endswith("ms"):
        return float(val[:-2])
    if val.endswith("us"):
        return float(val[:-2]) / 1000.0
    if val.endswith("s"):
        return float(val[:-1]) * 1000.0
    return float(val)


def parse_rate(val: str) -> float:
    """'20mbit', '20M', '500kbit', '1.5gbit', '20000000' -> bit/s."""
    v = val.strip().lower().replace("bit/s", "").replace("bps", "").replace("bit", "")
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(v[-1:], None)
    return float(v[:-1]) * mult if mult else float(v)


def parse_size(val: str) -> float:
    v = val.strip().lower().replace("bytes", "").replace("b", "")
    mult = {"k": 1e3, "m": 1e6}.get(v[-1:], None)
    return float(v[:-1]) * mult if mult else float(v)


def parse_prob(val: str) -> float:
    val = val.strip()
    return float(val[:-1]) / 100.0 if val.endswith("%") else float(val)


# -- the sans-IO core ---------------------------------------------------------
class LinkDirection:
    """One direction of the link: frame sizes and times in, departure times out.

    `admit(frame_len, now)` returns the time (same clock as `now`, seconds) at
    which the frame leaves the far end of the link, or None if it is dropped; the
    reason is counted in `drops`.
    """

    def __init__(self, params: DirectionParams, seed: int, outages: Sequence[Outage] = (), t0: float = 0.0):
        self.p = params
        self.rng = random.Random(seed)
        self.outages = list(outages)
        self.t0 = t0
        self.link_free = 0.0  # when the serializer finishes the last admitted frame
        self.last_departure = 0.0
        self.ge_bad = False
        self.limit = params.queue_limit_bytes()
        self.delay = params.delay_ms / 1000.0
        self.jitter = params.jitter_ms / 1000.0
        self.jitter_offset = 0.0
        self.jitter_until = -math.inf
        self.byte_time = 8.0 / params.rate_bps if params.rate_bps > 0 else 0.0
        self.max_frame = params.mtu + ETH_HLEN
        self.frames_in = self.bytes_in = 0
        self.frames_out = self.bytes_out = 0
        self.drops: Dict[str, int] = {r: 0 for r in DROP_REASONS}
        self.max_backlog_bytes = 0.0
        self.down = False  # held down by the operator (SIGUSR1 .. SIGUSR2), beside the scheduled outages

    def admit(self, frame_len: int, now: float) -> Optional[float]:
        self.frames_in += 1
        ip_len = frame_len - ETH_HLEN
        self.bytes_in += ip_len
        if frame_len > self.max_frame:
            self.drops["oversize"] += 1
            return None
        if self.down:
            self.drops["outage"] += 1
            return None
        if self.outages:
            t = now - self.t0
            for o in self.outages:
                if o.down(t):
                    self.drops["outage"] += 1
                    return None
        p = self.p
        if self.byte_time:
            start = self.link_free if self.link_free > now else now
            if self.limit is not None:
                backlog = (start - now) / self.byte_time  # bytes still to serialize
                if backlog + ip_len > self.limit:
                    self.drops["queue"] += 1
                    return None
                if backlog > self.max_backlog_bytes:
                    self.max_backlog_bytes = backlog
            done = start + ip_len * self.byte_time
            self.link_free = done
        else:
            done = now
        # The frame used the link; now it may be corrupted on the way.
        rng = self.rng
        if p.loss and rng.random() < p.loss:
            self.drops["loss"] += 1
            return None
        if p.ber and rng.random() < 1.0 - (1.0 - p.ber) ** (8 * ip_len):
            self.drops["ber"] += 1
            return None
        if p.ge_p or p.ge_loss_good:
            # Gilbert-Elliott: move the channel state, then lose with that state's rate.
            if self.ge_bad:
                if rng.random() < p.ge_r:
                    self.ge_bad = False
            elif rng.random() < p.ge_p:
                self.ge_bad = True
            if rng.random() < (p.ge_loss_bad if self.ge_bad else p.ge_loss_good):
                self.drops["burst"] += 1
                return None
        dep = done + self.delay
        if self.jitter:
            # The offset is redrawn every 2 x jitter of arrival time rather than per
            # frame: per-frame draws plus "no reordering" would pin every frame of a
            # dense stream to the largest offset.
            if now >= self.jitter_until:
                self.jitter_offset = rng.uniform(-self.jitter, self.jitter)
                self.jitter_until = now + 2 * self.jitter
            dep += self.jitter_offset
        if dep < self.last_departure:  # jitter never reorders
            dep = self.last_departure
        if dep < done:
            dep = done
        self.last_departure = dep
        return dep

    def sent(self, frame_len: int) -> None:
        self.frames_out += 1
        self.bytes_out += frame_len - ETH_HLEN

    def statistics(self) -> Dict:
        return {
            "params": self.p.spec(),
            "frames_in": self.frames_in,
            "ip_bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "ip_bytes_out": self.bytes_out,
            "drops": dict(self.drops),
            "max_backlog_bytes": int(self.max_backlog_bytes),
            "down": self.down,
        }


# -- the I/O edge: AF_PACKET relay ------------------------------------------
def open_port(ifname: str) -> socket.socket:
    # Protocol 0 until bound: no frame of another interface slips in before bind().
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((ifname, ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)  # our own sends
    except OSError:  # pragma: no cover - old kernel
        pass
    for opt, size in ((SO_RCVBUFFORCE, 32 << 20), (SO_SNDBUFFORCE, 8 << 20)):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:  # pragma: no cover - not root
            pass
    s.setblocking(False)
    # Drain anything queued before the socket was fully set up.
    while True:
        try:
            s.recv(65535)
        except BlockingIOError:
            break
    return s


def disable_offloads(ifname: str, netns: Optional[str] = None) -> None:
    """GRO/TSO/GSO super-frames and checksum-not-ready frames must not reach the relay."""
    import subprocess

    argv = ["ethtool", "-K", ifname, "gro", "off", "gso", "off", "tso", "off", "tx", "off", "rx", "off"]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    subprocess.run(argv, capture_output=True, check=False)


class StatsFile:
    """The relay's counters as a JSON file, written by a thread of its own.

    The relay only hands over the text; opening, writing and renaming the file
    happen here, because a file system that stalls (a journal commit behind other
    work's writes) would otherwise stop the relay: measured in the testbed, a
    121 ms and a 678 ms statistics write, during which every frame stayed in the
    delay line -- a 100 KB fetch over the GEO link took a round trip longer.
    Only the newest text waits; an older one not yet written is replaced."""

    def __init__(self, path: str):
        self.path = path
        self._text: Optional[str] = None
        self._cond = threading.Condition()
        self._closed = False
        self.write_max = 0.0  # s, the longest write (what the relay no longer waits for)
        self._thread = threading.Thread(target=self._run, name="emulator-stats", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> None:
        with self._cond:
            self._text = text
            self._cond.notify()

    def _write(self, text: str) -> None:
        t = time.monotonic()
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)
        self.write_max = max(self.write_max, time.monotonic() - t)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._text is None and not self._closed:
                    self._cond.wait()
                text, self._text = self._text, None
                if text is None:
                    return
            self._write(text)

    def close(self, final: str) -> None:
        """Write `final` (synchronously, after whatever was pending) and stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        self._write(final)


class Relay:
    """Moves frames between two AF_PACKET ports through two LinkDirections."""

    SPIN = 0.0002  # s: sleep in select() until this close to a departure, then poll
    BATCH = 64  # frames read from one port before looking at departures again

    def __init__(self, if_a: str, if_b: str, fwd: LinkDirection, ret: LinkDirection):
        self.if_a, self.if_b = if_a, if_b
        self.a = open_port(if_a)
        self.b = open_port(if_b)
        self.fwd, self.ret = fwd, ret  # forward: b -> a (towards the client); return: a -> b
        self.q_ab: Deque[Tuple[float, bytes]] = collections.deque()  # return direction
        self.q_ba: Deque[Tuple[float, bytes]] = collections.deque()  # forward direction
        self.stop = False
        self.late_max = 0.0  # worst lateness of a send behind its departure time
        self.late_sum = 0.0
        self.late_n = 0
        self.late_over_1ms = 0  # frames sent more than 1 ms after their departure time
        self.late_over_10ms = 0
        self.send_time = 0.0  # s spent in send(): the receiving stacks run inline in it
        # Where a late frame's time went (a frame 0.6 s late costs a fetch a GEO round
        # trip): the longest single send() (the receiving stack runs inline in it), the
        # longest statistics write (StatsFile's thread: a file system stall, which the
        # relay no longer waits for), and the longest a select() returned after its
        # timeout (the relay was not scheduled).
        self.send_max = 0.0
        self.wake_late_max = 0.0
        self.stats_file: Optional[StatsFile] = None
        self.started = time.monotonic()
        self._oversize_warned = False

    def _receive(self, sock, core: LinkDirection, q, clock=time.monotonic) -> int:
        n = 0
        recv = sock.recv
        admit = core.admit
        append = q.append
        for _ in range(self.BATCH):
            try:
                frame = recv(65535)
            except BlockingIOError:
                break
            except OSError as exc:  # pragma: no cover - e.g. interface gone
                if exc.errno in (errno.ENETDOWN, errno.ENXIO):
                    self.stop = True
                break
            n += 1
            dep = admit(len(frame), clock())
            if dep is not None:
                append((dep, frame))
            elif not self._oversize_warned and core.drops["oversize"]:
                self._oversize_warned = True
                print(f"emulator: dropping {len(frame)}-byte super-frames: turn GRO/TSO/GSO off",
                      file=sys.stderr, flush=True)
        return n

    def _transmit(self, sock, core: LinkDirection, q, now: float) -> None:
        send = sock.send
        while q and q[0][0] <= now:
            dep, frame = q.popleft()
            late = now - dep
            self.late_sum += late
            self.late_n += 1
            if late > 0.001:
                self.late_over_1ms += 1
                if late > 0.010:
                    self.late_over_10ms += 1
            if late > self.late_max:
                self.late_max = late
            try:
                t = time.monotonic()
                send(frame)
                t = time.monotonic() - t
                self.send_time += t
                if t > self.send_max:
                    self.send_max = t
                core.sent(len(frame))
            except OSError as exc:
                # ENOBUFS from a full egress queue is a queue drop of the far side.
                if exc.errno in (errno.ENOBUFS, errno.EAGAIN):
                    core.drops["send_error"] += 1
                else:
                    raise

    def run(self, stats_path: Optional[str] = None, duration: Optional[float] = None) -> None:
        clock = time.monotonic
        a, b = self.a, self.b
        fwd, ret, q_ab, q_ba = self.fwd, self.ret, self.q_ab, self.q_ba
        fds = [a, b]
        next_stats = clock() + 1.0
        end = clock() + duration if duration else None
        spin = self.SPIN
        while not self.stop:
            self._receive(a, ret, q_ab)
            self._receive(b, fwd, q_ba)
            now = clock()
            self._transmit(b, ret, q_ab, now)
            self._transmit(a, fwd, q_ba, now)
            if q_ab or q_ba:
                head = min(q[0][0] for q in (q_ab, q_ba) if q)
                wait = head - clock()
                if wait > spin:
                    self._select(fds, wait - spin)
                # else: poll the sockets again at once (busy-wait the last few hundred µs)
            else:
                self._select(fds, 0.2)
            if stats_path and now >= next_stats:
                self.write_stats(stats_path)
                next_stats = now + 1.0
            if end is not None and now >= end:
                break
        if stats_path:
            self.write_stats(stats_path, final=True)

    def _select(self, fds, timeout: float) -> None:
        t = time.monotonic()
        r, _, _ = select.select(fds, [], [], timeout)
        if not r:
            late = time.monotonic() - t - timeout
            if late > self.wake_late_max:
                self.wake_late_max = late

    def statistics(self) -> Dict:
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "interfaces": [self.if_a, self.if_b],
            "forward": self.fwd.statistics(),  # b -> a, towards the client
            "return": self.ret.statistics(),  # a -> b, from the client
            "send_late_max_us": round(self.late_max * 1e6, 1),
            "send_late_mean_us": round(self.late_sum / self.late_n * 1e6, 1) if self.late_n else 0.0,
            "send_late_over_1ms": self.late_over_1ms,
            "send_late_over_10ms": self.late_over_10ms,
            "frames_sent": self.late_n,
            "send_syscall_s": round(self.send_time, 3),
            "send_syscall_max_us": round(self.send_max * 1e6, 1),
            "stats_write_max_us": round(self.stats_file.write_max * 1e6, 1) if self.stats_file else 0.0,
            "wake_late_max_us": round(self.wake_late_max * 1e6, 1),
            "queued_frames": len(self.q_ab) + len(self.q_ba),
        }

    def write_stats(self, path: str, final: bool = False) -> None:
        """Hand the counters to the statistics file's thread (the relay never waits
        for the file system); `final`: write them now and stop that thread."""
        if self.stats_file is None or self.stats_file.path != path:
            self.stats_file = StatsFile(path)
        text = json.dumps(self.statistics(), indent=1)
        if final:
            self.stats_file.close(text)
        else:
            self.stats_file.submit(text)


def tune_scheduling(mode: str) -> str:
    """Wake up on time: 1 ns timer slack (the default 50 µs rounds every select()
    timeout up), and a real-time or raised priority so that the traffic the relay
    carries does not delay it.  The relay sleeps between departures, so SCHED_FIFO
    does not starve the machine (and the kernel's RT throttling bounds it anyway)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if mode == "fifo":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            return "fifo"
        except (OSError, AttributeError):
            mode = "nice"
    if mode == "nice":
        try:
            os.nice(-10)
            return "nice"
        except OSError:
            pass
    return "normal"


# -- netem, where the kernel has it --------------------------------------------
def netem_available() -> bool:
    """True if the running kernel offers the netem qdisc (tried in a scratch namespace)."""
    import subprocess

    name = f"spnetem{os.getpid()}"
    try:
        if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
            return False
        res = subprocess.run(["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root",
                              "netem", "delay", "1ms"], capture_output=True)
        return res.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def netem_args(p: DirectionParams) -> List[str]:
    """tc netem arguments approximating DirectionParams (no BER, no outages)."""
    args = ["delay", f"{p.delay_ms:g}ms"]
    if p.jitter_ms:
        args += [f"{p.jitter_ms:g}ms"]
    if p.loss:
        args += ["loss", "random", f"{p.loss * 100:g}%"]
    elif p.ge_enabled():
        args += ["loss", "gemodel", f"{p.ge_p * 100:g}%", f"{p.ge_r * 100:g}%",
                 f"{p.ge_loss_bad * 100:g}%", f"{(1 - p.ge_loss_good) * 100:g}%"]
    if p.rate_bps:
        args += ["rate", f"{int(p.rate_bps)}bit"]
    limit = p.queue_limit_bytes()
    # netem's limit counts packets; the delay line must fit in it too.
    pkts = 1000
    if p.rate_bps:
        pkts = int(((limit or 0) + p.rate_bps / 8 * (p.delay_ms / 1000 + 0.1)) / 1000) + 100
    args += ["limit", str(pkts)]
    return args


# -- command line ---------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stackpep.testbed.emulator",
                                 description="Relay frames between two interfaces through an emulated link.")
    ap.add_argument("--if-a", required=True, help="interface towards the client side")
    ap.add_argument("--if-b", required=True, help="interface towards the server side")
    ap.add_argument("--forward", default="", help="b->a (towards the client) parameters, "
                    "e.g. delay=300ms,rate=20mbit,queue=250ms,loss=0.01")
    ap.add_argument("--return", dest="ret", default=None, help="a->b parameters (default: same as --forward)")
    ap.add_argument("--outage", action="append", default=[],
                    help="START:DURATION[/PERIOD] seconds from start, both directions (repeatable)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stats", help="write counters as JSON to this file (every second and at exit)")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--no-offload-fix", action="store_true", help="leave GRO/TSO/GSO of the two interfaces alone")
    ap.add_argument("--ready", help="create this file once both ports are open")
    ap.add_argument("--sched", choices=("fifo", "nice", "normal"), default="fifo",
                    help="fifo: SCHED_FIFO priority 10 (default, root); nice: nice -10; normal: leave it")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fwd_p = DirectionParams.parse(args.forward)
    ret_p = DirectionParams.parse(args.ret if args.ret is not None else args.forward)
    outages = [Outage.parse(s) for s in args.outage]
    if not args.no_offload_fix:
        for ifname in (args.if_a, args.if_b):
            disable_offloads(ifname)
    t0 = time.monotonic()
    fwd = LinkDirection(fwd_p, seed=args.seed * 2 + 0, outages=outages, t0=t0)
    ret = LinkDirection(ret_p, seed=args.seed * 2 + 1, outages=outages, t0=t0)
    relay = Relay(args.if_a, args.if_b, fwd, ret)

    def stop(signum, frame):
        relay.stop = True

    def hold(down: bool):
        def handler(signum, frame):
            fwd.down = ret.down = down
        return handler

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # an outage of any length, on command: both directions drop until SIGUSR2
    signal.signal(signal.SIGUSR1, hold(True))
    signal.signal(signal.SIGUSR2, hold(False))
    # The relay makes no reference cycles: a collector pass over the delay line's
    # thousands of queued frames would only add milliseconds of lateness.
    gc.collect()
    gc.freeze()
    gc.disable()
    if tune_scheduling(args.sched) == "fifo":
        # A SCHED_FIFO task wakes within microseconds of its timer; spinning would
        # only run it into the kernel's RT throttling (sched_rt_runtime_us: 50 ms
        # off the CPU every second).
        Relay.SPIN = 0.00002
    if args.stats:
        relay.write_stats(args.stats)
    if args.ready:
        with open(args.ready, "w") as f:
            f.write(str(os.getpid()))
    relay.run(stats_path=args.stats, duration=args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
