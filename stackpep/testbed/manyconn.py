"""Many TCP connections at once, for benchmarks/connections.py and
tests/test_connections_netns.py: a server that answers each connection's
8-byte request with an object of ``--size`` bytes, and a client that opens
``--count`` connections from several source addresses, keeps them idle, then
fetches the object on all of them at once, then closes them all.

The client runs in phases, each started by a line on its standard input
(``fetch``, ``close``) and reported by one JSON line on its standard output,
so the caller can measure the box between them:

    {"phase": "open", "ok": N, "failed": F, "seconds": S, "errors": {...}}
    {"phase": "fetch", "ok": N, "failed": F, "seconds": S, "errors": {...}}
    {"phase": "close", "ok": N, "failed": F, "seconds": S, "errors": {...}}

Every fetched object is checked byte for byte (its first 8 bytes are the
connection's index, the rest a fixed pseudo-random pattern), so a mixed-up or
damaged relay is a failure, not a slow fetch.

    python -m stackpep.testbed.manyconn server --bind 198.18.1.2 --port 8000 [--size 102400]
    python -m stackpep.testbed.manyconn client --dst 198.18.1.2 --port 8000 --count 1000 \
        --src 198.18.0.100,198.18.0.101 [--size 102400] [--concurrency 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from collections import Counter
from typing import List, Optional, Tuple

REQUEST = 8


def pattern(size: int) -> bytes:
    return random.Random(1).randbytes(max(0, size - REQUEST))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20
    for lim in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (lim, max(lim, hard)))
            return
        except (ValueError, OSError):
            continue


async def serve(bind: str, port: int, size: int) -> None:
    body = pattern(size)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await reader.readexactly(REQUEST)
            writer.write(req + body)
            await writer.drain()
            await reader.read()  # until the client closes
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, bind, port, backlog=65535, reuse_address=True)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def _err(exc: BaseException) -> str:
    return type(exc).__name__ if not isinstance(exc, OSError) or exc.errno is None else f"errno{exc.errno}"


async def client(dst: str, port: int, count: int, sources: List[str], size: int, concurrency: int,
                 timeout: float) -> None:
    body = pattern(size)
    loop = asyncio.get_running_loop()
    conns: List[Optional[Tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = [None] * count
    sem = asyncio.Semaphore(concurrency)

    def report(phase: str, ok: int, errors: Counter, t0: float) -> None:
        print(json.dumps({"phase": phase, "ok": ok, "failed": sum(errors.values()), "seconds": time.monotonic() - t0,
                          "errors": dict(errors)}), flush=True)

    # -- open ------------------------------------------------------------------------
    errors: Counter = Counter()

    async def open_one(i: int) -> None:
        async with sem:
            try:
                conns[i] = await asyncio.wait_for(
                    asyncio.open_connection(dst, port, local_addr=(sources[i % len(sources)], 0)), timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                errors[_err(exc)] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(open_one(i) for i in range(count)))
    report("open", sum(1 for c in conns if c is not None), errors, t0)

    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def wait_for(word: str) -> None:
        while True:
            line = await stdin.readline()
            if not line or line.strip().decode() == word:
                return

    # -- fetch -----------------------------------------------------------------------
    await wait_for("fetch")
    errors = Counter()

    async def fetch(i: int) -> bool:
        c = conns[i]
        if c is None:
            return False
        reader, writer = c
        head = i.to_bytes(REQUEST, "big")
        try:
            writer.write(head)
            data = await asyncio.wait_for(reader.readexactly(size), timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            errors[_err(exc)] += 1
            return False
        if data[:REQUEST] != head or data[REQUEST:] != body:
            errors["corrupt"] += 1
            return False
        return True

    t0 = time.monotonic()
    done = await asyncio.gather(*(fetch(i) for i in range(count)))
    report("fetch", sum(done), errors, t0)

    # -- close -----------------------------------------------------------------------
    await wait_for("close")
    errors = Counter()

    async def close(i: int) -> bool:
        c = conns[i]
        if c is None:
            return False
        reader, writer = c
        try:
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), timeout)  # the server's FIN
            if rest:
                errors["data_after_object"] += 1
                return False
            return True
        except (OSError, asyncio.TimeoutError) as exc:
            errors[_err(exc)] += 1
            return False
        finally:
            writer.close()

    t0 = time.monotonic()
    done = await asyncio.gather(*(close(i) for i in range(count)))
    report("close", sum(done), errors, t0)


# -- driving it from a topology (benchmarks/connections.py, tests/test_connections_netns.py) --------------

def source_addresses(family: int, n: int) -> List[str]:
    """n client addresses of the one-box topology's client subnet (198.18.0.0/24, fd00:1::/64)."""
    return [f"198.18.0.{100 + i}" for i in range(n)] if family == 4 else [f"fd00:1::{100 + i:x}" for i in range(n)]


def prepare(topo, family: int, n_sources: int) -> List[str]:
    """Source addresses on the client, and room for many connections: the whole
    ephemeral port range on the client, deep accept queues on the server."""
    srcs = source_addresses(family, n_sources)
    for a in srcs:
        topo.client.run(f"ip addr add {a}/24 dev eth0" if family == 4 else f"ip addr add {a}/64 dev eth0 nodad")
    topo.client.sysctl("net.ipv4.ip_local_port_range", "1024 65535")
    for h in (topo.client, topo.server):
        h.sysctl("net.core.somaxconn", 65535)
        h.sysctl("net.ipv4.tcp_max_syn_backlog", 65535)
    return srcs


def start_server(host, bind: str, port: int, size: int):
    import subprocess

    from stackpep.testbed.topology import python_command, python_env

    srv = host.popen(python_command("stackpep.testbed.manyconn", "server", "--bind", bind, "--port", str(port),
                                    "--size", str(size)), stdout=subprocess.PIPE, text=True, env=python_env())
    line = srv.stdout.readline().strip()
    if line != "READY":
        srv.kill()
        raise RuntimeError(f"manyconn server did not start: {line!r}")
    return srv


class ClientRun:
    """The client in its namespace; `phase()` reads the open report, `phase("fetch")`
    and `phase("close")` start the next phase and return its report."""

    def __init__(self, host, dst: str, port: int, count: int, sources: List[str], size: int,
                 concurrency: int = 200, timeout: float = 60.0) -> None:
        import subprocess

        from stackpep.testbed.topology import python_command, python_env

        self.proc = host.popen(python_command("stackpep.testbed.manyconn", "client", "--dst", dst, "--port", str(port),
                                              "--count", str(count), "--src", ",".join(sources), "--size", str(size),
                                              "--concurrency", str(concurrency), "--timeout", str(timeout)),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=python_env())

    def phase(self, word: str = "") -> dict:
        if word:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"manyconn client ended before phase {word or 'open'}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--size", type=int, default=100 * 1024)
    c = sub.add_parser("client")
    c.add_argument("--dst", required=True)
    c.add_argument("--port", type=int, default=8000)
    c.add_argument("--count", type=int, default=1000)
    c.add_argument("--src", required=True, help="comma-separated source addresses (round robin)")
    c.add_argument("--size", type=int, default=100 * 1024)
    c.add_argument("--concurrency", type=int, default=200, help="connects in progress at once")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds for one connect / fetch / close")
    a = ap.parse_args(argv)
    raise_nofile()
    if a.cmd == "server":
        asyncio.run(serve(a.bind, a.port, a.size))
    else:
        asyncio.run(client(a.dst, a.port, a.count, a.src.split(","), a.size, a.concurrency, a.timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
