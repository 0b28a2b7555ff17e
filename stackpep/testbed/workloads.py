"""Traffic for the testbed: bulk transfers (iperf3), object fetches (curl against
a real HTTP server), 100 parallel connections and a web-like page load.

Each workload runs its client in the client namespace against servers in the
server namespace and returns a plain dict of what it measured.  The HTTP server
is `python -m stackpep.testbed.workloads serve-http`: HTTP/1.1 with keep-alive,
a 1024-connection accept backlog (http.server's default of 5 would turn 100
parallel SYNs into retransmissions) and `/obj/N` answering N bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Sequence

HTTP_PORT = 8080
IPERF_PORT = 5201
_PATTERN = hashlib.sha256(b"stackpep").digest() * 2048  # 64 KiB of fixed bytes


# -- the HTTP server ---------------------------------------------------------------
class ObjectHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server API
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "obj" or not parts[1].isdigit():
            self.send_error(404)
            return
        size = int(parts[1])
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        left = size
        while left > 0:
            n = min(left, len(_PATTERN))
            self.wfile.write(_PATTERN[:n])
            left -= n

    def log_message(self, *args):
        pass


class ObjectServer(ThreadingHTTPServer):
    address_family = __import__("socket").AF_INET6
    request_queue_size = 1024
    daemon_threads = True

    def server_bind(self):
        import socket

        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6
        super().server_bind()


def serve_http(port: int = HTTP_PORT) -> None:
    ObjectServer(("::", port), ObjectHandler).serve_forever()


def object_sha256(size: int) -> str:
    h = hashlib.sha256()
    left = size
    while left > 0:
        n = min(left, len(_PATTERN))
        h.update(_PATTERN[:n])
        left -= n
    return h.hexdigest()


# -- starting servers in the topology ---------------------------------------------
def start_http_server(topo) -> None:
    from stackpep.testbed.topology import python_command, python_env

    topo.server.popen(python_command("stackpep.testbed.workloads", "serve-http", "--port", str(HTTP_PORT)),
                      env=python_env(), cwd=str(topo.workdir))
    _wait_listening(topo.server, HTTP_PORT)


def _wait_listening(host, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        res = host.run(["ss", "-Hltn", f"sport = :{port}"], check=False)
        if res.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {host.name}")


def _target(family: int) -> str:
    from stackpep.testbed.topology import SERVER4, SERVER6

    return SERVER6 if family == 6 else SERVER4


def _url(family: int, size: int) -> str:
    host = _target(family)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{HTTP_PORT}/obj/{size}"


# -- bulk transfer -----------------------------------------------------------------
def bulk(topo, direction: str = "download", seconds: float = 20.0, family: int = 4) -> Dict:
    """iperf3 for `seconds`; goodput from the receiver's count, per-second series."""
    srv = topo.server.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT)])
    try:
        _wait_listening(topo.server, IPERF_PORT)
        argv = ["iperf3", "-c", _target(family), "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
                "-i", "1", "--connect-timeout", "15000"]
        if direction == "download":
            argv.append("-R")
        else:
            argv.append("--get-server-output")
        t0 = time.monotonic()
        res = topo.client.run(argv, check=False, timeout=seconds + 90)
        wall = time.monotonic() - t0
    finally:
        if srv.poll() is None:
            srv.terminate()
            try:
                srv.wait(timeout=3)
            except subprocess.TimeoutExpired:
                srv.kill()
    out: Dict = {"workload": f"bulk-{direction}", "seconds": seconds, "family": family, "wall_s": round(wall, 2)}
    try:
        j = json.loads(res.stdout)
    except ValueError:
        out["error"] = (res.stderr or res.stdout).strip()[-300:] or f"iperf3 exited {res.returncode}"
        return out
    if "error" in j:
        out["error"] = j["error"]
        return out
    end = j.get("end", {})
    recv = end.get("sum_received", {})
    out["bytes"] = int(recv.get("bytes", 0))
    out["goodput_bps"] = float(recv.get("bits_per_second", 0.0))
    out["retransmits"] = end.get("sum_sent", {}).get("retransmits")
    if direction == "download":
        intervals = j.get("intervals", [])
    else:
        intervals = (j.get("server_output_json") or {}).get("intervals", [])
    out["series"] = [[round(iv["sum"]["end"], 3), round(iv["sum"]["bits_per_second"], 1)] for iv in intervals]
    return out


# -- object fetches ------------------------------------------------------------------
CURL_W = "%{http_code} %{size_download} %{time_total} %{time_connect} %{time_starttransfer}\\n"


def _curl_lines(stdout: str) -> List[Dict]:
    rows = []
    for line in stdout.splitlines():
        f = line.split()
        if len(f) == 5:
            rows.append({"code": int(f[0]), "size": int(float(f[1])), "time": float(f[2]),
                         "connect": float(f[3]), "first_byte": float(f[4])})
    return rows


