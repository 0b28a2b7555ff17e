"""A client -- box -- server topology with the splitter running in the box
(``stackpep run`` in the middle namespace), for the one-box end-to-end tests
(tests/test_*_netns.py) and benchmarks/splitter.py.  The five-host testbed with
a link emulator is stackpep.testbed.topology.

Addresses (198.18.0.0/15 and fd00::/8 only):
  client  box1 side 198.18.0.2  fd00:1::2      box1  198.18.0.1  fd00:1::1
  server  box2 side 198.18.1.2  fd00:2::2      box2  198.18.1.1  fd00:2::1
The box forwards, so whatever the splitter does not intercept still flows.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Optional

from stackpep.testbed.netns import Network

ROOT = Path(__file__).resolve().parents[2]

CLIENT4, CLIENT6 = "198.18.0.2", "fd00:1::2"
SERVER4, SERVER6 = "198.18.1.2", "fd00:2::2"
BOX_C4, BOX_C6 = "198.18.0.1", "fd00:1::1"
BOX_S4, BOX_S6 = "198.18.1.1", "fd00:2::1"

DEFAULT_TOML = """\
[pep]
log_level = "info"
[interfaces]
client = ["box1"]
server = ["box2"]
[intercept]
prefixes = ["198.18.1.0/24", "fd00:2::/64"]
ports = {ports}
[handshake]
mode = "{mode}"
timeout = {handshake_timeout}
[limits]
idle_timeout = {idle_timeout}
max_connections = {max_connections}
drain_timeout = {drain_timeout}
{more_limits}"""


def pep_toml(ports=(80, 5201, "8000-8099"), mode="after-server", handshake_timeout=3.0, idle_timeout=600.0,
             max_connections=10000, extra: str = "", drain_timeout: float = 0.0, limits=None) -> str:
    # drain_timeout 0: SIGTERM resets at once (tests of the stop itself); see docs/operations.md
    # limits: more [limits] keys (e.g. max_embryonic)
    ports_s = "[" + ", ".join(f'"{p}"' if isinstance(p, str) else str(p) for p in ports) + "]"
    more = "".join(f"{k} = {v}\n" for k, v in (limits or {}).items())
    return DEFAULT_TOML.format(ports=ports_s, mode=mode, handshake_timeout=handshake_timeout,
                               idle_timeout=idle_timeout, max_connections=max_connections,
                               drain_timeout=drain_timeout, more_limits=more) + extra


def wait_stats_file(path, pred, timeout: float = 10.0, what: str = "statistics") -> dict:
    """The `--stats-file` a running box rewrites, once `pred` holds for it."""
    deadline = time.monotonic() + timeout
    st = {}
    while time.monotonic() < deadline:
        try:
            st = json.loads(Path(path).read_text())
            if pred(st):
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} never satisfied the condition: {st}")


def env_with_path() -> dict:
    """Environment for `python -m stackpep ...` in a namespace (the stackpep this process runs)."""
    from stackpep.testbed.topology import python_env

    return python_env()


class SplitterTopology:
    def __init__(self, mtu: int = 1500) -> None:
        self.net = Network()
        self.tmp = Path(tempfile.mkdtemp(prefix="stackpep-split-"))
        self.pep: Optional[subprocess.Popen] = None
        self.pep_log = self.tmp / "pep.log"
        self.stats_file = self.tmp / "stats.json"
        self.control_socket = self.tmp / "control.sock"
        self.mtu = mtu

    def __enter__(self) -> "SplitterTopology":
        try:
            net = self.net
            self.client = net.add_host("client")
            self.box = net.add_host("box", forwarding=True)
            self.server = net.add_host("server")
            net.link(self.client, self.box, [f"{CLIENT4}/24", f"{CLIENT6}/64"], [f"{BOX_C4}/24", f"{BOX_C6}/64"],
                     a_ifname="eth0", b_ifname="box1", mtu=self.mtu)
            net.link(self.box, self.server, [f"{BOX_S4}/24", f"{BOX_S6}/64"], [f"{SERVER4}/24", f"{SERVER6}/64"],
                     a_ifname="box2", b_ifname="eth0", mtu=self.mtu)
            self.client.run(f"ip route add default via {BOX_C4}")
            self.client.run(f"ip -6 route add default via {BOX_C6}")
            self.server.run(f"ip route add default via {BOX_S4}")
            self.server.run(f"ip -6 route add default via {BOX_S6}")
            # Warm ARP/ND both ways (the first IPv6 packet can be late otherwise).
            for a in (SERVER4, SERVER6):
                self.client.run(["ping", "-c", "1", "-W", "2", a], check=False)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.stop_pep(signal.SIGTERM)
        finally:
            self.net.close()
            if not os.environ.get("STACKPEP_KEEP_TMP"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the splitter ----------------------------------------------------------------
    def start_pep(self, toml: Optional[str] = None, stats_interval: float = 0.5, timeout: float = 20.0,
                  args: tuple = ()) -> subprocess.Popen:
        cfg = self.tmp / "pep.toml"
        toml = toml if toml is not None else pep_toml()
        if "[control]" not in toml:  # each run its own control socket (never the shared default)
            toml += f'[control]\nsocket = "{self.control_socket}"\n'
        cfg.write_text(toml)
        if self.stats_file.exists():
            self.stats_file.unlink()
        log = open(self.pep_log, "w")
        from stackpep.testbed.topology import python_command

        argv = python_command("stackpep", "run", "-c", str(cfg), "--stats-file", str(self.stats_file))
        if stats_interval:
            argv += ["--stats-interval", str(stats_interval)]
        argv += list(args)  # e.g. ("--pcap", FILE), ("--workers", "2")
        if "--workers" not in args:
            argv += ["--workers", "1"]  # one process unless a test asks for workers (tests/test_workers_netns.py)
        self.pep = self.box.popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env_with_path(),
                                  cwd=str(self.tmp))
        line = self.pep.stdout.readline().strip()
        if line != "READY":
            self.pep.wait(timeout=5)
            raise RuntimeError(f"splitter did not start: {line!r}\n{self.pep_log.read_text()}")
        return self.pep

    def stop_pep(self, sig=signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
        p = self.pep
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.send_signal(sig)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"splitter did not stop on {sig!r}\n{self.pep_log.read_text()}")

    def stats(self, fresh: bool = True) -> dict:
        """The splitter's counters; fresh=True waits for a file written after this call."""
        since = time.time()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if not fresh or self.stats_file.stat().st_mtime > since:
                    return json.loads(self.stats_file.read_text())
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError("no fresh statistics file")

    def wait_stats(self, pred, timeout: float = 10.0) -> dict:
        return wait_stats_file(self.stats_file, pred, timeout)

    def nft_ruleset(self) -> str:
        return self.box.run(["nft", "list", "ruleset"]).stdout

    # -- servers ---------------------------------------------------------------------
    def start_nginx(self, port: int = 80) -> Path:
        """nginx listening on the server's v4 and v6 address; returns the access log path."""
        d = self.tmp / "nginx"
        (d / "html").mkdir(parents=True, exist_ok=True)
        (d / "logs").mkdir(exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(textwrap.dedent(f"""
            user root;
            worker_processes 1;
            pid {d}/nginx.pid;
            error_log {d}/logs/error.log;
            events {{ worker_connections 256; }}
            http {{
                log_format peer '$remote_addr $remote_port $server_addr $status $body_bytes_sent';
                access_log {d}/logs/access.log peer;
                client_body_temp_path {d}/body;
                proxy_temp_path {d}/proxy;
                fastcgi_temp_path {d}/fastcgi;
                uwsgi_temp_path {d}/uwsgi;
                scgi_temp_path {d}/scgi;
                server {{
                    listen {SERVER4}:{port};
                    listen [{SERVER6}]:{port};
                    root {d}/html;
                }}
            }}
        """))
        self.server.popen(["nginx", "-c", str(conf), "-p", str(d), "-g", "daemon off;"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.server.run(["ss", "-ltnH", f"sport = :{port}"], check=False).stdout.count("LISTEN") >= 2:
                break
            time.sleep(0.05)
        return d
