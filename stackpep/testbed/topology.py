"""The five-host testbed: client — pep-a — link — pep-b — server.

    client ─cl0── lan0─ pep-a ─wan0── la─ link ─lb ──wan0─ pep-b ─lan0── sv0─ server
      198.18.1.2  .1.1       .2.1     (emulator,        .2.2       .3.1    198.18.3.2
      fd00:5e:1::2                    no addresses)                         fd00:5e:3::2

pep-a and pep-b share one L2 segment (198.18.2.0/24, fd00:5e:2::/64) through the
link host, whose emulator relays frames between `la` and `lb`; ARP and ND cross the
emulated link like everything else.  The PEP hosts forward with the kernel unless a
PEP is started in them.  Offloads (GRO/TSO/GSO, checksum) are off on every veth so
that frames on the wire are real MTU-sized frames with real checksums.
"""
from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import signal
import site
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import stackpep
from stackpep.testbed.emulator import DirectionParams, Outage
from stackpep.testbed.netns import Host, Network

CLIENT4, PEP_A_LAN4 = "198.18.1.2", "198.18.1.1"
PEP_A_WAN4, PEP_B_WAN4 = "198.18.2.1", "198.18.2.2"
PEP_B_LAN4, SERVER4 = "198.18.3.1", "198.18.3.2"
CLIENT6, PEP_A_LAN6 = "fd00:5e:1::2", "fd00:5e:1::1"
PEP_A_WAN6, PEP_B_WAN6 = "fd00:5e:2::1", "fd00:5e:2::2"
PEP_B_LAN6, SERVER6 = "fd00:5e:3::1", "fd00:5e:3::2"
CLIENT_NET4, SERVER_NET4 = "198.18.1.0/24", "198.18.3.0/24"
CLIENT_NET6, SERVER_NET6 = "fd00:5e:1::/64", "fd00:5e:3::/64"
MTU = 1500
END_HOST_TCP_BUFFER = 32 << 20  # tcp_rmem/tcp_wmem maximum on client and server
HOSTS = ("client", "pep-a", "link", "pep-b", "server")


@dataclass
class LinkSpec:
    """What the emulated link does: forward = towards the client (download)."""

    forward: DirectionParams = field(default_factory=DirectionParams)
    ret: DirectionParams = field(default_factory=DirectionParams)
    outages: List[Outage] = field(default_factory=list)
    seed: int = 1

    def argv(self) -> List[str]:
        out = ["--forward", self.forward.spec(), "--return", self.ret.spec(), "--seed", str(self.seed)]
        for o in self.outages:
            out += ["--outage", o.spec()]
        return out

    def rtt_ms(self) -> float:
        return self.forward.delay_ms + self.ret.delay_ms


def python_command(module: str, *args: str) -> List[str]:
    """argv that runs `python -m module args` with this interpreter, importing the
    stackpep this process runs whatever the child's working directory.

    `python -m` puts the working directory first on sys.path, and a clone's root
    holds a `stackpep/` without compiled modules after `pip install .`.  `-P`
    (Python >= 3.11, like PYTHONSAFEPATH in python_env()) stops that; older
    interpreters rely on the neutral working directory that Host.run/popen give.
    """
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *safe, "-m", module, *args]