def fetch(topo, size: int, count: int = 5, family: int = 4, max_time: float = 120.0) -> Dict:
    """`count` fetches of one object, each with a new curl and a new connection."""
    times: List[float] = []
    firsts: List[float] = []
    incomplete = 0
    errors: List[str] = []
    for _ in range(count):
        res = topo.client.run(["curl", "-s", "-o", "/dev/null", "--max-time", f"{max_time:g}", "-w", CURL_W,
                               _url(family, size)], check=False, timeout=max_time + 10)
        rows = _curl_lines(res.stdout)
        if res.returncode != 0 or not rows or rows[0]["code"] != 200 or rows[0]["size"] != size:
            incomplete += 1
            errors.append(f"curl exit {res.returncode}: {rows[0] if rows else res.stderr.strip()[-100:]}")
            continue
        times.append(rows[0]["time"])
        firsts.append(rows[0]["first_byte"])
    return {
        "workload": f"fetch-{size_label(size)}", "size": size, "count": count, "family": family,
        "times_s": times, "first_byte_s": firsts, "complete": len(times), "incomplete": incomplete,
        "median_s": statistics.median(times) if times else None, "errors": errors[:5],
    }


def parallel(topo, connections: int = 100, size: int = 100_000, family: int = 4, max_time: float = 180.0) -> Dict:
    """`connections` simultaneous fetches, one connection each (curl --parallel)."""
    argv = ["curl", "-s", "-Z", "--parallel-max", str(connections), "--parallel-immediate",
            "--max-time", f"{max_time:g}", "-w", CURL_W]
    for _ in range(connections):
        argv += ["-o", "/dev/null", _url(family, size)]
    t0 = time.monotonic()
    res = topo.client.run(argv, check=False, timeout=max_time + 20)
    wall = time.monotonic() - t0
    rows = _curl_lines(res.stdout)
    ok = [r for r in rows if r["code"] == 200 and r["size"] == size]
    times = [r["time"] for r in ok]
    return {
        "workload": f"parallel-{connections}", "connections": connections, "size": size, "family": family,
        "complete": len(ok), "incomplete": connections - len(ok), "times_s": times,
        "total_s": round(max(times), 4) if len(ok) == connections else None, "wall_s": round(wall, 3),
        "median_s": statistics.median(times) if times else None,
        "goodput_bps": (len(ok) * size * 8 / max(times)) if times else 0.0,
    }


def web_page(seed: int = 1, objects: int = 24) -> List[int]:
    """Object sizes of a web-like page: a 30 KB document, then log-normal objects
    (median ~15 KB, capped at 1 MB), fixed by the seed."""
    rng = random.Random(seed)
    return [30_000] + [int(min(1_000_000, max(500, rng.lognormvariate(9.6, 1.2)))) for _ in range(objects)]


def web_mix(topo, seed: int = 1, loads: int = 3, family: int = 4, max_time: float = 180.0) -> Dict:
    """Page loads: the document, then its objects over at most 6 keep-alive connections."""
    sizes = web_page(seed)
    load_times: List[float] = []
    incomplete = 0
    for _ in range(loads):
        t0 = time.monotonic()
        res = topo.client.run(["curl", "-s", "-o", "/dev/null", "--max-time", f"{max_time:g}", "-w", CURL_W,
                               _url(family, sizes[0])], check=False, timeout=max_time + 10)
        rows = _curl_lines(res.stdout)
        argv = ["curl", "-s", "-Z", "--parallel-max", "6", "--max-time", f"{max_time:g}", "-w", CURL_W]
        for s in sizes[1:]:
            argv += ["-o", "/dev/null", _url(family, s)]
        res2 = topo.client.run(argv, check=False, timeout=max_time + 20)
        load = time.monotonic() - t0
        rows += _curl_lines(res2.stdout)
        good = sorted(r["size"] for r in rows if r["code"] == 200)
        if good != sorted(sizes):
            incomplete += 1
            continue
        load_times.append(load)
    return {
        "workload": "web-mix", "objects": len(sizes), "page_bytes": sum(sizes), "loads": loads,
        "family": family, "times_s": load_times, "complete": len(load_times), "incomplete": incomplete,
        "median_s": statistics.median(load_times) if load_times else None,
    }


def size_label(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}MB"
    if size % 1000 == 0:
        return f"{size // 1000}KB"
    return f"{size}B"


# -- workload descriptions used by scenarios -------------------------------------------
@dataclass(frozen=True)
class Workload:
    """A named workload with its parameters; `run(topo)` returns its measurements."""

    kind: str  # bulk-download | bulk-upload | fetch | parallel | web-mix
    seconds: float = 20.0
    size: int = 100_000
    count: int = 5
    family: int = 4

    @property
    def name(self) -> str:
        if self.kind == "fetch":
            return f"fetch-{size_label(self.size)}"
        if self.kind == "parallel":
            return f"parallel-{self.count}"
        return self.kind

    def run(self, topo) -> Dict:
        if self.kind == "bulk-download":
            return bulk(topo, "download", self.seconds, self.family)
        if self.kind == "bulk-upload":
            return bulk(topo, "upload", self.seconds, self.family)
        if self.kind == "fetch":
            return fetch(topo, self.size, self.count, self.family)
        if self.kind == "parallel":
            return parallel(topo, self.count, self.size, self.family)
        if self.kind == "web-mix":
            return web_mix(topo, loads=self.count, family=self.family)
        raise ValueError(f"unknown workload {self.kind!r}")

    def estimate_s(self, rtt_s: float) -> float:
        """Rough run time, for progress."""
        if self.kind.startswith("bulk"):
            return self.seconds + 6 * rtt_s + 1
        return self.count * (8 * rtt_s + 0.3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stackpep.testbed.workloads")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve-http", help="serve /obj/N (N bytes) on [::]:PORT")
    p.add_argument("--port", type=int, default=HTTP_PORT)
    args = ap.parse_args(argv)
    if args.cmd == "serve-http":
        serve_http(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
