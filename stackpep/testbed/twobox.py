"""Two PEP boxes on the five-host testbed (stackpep.testbed.topology), for the
namespace tests of SCPS-TP on the long leg (tests/test_scps_link_netns.py):

    client ─ pep-a ─ link (emulator) ─ pep-b ─ server

`TwoBoxes` starts `stackpep run` in pep-a / pep-b with one worker each (connection
ids are then deterministic), reads their `--stats-file`, and kills or restarts one.
`SHA_SERVER` / `SHA_CLIENTS` move random bytes both ways over any number of
parallel connections and report per connection whether both sha256 digests
matched; `ip_frames()` reads a link capture.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from stackpep.testbed.emulator import DirectionParams
from stackpep.testbed.splitbox import wait_stats_file
from stackpep.testbed.topology import LinkSpec, Topology, python_env

BOX_TOML = """\
[pep]
log_level = "info"
workers = 1
[interfaces]
client = ["{client_if}"]
server = ["{server_if}"]
[intercept]
prefixes = ["198.18.0.0/15", "fd00:5e::/32"]
[control]
socket = ""
[limits]
drain_timeout = 0
[wan]
interface = "wan0"
rate = 20000000
rtt = 0.02
keepalive = {keepalive}
"""


class TwoBoxes:
    """pep-a (client side) and pep-b (server side); `extra` is appended to [wan]."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.procs: Dict[str, subprocess.Popen] = {}

    def start(self, name: str, extra: str = "", args: Tuple[str, ...] = (), keepalive: float = 2) -> subprocess.Popen:
        """keepalive: [wan] keepalive (2 s: a restarted far box is found quickly)."""
        host = self.topo.pep_a if name == "pep-a" else self.topo.pep_b
        cif, sif = ("lan0", "wan0") if name == "pep-a" else ("wan0", "lan0")
        cfg = self.topo.workdir / f"{name}.toml"
        cfg.write_text(BOX_TOML.format(client_if=cif, server_if=sif, keepalive=keepalive) + extra)
        stats = self.stats_path(name)
        if stats.exists():
            stats.unlink()
        log = open(self.log_path(name), "a")
        p = host.popen([sys.executable, "-m", "stackpep", "run", "-c", str(cfg), "--stats-file", str(stats),
                        "--stats-interval", "0.2", *args], stdout=subprocess.PIPE, stderr=log, text=True,
                       env=python_env(), cwd=str(self.topo.workdir))
        line = p.stdout.readline().strip()
        assert line == "READY", (line, self.log_path(name).read_text()[-3000:])
        self.procs[name] = p
        return p

    def log_path(self, name: str) -> Path:
        return self.topo.workdir / f"{name}.log"

    def stats_path(self, name: str) -> Path:
        return self.topo.workdir / f"{name}-stats.json"

    def wait_stats(self, name: str, pred, timeout: float = 20.0) -> dict:
        return wait_stats_file(self.stats_path(name), pred, timeout, what=f"{name}: statistics")

    def kill(self, name: str) -> None:
        """SIGKILL: the box's connection table is gone and it sends nothing more."""
        p = self.procs.pop(name)
        p.kill()
        p.wait()

    def stop(self, name: str) -> Optional[int]:
        p = self.procs.pop(name)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@contextmanager
def testbed(forward: str = "delay=10ms", back: Optional[str] = None,
            seed: int = 1) -> Iterator[Tuple[Topology, "TwoBoxes"]]:
    """The five hosts with the link running (`forward` towards the client, `back`
    the other way: the same unless given) and warmed up, and a `TwoBoxes` whose
    boxes are stopped when the block ends (or earlier by `stop_all()`, for work on
    the captures and logs after them), before the hosts are torn down."""
    with Topology() as topo:
        fwd = DirectionParams.parse(forward)
        topo.start_link(LinkSpec(fwd, DirectionParams.parse(back) if back else fwd, seed=seed))
        topo.warm_up()
        boxes = TwoBoxes(topo)
        try:
            yield topo, boxes
        finally:
            boxes.stop_all()