def _has_compiled_modules(root: Path) -> bool:
    fast = root / "stackpep" / "_fast"
    return any((fast / f"capture{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def python_env() -> Dict[str, str]:
    """Environment for our own Python processes (python_command()) in namespaces.

    PYTHONSAFEPATH keeps the working directory off sys.path (Python >= 3.11); the
    relative entries of an inherited PYTHONPATH are made absolute, so they mean in
    the child what they meant here.  The folder this process imported stackpep
    from is added only if the child would not find it by itself (an in-place
    build), and only if it holds the compiled modules: a bare source tree never
    goes on a child's path.
    """
    env = dict(os.environ)
    paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    root = Path(stackpep.__file__).resolve().parents[1]
    site_dirs = {str(Path(d).resolve()) for d in [*getattr(site, "getsitepackages", list)(),
                                                  site.getusersitepackages()]}
    if str(root) not in site_dirs and str(root) not in paths and _has_compiled_modules(root):
        paths.insert(0, str(root))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["PYTHONSAFEPATH"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def log_tail(path: Path, lines: int = 20) -> List[str]:
    """The last `lines` lines of a log file ([] if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def set_offloads(host: Host, ifname: str, on: bool = False) -> None:
    state = "on" if on else "off"
    host.run(["ethtool", "-K", ifname, "gro", state, "gso", state, "tso", state, "tx", state, "rx", state],
             check=False)


def _cpu_seconds(pid: int) -> Optional[float]:
    """User + system CPU time of a running process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class Topology:
    """Builds the five hosts; `with Topology() as topo:` always tears them down."""

    def __init__(self, prefix: Optional[str] = None, workdir: Optional[str] = None, link_backend: str = "builtin",
                 tcp_buffer_max: Optional[int] = END_HOST_TCP_BUFFER):
        if link_backend not in ("builtin", "netem"):
            raise ValueError(f"unknown link backend {link_backend!r} (builtin or netem)")
        self.link_backend = link_backend
        self.tcp_buffer_max = tcp_buffer_max
        self.net = Network(prefix)
        self.prefix = self.net.prefix
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.emulator = None
        self.link_spec: Optional[LinkSpec] = None
        self._emu_stats = self.workdir / "emulator-stats.json"
        self.congestion: Optional[str] = None
        self.rx_threads: Dict[str, List[int]] = {}  # host role -> its interfaces' NAPI threads (thread_receive)

    # -- hosts --------------------------------------------------------------
    @property
    def client(self) -> Host:
        return self.net.hosts["client"]

    @property
    def pep_a(self) -> Host:
        return self.net.hosts["pep-a"]

    @property
    def link(self) -> Host:
        return self.net.hosts["link"]

    @property
    def pep_b(self) -> Host:
        return self.net.hosts["pep-b"]

    @property
    def server(self) -> Host:
        return self.net.hosts["server"]

    # -- building -------------------------------------------------------------
    def build(self) -> "Topology":
        net = self.net
        client = net.add_host("client")
        pep_a = net.add_host("pep-a", forwarding=True)
        link = net.add_host("link")
        pep_b = net.add_host("pep-b", forwarding=True)
        server = net.add_host("server")
        link.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        link.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        net.link(client, pep_a, [f"{CLIENT4}/24", f"{CLIENT6}/64"], [f"{PEP_A_LAN4}/24", f"{PEP_A_LAN6}/64"],
                 a_ifname="cl0", b_ifname="lan0", mtu=MTU)
        net.link(pep_a, link, [f"{PEP_A_WAN4}/24", f"{PEP_A_WAN6}/64"], [], a_ifname="wan0", b_ifname="la", mtu=MTU)
        net.link(link, pep_b, [], [f"{PEP_B_WAN4}/24", f"{PEP_B_WAN6}/64"], a_ifname="lb", b_ifname="wan0", mtu=MTU)
        net.link(pep_b, server, [f"{PEP_B_LAN4}/24", f"{PEP_B_LAN6}/64"], [f"{SERVER4}/24", f"{SERVER6}/64"],
                 a_ifname="lan0", b_ifname="sv0", mtu=MTU)
        for host, ifname in self.interfaces():
            set_offloads(host, ifname, on=False)
        pep_a.run(["ip", "route", "add", SERVER_NET4, "via", PEP_B_WAN4])
        pep_a.run(["ip", "-6", "route", "add", SERVER_NET6, "via", PEP_B_WAN6])
        pep_b.run(["ip", "route", "add", CLIENT_NET4, "via", PEP_A_WAN4])
        pep_b.run(["ip", "-6", "route", "add", CLIENT_NET6, "via", PEP_A_WAN6])
        if self.tcp_buffer_max:
            # Long fat link: let TCP, not the default 4 MB send-buffer cap, set the
            # window (BDP at 50 Mbit/s x 600 ms is 3.75 MB, plus the queue).
            for host in (client, server):
                host.sysctl("net.ipv4.tcp_rmem", f"4096 131072 {self.tcp_buffer_max}")
                host.sysctl("net.ipv4.tcp_wmem", f"4096 16384 {self.tcp_buffer_max}")
        self.set_congestion(None)
        return self

    def interfaces(self) -> List[tuple]:
        """Every veth end: (host, ifname)."""
        return [(self.net.hosts[h], i) for h, ifs in (("client", ["cl0"]), ("pep-a", ["lan0", "wan0"]),
                                                       ("link", ["la", "lb"]), ("pep-b", ["wan0", "lan0"]),
                                                       ("server", ["sv0"])) for i in ifs]

    def thread_receive(self) -> Dict[str, List[int]]:
        """Every host's receive path in its own interfaces' kernel threads
        (stackpep.testbed.rxthreads): host role -> thread pids, also kept in
        `rx_threads`.  Without it, veth runs a receiver's stack in its sender's
        context and charges it to the sender."""
        from stackpep.testbed.rxthreads import thread_all

        self.rx_threads = thread_all(self.interfaces())
        return self.rx_threads

    def set_congestion(self, algo: Optional[str]) -> None:
        """Congestion control of the end hosts' TCP, per route (RFC-independent:
        Linux RTAX_CC_ALGO; `sysctl net.ipv4.tcp_congestion_control` cannot be set
        inside a namespace here).  None = the kernel default."""
        extra = ["congctl", algo] if algo else []
        for host, gw4, gw6 in ((self.client, PEP_A_LAN4, PEP_A_LAN6), (self.server, PEP_B_LAN4, PEP_B_LAN6)):
            host.run(["ip", "route", "replace", "default", "via", gw4, *extra])
            host.run(["ip", "-6", "route", "replace", "default", "via", gw6, *extra])
        self.congestion = algo

    # -- the emulated link -------------------------------------------------------
    def start_link(self, spec: LinkSpec, timeout: float = 30.0) -> None:
        """(Re)start the emulator with fresh counters; outages count from now."""
        if self.link_backend == "netem":
            self._start_netem(spec)
            return
        self.stop_link()
        ready = self.workdir / "emulator.ready"
        if ready.exists():
            ready.unlink()
        if self._emu_stats.exists():
            self._emu_stats.unlink()
        argv = python_command("stackpep.testbed.emulator", "--if-a", "la", "--if-b", "lb",
                              *spec.argv(), "--stats", str(self._emu_stats), "--ready", str(ready))
        self._emu_log = open(self.workdir / "emulator.log", "ab")
        self.emulator = self.link.popen(argv, env=python_env(), stderr=self._emu_log, cwd=str(self.workdir))
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.emulator.poll() is not None:
                raise RuntimeError(f"link emulator exited with {self.emulator.returncode}; "
                                   f"see {self.workdir / 'emulator.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError("link emulator did not start")
            time.sleep(0.02)
        self.link_spec = spec

    def _start_netem(self, spec: LinkSpec) -> None:
        """The kernel's netem instead of our emulator: a bridge between la and lb,
        netem on each egress (la egress = forward, towards the client)."""
        from stackpep.testbed.emulator import netem_args, netem_available

        if not netem_available():
            raise RuntimeError("this kernel has no netem qdisc: use the built-in link emulator")
        if spec.outages or spec.forward.ber or spec.ret.ber:
            raise RuntimeError("netem cannot emulate outages or bit errors: use the built-in link emulator")
        link = self.link
        if "br0" not in link.run("ip -o link show", check=False).stdout:
            link.run("ip link add br0 type bridge")
            link.run("ip link set la master br0")
            link.run("ip link set lb master br0")
            link.run("ip link set br0 up")
        for ifname, p in (("la", spec.forward), ("lb", spec.ret)):
            link.run(["tc", "qdisc", "replace", "dev", ifname, "root", "netem", *netem_args(p)])
        self.link_spec = spec

    def stop_link(self) -> Optional[dict]:
        """Stop the emulator; returns its final counters."""
        if self.link_backend == "netem" and self.link_spec is not None:
            stats = {"backend": "netem", **{ifname: self.link.run(["tc", "-s", "qdisc", "show", "dev", ifname],
                                                                   check=False).stdout for ifname in ("la", "lb")}}
            return stats
        if self.emulator is None:
            return None
        p, self.emulator = self.emulator, None
        cpu_s = _cpu_seconds(p.pid)
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()
                p.wait()
        self._emu_log.close()
        stats = self.link_statistics()
        if stats is not None and cpu_s is not None:
            stats["cpu_s"] = round(cpu_s, 3)
            if stats.get("uptime_s"):
                stats["cpu_share"] = round(cpu_s / stats["uptime_s"], 3)
        return stats

    def link_down(self) -> None:
        """Black-hole the emulated link, both directions, until link_up() (frames
        already on their way still arrive; the ones offered meanwhile count as
        "outage" drops)."""
        self._hold(signal.SIGUSR1)

    def link_up(self) -> None:
        self._hold(signal.SIGUSR2)

    def _hold(self, sig) -> None:
        if self.emulator is None or self.emulator.poll() is not None:
            raise RuntimeError("the built-in link emulator is not running")
        self.emulator.send_signal(sig)

    def link_statistics(self) -> Optional[dict]:
        try:
            return json.loads(self._emu_stats.read_text())
        except (OSError, ValueError):
            return None

    def warm_up(self, timeout: float = 15.0) -> None:
        """Resolve ARP/ND across the link in both families before measuring."""
        deadline = time.monotonic() + timeout
        for src, dst in ((self.client, SERVER4), (self.client, SERVER6), (self.server, CLIENT4),
                         (self.server, CLIENT6)):
            while True:
                res = src.run(["ping", "-c", "1", "-W", "2", dst], check=False, timeout=10)
                if res.returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no path from {src.short} to {dst} across the link")

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        try:
            self.stop_link()
        finally:
            self.net.close()
            if self._own_workdir:  # a caller-given workdir keeps the logs
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Topology":
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> Dict[str, str]:
        return {short: host.name for short, host in self.net.hosts.items()}
