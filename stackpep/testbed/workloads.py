"""Traffic for the testbed: sha256-verified bulk transfers (`bulk` below, our own
sender and receiver), object fetches (curl against a real HTTP server), 100
parallel connections and a web-like page load.

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
BULK_PORT = 5202
_CHUNK = 65536


def stream_chunk(seed: int, index: int) -> bytes:
    """Chunk `index` of the bulk stream of `seed`: pseudo-random and never repeating,
    so a PEP that drops, duplicates or reorders any run of bytes changes the hash."""
    return random.Random(seed * 1_000_003 + index).randbytes(_CHUNK)


def stream_sha256(seed: int, nbytes: int) -> str:
    """sha256 of the first `nbytes` of the bulk stream of `seed` (for tests)."""
    h = hashlib.sha256()
    i = 0
    while nbytes > 0:
        c = stream_chunk(seed, i)[:nbytes]
        h.update(c)
        nbytes -= len(c)
        i += 1
    return h.hexdigest()


def send_stream(sock, seconds: float, seed: int, clock=time.monotonic) -> Dict:
    """Send the stream of `seed` for `seconds`, then FIN; wait for the peer's FIN.
    Returns the count and sha256 of every byte handed to the socket."""
    h = hashlib.sha256()
    sent = 0
    i = 0
    end = clock() + seconds
    while clock() < end:
        c = stream_chunk(seed, i)
        sock.sendall(c)
        h.update(c)
        sent += len(c)
        i += 1
    import socket as _s

    sock.shutdown(_s.SHUT_WR)
    while sock.recv(65536):  # the receiver closes once it has read our FIN
        pass
    return {"role": "sender", "bytes": sent, "sha256": h.hexdigest()}


def receive_stream(sock, clock=time.monotonic) -> Dict:
    """Read to EOF, hashing; per-second goodput series from the first byte."""
    h = hashlib.sha256()
    got = 0
    t0 = clock()
    first = last = None
    series: List[List[float]] = []
    mark, mark_bytes = None, 0
    while True:
        data = sock.recv(262144)
        now = clock()
        if not data:
            break
        if first is None:
            first = mark = now
        while now - mark >= 1.0:  # close the intervals that ended before this read
            mark += 1.0
            series.append([round(mark - first, 3), round((got - mark_bytes) * 8 / 1.0, 1)])
            mark_bytes = got
        h.update(data)
        got += len(data)
        last = now
    if first is not None and last - mark >= 0.2:  # a last partial interval, if not a sliver
        series.append([round(last - first, 3), round((got - mark_bytes) * 8 / (last - mark), 1)])
    return {"role": "receiver", "bytes": got, "sha256": h.hexdigest(),
            "first_byte_s": None if first is None else round(first - t0, 4),
            "transfer_s": None if first is None else round(last - first, 4), "series": series}


def _bulk_main(args) -> int:
    import socket

    if args.listen is not None:
        ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.bind(("::", args.listen))
        ls.listen(1)
        print("LISTENING", flush=True)
        ls.settimeout(args.timeout)
        sock, _ = ls.accept()
        ls.close()
    else:
        sock = socket.create_connection((args.connect, args.port), timeout=args.timeout)
    sock.settimeout(args.timeout)
    if args.send is not None:
        out = send_stream(sock, args.send, args.seed)
    else:
        out = receive_stream(sock)
    sock.close()
    print(json.dumps(out), flush=True)
    return 0


def bulk(topo, direction: str = "download", seconds: float = 20.0, family: int = 4, seed: int = 1) -> Dict:
    """A `seconds`-long transfer of a seeded pseudo-random stream, server to client
    (download) or client to server (upload), by `python -m stackpep.testbed.workloads
    bulk` at both ends.  The receiver's bytes must hash (sha256) to what the sender
    sent, or the result is an error.  Goodput = received bytes / (last byte - first
    byte) at the receiver: the time to the first byte is reported beside it
    (`first_byte_s`), and the tail (the last losses repaired) is counted."""
    from stackpep.testbed.topology import python_command, python_env

    sender_host, receiver_host = (topo.server, topo.client) if direction == "download" else (topo.client, topo.server)
    tmo = str(seconds + 90)
    role = ["--send", f"{seconds:g}", "--seed", str(seed)]
    srv_argv = python_command("stackpep.testbed.workloads", "bulk", "--listen", str(BULK_PORT), "--timeout", tmo,
                              *(role if direction == "download" else []))
    srv = topo.server.popen(srv_argv, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: Dict = {"workload": f"bulk-{direction}", "seconds": seconds, "family": family}
    try:
        _wait_listening(topo.server, BULK_PORT)
        cli_argv = python_command("stackpep.testbed.workloads", "bulk", "--connect", _target(family),
                                  "--port", str(BULK_PORT), "--timeout", tmo,
                                  *(role if direction == "upload" else []))
        t0 = time.monotonic()
        res = topo.client.run(cli_argv, check=False, timeout=seconds + 120, env=python_env())
        out["wall_s"] = round(time.monotonic() - t0, 2)
        try:
            srv_out, srv_err = srv.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv_out, srv_err = srv.communicate()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    ends = {}
    for text, err, rc in ((res.stdout, res.stderr, res.returncode), (srv_out, srv_err, srv.returncode)):
        line = [l for l in (text or "").splitlines() if l.startswith("{")]
        if rc != 0 or not line:
            out["error"] = f"bulk end exited {rc}: {(err or text or '').strip()[-300:]}"
            return out
        d = json.loads(line[-1])
        ends[d["role"]] = d
    snd, rcv = ends.get("sender"), ends.get("receiver")
    return bulk_result(out, snd, rcv)


def bulk_result(out: Dict, snd: Dict, rcv: Dict) -> Dict:
    """The workload result from the two ends' reports; a hash or count mismatch is an error."""
    out.update({"bytes": rcv["bytes"], "sent_bytes": snd["bytes"], "sha256": rcv["sha256"],
                "sha256_ok": rcv["sha256"] == snd["sha256"] and rcv["bytes"] == snd["bytes"],
                "first_byte_s": rcv["first_byte_s"], "transfer_s": rcv["transfer_s"], "series": rcv["series"]})
    if not out["sha256_ok"]:
        out["error"] = (f"sha256 mismatch: received {rcv['bytes']} bytes {rcv['sha256'][:16]}…, "
                        f"sent {snd['bytes']} bytes {snd['sha256'][:16]}…")
        out["goodput_bps"] = 0.0
        return out
    out["goodput_bps"] = rcv["bytes"] * 8 / rcv["transfer_s"] if rcv["transfer_s"] else 0.0
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
    b = sub.add_parser("bulk", help="one end of a sha256-verified bulk transfer (prints JSON)")
    g = b.add_mutually_exclusive_group(required=True)
    g.add_argument("--listen", type=int, metavar="PORT", help="accept one connection on [::]:PORT")
    g.add_argument("--connect", metavar="HOST", help="connect to HOST --port")
    b.add_argument("--port", type=int, default=BULK_PORT)
    b.add_argument("--send", type=float, metavar="SECONDS", help="send for this long (else receive to EOF)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--timeout", type=float, default=120.0, help="socket timeout, seconds")
    args = ap.parse_args(argv)
    if args.cmd == "bulk":
        return _bulk_main(args)
    if args.cmd == "serve-http":
        serve_http(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