#: argv[1:] = address, port, connections to serve, bytes each way.  Each connection:
#: the client sends n random bytes, then EOF-less waits; the server answers
#: sha256(what it got) + sha256(its n random bytes) + those bytes, then closes.
SHA_SERVER = r"""
import hashlib, os, socket, sys, threading
addr, port, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
l = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((addr, port)); l.listen(512); print("LISTENING", flush=True)
def one(c):
    try:
        h = hashlib.sha256(); left = n
        while left:
            d = c.recv(min(left, 1 << 20))
            if not d:
                raise EOFError("EOF after %d of %d bytes" % (n - left, n))
            h.update(d); left -= len(d)
        blob = os.urandom(n)
        c.sendall(h.digest() + hashlib.sha256(blob).digest() + blob)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    except Exception as e:
        print("SERVER-ERROR", type(e).__name__, e, flush=True)
    finally:
        c.close()
threads = []
for _ in range(k):
    c, _ = l.accept()
    t = threading.Thread(target=one, args=(c,)); t.start(); threads.append(t)
for t in threads:
    t.join()
print("SERVED", k, flush=True)
"""

#: argv[1:] = address, port, parallel connections, bytes each way.  Prints one
#: line per connection: "OK" (both digests match, n bytes back) or what went wrong
#: ("RESET", "TIMEOUT", "BAD ..."), then "DONE".
SHA_CLIENTS = r"""
import hashlib, os, socket, sys, threading
addr, port, k, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = [None] * k
def one(i):
    try:
        s = socket.create_connection((addr, port), timeout=120)
        data = os.urandom(n)
        s.sendall(data)
        f = s.makefile("rb")
        up, down = f.read(32), f.read(32)
        blob = f.read(n)
        ok = (up == hashlib.sha256(data).digest(), down == hashlib.sha256(blob).digest(), len(blob) == n)
        out[i] = "OK" if all(ok) else "BAD %s %d" % (ok, len(blob))
        s.close()
    except ConnectionResetError:
        out[i] = "RESET"
    except socket.timeout:
        out[i] = "TIMEOUT"
    except Exception as e:
        out[i] = "ERROR %s %s" % (type(e).__name__, e)
threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for r in out:
    print(r)
print("DONE", flush=True)
"""


def serve(host, addr: str, port: int, k: int, n: int) -> subprocess.Popen:
    srv = host.popen([sys.executable, "-c", SHA_SERVER, addr, str(port), str(k), str(n)], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    line = srv.stdout.readline().strip()
    assert line == "LISTENING", (line, srv.stderr.read() if srv.poll() is not None else "")
    return srv


def transfer(host, addr: str, port: int, k: int, n: int, timeout: float = 120) -> list:
    """k parallel sha256-checked transfers of n bytes each way; one result a connection."""
    res = host.run([sys.executable, "-c", SHA_CLIENTS, addr, str(port), str(k), str(n)], timeout=timeout,
                   check=False)
    lines = res.stdout.split("\n")
    assert res.returncode == 0 and "DONE" in lines, res.stderr[-3000:]
    return lines[:lines.index("DONE")]


def capture(host, ifname: str, path: Path, bpf: str = "tcp or ip proto 105 or ip6 proto 105") -> subprocess.Popen:
    """tcpdump of whole frames on ifname (in host's namespace) into path."""
    p = host.popen(["tcpdump", "-i", ifname, "-nn", "-U", "--immediate-mode", "-s", "0", "-w", str(path), bpf],
                   stderr=subprocess.PIPE)
    assert b"listening" in p.stderr.readline()
    return p


def stop_capture(p: subprocess.Popen) -> None:
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=10)


def ip_frames(path: Path) -> Iterator[Tuple[int, bytes]]:
    """(IP protocol / next header, the IP packet) of each IPv4/IPv6 frame of a pcap."""
    import dpkt

    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            if eth.type == dpkt.ethernet.ETH_TYPE_IP:
                yield buf[14 + 9], buf[14:]
            elif eth.type == dpkt.ethernet.ETH_TYPE_IP6:
                yield buf[14 + 6], buf[14:]
