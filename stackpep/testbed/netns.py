"""Hosts as network namespaces joined by veth pairs, always torn down.

Every namespace and interface carries a per-run prefix so that concurrent runs
and leftovers of a crashed run never collide; `Network.__exit__` kills every
process left in its namespaces (deleting a namespace does not) and deletes them.
Only 198.18.0.0/15 and fd00::/8 are meant to be used inside.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

Cmd = Union[str, Sequence[str]]

NS_PREFIX = "sp"  # every namespace this project creates starts with it


def _argv(cmd: Cmd) -> List[str]:
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def run(cmd: Cmd, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(_argv(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"command failed ({res.returncode}): {shlex.join(_argv(cmd))}\n{res.stderr.strip()}")
    return res


_NEUTRAL_CWD: Optional[str] = None


def neutral_cwd() -> str:
    """An empty private folder: the default working directory of what a Host runs.

    `python -m`/`python -c` put the working directory first on sys.path; started
    from a clone's root, a child would import the source tree (no compiled
    modules) instead of the installed stackpep.  Nothing can shadow anything
    from an empty folder this process made (removed at exit if still empty).
    """
    global _NEUTRAL_CWD
    if _NEUTRAL_CWD is None or not os.path.isdir(_NEUTRAL_CWD):
        _NEUTRAL_CWD = tempfile.mkdtemp(prefix="stackpep-cwd-")
        atexit.register(_remove_empty, _NEUTRAL_CWD)
    return _NEUTRAL_CWD


def _remove_empty(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def unique_prefix() -> str:
    """A short per-run prefix: 'sp' + 4 hex digits (interface names must fit 15 bytes)."""
    return NS_PREFIX + secrets.token_hex(2)


@dataclass
class Host:
    """One network namespace."""

    name: str  # full namespace name
    short: str  # role name, e.g. "client"
    procs: List[subprocess.Popen] = field(default_factory=list)

    def argv(self, cmd: Cmd) -> List[str]:
        return ["ip", "netns", "exec", self.name, *_argv(cmd)]

    def run(self, cmd: Cmd, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("cwd", neutral_cwd())
        return run(self.argv(cmd), check=check, timeout=timeout, **kw)

    def popen(self, cmd: Cmd, **kw) -> subprocess.Popen:
        """Start a background process in this namespace (killed at teardown).

        `ip netns exec` execs the command directly, so the Popen pid is the
        process itself (no shell in between).  It runs in neutral_cwd() unless
        told otherwise.
        """
        kw.setdefault("cwd", neutral_cwd())
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(self.argv(cmd), **kw)
        self.procs.append(p)
        return p

    def sysctl(self, key: str, value) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    def pids(self) -> List[int]:
        res = run(["ip", "netns", "pids", self.name], check=False)
        return [int(x) for x in res.stdout.split()]


class Network:
    """A set of namespaces and veth links with guaranteed teardown.

    with Network() as net:
        a = net.add_host("client"); b = net.add_host("server")
        net.link(a, b, ["198.18.0.1/24", "fd00:1::1/64"], ["198.18.0.2/24", "fd00:1::2/64"])
    """

    def __init__(self, prefix: Optional[str] = None):
        self.prefix = prefix or unique_prefix()
        self.hosts: Dict[str, Host] = {}
        self._links = 0

    # -- building -------------------------------------------------------------
    def add_host(self, short: str, forwarding: bool = False) -> Host:
        name = f"{self.prefix}-{short}"
        run(["ip", "netns", "add", name])
        host = Host(name, short)
        self.hosts[short] = host
        host.run("ip link set lo up")
        # IPv6 DAD would delay the first packets by a second or more.
        host.sysctl("net.ipv6.conf.all.accept_dad", 0)
        host.sysctl("net.ipv6.conf.default.accept_dad", 0)
        if forwarding:
            host.sysctl("net.ipv4.ip_forward", 1)
            host.sysctl("net.ipv6.conf.all.forwarding", 1)
        return host

    def link(self, a: Host, b: Host, a_addrs: Sequence[str] = (), b_addrs: Sequence[str] = (),
             a_ifname: Optional[str] = None, b_ifname: Optional[str] = None, mtu: int = 1500):
        """A veth pair between a and b; returns the two interface names."""
        self._links += 1
        a_if = a_ifname or f"{a.short[:4]}{self._links}"
        b_if = b_ifname or f"{b.short[:4]}{self._links}"
        tmp_a, tmp_b = f"{self.prefix}a{self._links}", f"{self.prefix}b{self._links}"
        run(["ip", "link", "add", tmp_a, "mtu", str(mtu), "type", "veth", "peer", "name", tmp_b, "mtu", str(mtu)])
        run(["ip", "link", "set", tmp_a, "netns", a.name, "name", a_if])
        run(["ip", "link", "set", tmp_b, "netns", b.name, "name", b_if])
        for host, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
            for addr in addrs:
                host.run(["ip", "addr", "add", addr, "dev", ifname] + (["nodad"] if ":" in addr else []))
            host.run(["ip", "link", "set", ifname, "up"])
        return a_if, b_if

    # -- teardown -------------------------------------------------------------
    def close(self) -> None:
        # Every host's processes get SIGTERM at once and share one 3 s grace
        # period (not 3 s a host, one after the other), then SIGKILL.
        procs = [p for host in self.hosts.values() for p in host.procs]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 3
        for p in procs:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for host in self.hosts.values():
            kill_namespace_processes(host.name)
            run(["ip", "netns", "del", host.name], check=False)
        self.hosts.clear()
        # A link() that failed half-way leaves its veth in the root namespace.
        delete_root_links(self.prefix)

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def kill_namespace_processes(name: str) -> None:
    res = run(["ip", "netns", "pids", name], check=False)
    for pid in (int(x) for x in res.stdout.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_root_links(prefix: str) -> List[str]:
    """Delete root-namespace interfaces named prefix* (a half-built veth pair)."""
    res = run(["ip", "-o", "link", "show"], check=False)
    gone = []
    for line in res.stdout.splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        if name.startswith(prefix):
            run(["ip", "link", "del", name], check=False)
            gone.append(name)
    return gone


def list_namespaces(prefix: str = NS_PREFIX) -> List[str]:
    res = run(["ip", "-o", "netns", "list"], check=False)
    names = [line.split()[0] for line in res.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def cleanup_namespaces(prefix: str) -> List[str]:
    """Delete every namespace whose name starts with prefix (after killing its processes)."""
    removed = []
    for name in list_namespaces(prefix):
        kill_namespace_processes(name)
        run(["ip", "netns", "del", name], check=False)
        removed.append(name)
    delete_root_links(prefix)
    return removed
