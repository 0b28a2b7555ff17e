"""Netfilter rules that hand intercepted TCP to stackpep alone.

AF_PACKET sees a frame before the IP layer does; what the kernel must not also
do is forward it.  So, for the configured interfaces, prefixes and ports, a
rule in the raw PREROUTING hook (priority -300, before conntrack) drops the
intercepted TCP both ways: client->server on client-facing interfaces and
server->client on server-facing ones.  Traffic to or from the box's own
addresses is never intercepted (`fib daddr type local` / `addrtype`).
Frames stackpep emits leave by AF_PACKET below netfilter; packets it sends
through IP sockets carry SO_MARK `mark` and get NOTRACK in raw OUTPUT so they
never create conntrack state.

Two backends:
- nft: one table of our own (`inet stackpep` or `inet stackpep_<instance>`),
  replaced in one atomic transaction and deleted as a whole, so no rule of
  anyone else is ever touched;
- iptables-legacy / ip6tables-legacy: chains of our own (`STACKPEP-PRE`,
  `STACKPEP-OUT`, suffixed by instance) in the raw table, reached by one jump
  rule per hook that carries the comment `stackpep`; removal deletes only
  rules with that comment and chains with that name.
With `scps_compressed`, SCPS-TP compressed headers (IP protocol 105, CCSDS
714.0-B-2, notes "TCP option kinds (IANA)") to or from the intercepted prefixes are dropped the same way: the
capture expands them (stackpep._fast.scpshc), the kernel must not forward them.
They carry no ports, so the port ranges do not narrow these rules; like the
capture, they take protocol 105 only directly after the IP header (never an
IPv4 fragment, never behind IPv6 extension headers).
Every rule carries a comment naming stackpep.  `auto` picks nft when the `nft`
tool works (atomic replace, a table we own), else iptables-legacy.

A crash must not cut the link.  With nft, `InstalledRules` makes the table
with `flags owner` (Linux >= 5.12) through libnftables in this process
(ctypes, `OwnedNft`): the kernel ties the table to the netlink socket that
created it and deletes it the moment the process dies, SIGKILL included, so
the kernel forwards every flow again at once; no other process may change or
delete it meanwhile (`stackpep cleanup` leaves a live instance's table alone).
Where that is not possible (no libnftables, an older kernel) the table is made
as before and logged; iptables-legacy has nothing like it: after a crash its
chains stay until `stackpep cleanup` (the systemd unit runs it after every stop).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger("stackpep.rules")

COMMENT = "stackpep"
TABLE_PREFIX = "stackpep"
CHAIN_PREFIX = "STACKPEP"
DEFAULT_MARK = 0x5350  # "SP"


class RulesError(RuntimeError):
    """A rule command failed; the message carries the command and its stderr."""


@dataclass(frozen=True)
class InterceptSpec:
    """What to intercept: TCP from clients on client_interfaces to server
    prefixes/ports, and the replies arriving on server_interfaces."""

    client_interfaces: Tuple[str, ...]
    server_interfaces: Tuple[str, ...]
    prefixes: Tuple[str, ...] = ("0.0.0.0/0", "::/0")  # server-side prefixes
    ports: Tuple[Tuple[int, int], ...] = ()  # server port ranges, inclusive; () = all
    exclude_local: bool = True
    mark: int = DEFAULT_MARK
    instance: str = ""
    scps_compressed: bool = False  # also intercept IP protocol 105 (SCPS compressed headers)

    def v4(self) -> List[str]:
        return [p for p in self.prefixes if ipaddress.ip_network(p, strict=False).version == 4]

    def v6(self) -> List[str]:
        return [p for p in self.prefixes if ipaddress.ip_network(p, strict=False).version == 6]

    def matches(self, server_addr: bytes, server_port: int) -> bool:
        """The userspace mirror of the rules: does a flow to this server get intercepted?"""
        if self.ports and not any(lo <= server_port <= hi for lo, hi in self.ports):
            return False
        ip = ipaddress.ip_address(server_addr)
        return any(ip in ipaddress.ip_network(p, strict=False) for p in self.prefixes
                   if ipaddress.ip_network(p, strict=False).version == ip.version)


def _run(argv: Sequence[str], input: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RulesError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _suffix(instance: str) -> str:
    if instance and not re.fullmatch(r"[A-Za-z0-9_]{1,16}", instance):
        raise ValueError("instance name: 1-16 letters, digits or _")
    return instance


class Backend:
    name = "?"

    def install(self, spec: InterceptSpec) -> None:
        raise NotImplementedError

    def remove(self, instance: str = "") -> int:
        """Remove this instance's rules; returns how many objects were removed."""
        raise NotImplementedError

    def remove_all(self) -> int:
        """Remove every stackpep rule of every instance (crash recovery)."""
        raise NotImplementedError

    def installed(self, instance: str = "") -> bool:
        raise NotImplementedError

    def render(self, spec: InterceptSpec) -> str:
        """The rules as text (what install applies)."""
        raise NotImplementedError


# --------------------------------------------------------------------------- nft
class NftBackend(Backend):
    name = "nft"

    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft

    def table(self, instance: str = "") -> str:
        s = _suffix(instance)
        return f"{TABLE_PREFIX}_{s}" if s else TABLE_PREFIX

    @staticmethod
    def _ports(spec: InterceptSpec) -> str:
        items = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spec.ports]
        return "{ " + ", ".join(items) + " }"

    @staticmethod
    def _set(items: Sequence[str]) -> str:
        return "{ " + ", ".join(f'"{i}"' if not i[0].isdigit() and ":" not in i else i for i in items) + " }"

    def render(self, spec: InterceptSpec, owner: bool = False) -> str:
        t = self.table(spec.instance)
        local = "fib daddr type != local " if spec.exclude_local else ""
        rules = []
        for fam, nets in (("ip", spec.v4()), ("ip6", spec.v6())):
            if not nets:
                continue
            netset = "{ " + ", ".join(str(ipaddress.ip_network(n, strict=False)) for n in nets) + " }"
            for ifs, direction, addr, port in (
                (spec.client_interfaces, "client->server", "daddr", "dport"),
                (spec.server_interfaces, "server->client", "saddr", "sport"),
            ):
                if not ifs:
                    continue
                ifset = "{ " + ", ".join(f'"{i}"' for i in ifs) + " }"
                ports = f"tcp {port} {self._ports(spec)} " if spec.ports else ""
                # What the capture takes, no more: TCP found through the IPv6 extension
                # headers (`meta l4proto` walks the chain, RFC 8200 §4), never a fragment
                # (RFC 791 §3.2: offset != 0 or MF; RFC 8200 §4.5: a Fragment header),
                # which the capture leaves to the kernel and the kernel then forwards.
                proto = ("meta l4proto tcp ip frag-off & 0x3fff == 0" if fam == "ip"
                         else "meta l4proto tcp exthdr frag missing")
                rules.append(
                    f"        iifname {ifset} {proto} {fam} {addr} {netset} {ports}{local}"
                    f'counter drop comment "{COMMENT}: intercepted {fam} {direction}"'
                )
                if spec.scps_compressed:
                    hc = ("ip protocol 105 ip frag-off & 0x3fff == 0" if fam == "ip"
                          else "ip6 nexthdr 105")
                    rules.append(
                        f"        iifname {ifset} {hc} {fam} {addr} {netset} {local}"
                        f'counter drop comment "{COMMENT}: intercepted {fam} {direction} SCPS compressed"'
                    )
        out = [
            f"        meta mark {spec.mark:#x} counter notrack comment \"{COMMENT}: emitted by stackpep\""
        ]
        return (
            f"table inet {t} {{\n"
            + ("    flags owner\n" if owner else "")
            + f'    comment "{COMMENT}: intercepted TCP goes to stackpep, not the forwarding path"\n'
            f"    chain prerouting {{\n"
            f"        type filter hook prerouting priority raw; policy accept;\n"
            + "\n".join(rules) + "\n"
            f"    }}\n"
            f"    chain output {{\n"
            f"        type filter hook output priority raw; policy accept;\n"
            + "\n".join(out) + "\n"
            f"    }}\n"
            f"}}\n"
        )

    def install(self, spec: InterceptSpec) -> None:
        t = self.table(spec.instance)
        # One transaction: create-if-missing, delete, recreate -> idempotent and atomic.
        script = f"table inet {t}\ndelete table inet {t}\n" + self.render(spec)
        _run([self.nft, "-f", "-"], input=script)

    def tables(self) -> List[str]:
        res = _run([self.nft, "list", "tables"], check=False)
        names = []
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "table" and parts[1] == "inet":
                name = parts[2]
                if name == TABLE_PREFIX or name.startswith(TABLE_PREFIX + "_"):
                    names.append(name)
        return names

    def installed(self, instance: str = "") -> bool:
        return self.table(instance) in self.tables()

    def _delete(self, t: str) -> int:
        res = _run([self.nft, "delete", "table", "inet", t], check=False)
        if res.returncode == 0:
            return 1
        if "Operation not permitted" in res.stderr:
            # `flags owner`: a running stackpep holds it, and it goes when that process does
            log.warning("nft table inet %s belongs to a running stackpep process: left alone", t)
            return 0
        raise RulesError(f"nft delete table inet {t} failed ({res.returncode}): {res.stderr.strip()}")

    def remove(self, instance: str = "") -> int:
        t = self.table(instance)
        if t not in self.tables():
            return 0
        return self._delete(t)

    def remove_all(self) -> int:
        return sum(self._delete(t) for t in self.tables())

    def available(self) -> Tuple[bool, str]:
        if shutil.which(self.nft) is None:
            return False, "the nft tool is not installed"
        res = _run([self.nft, "list", "tables"], check=False)
        if res.returncode != 0:
            return False, f"nft does not work here: {res.stderr.strip()}"
        return True, "nft works"


class OwnedNft:
    """A table that lives as long as this process: libnftables (ctypes) with one
    context, whose netlink socket stays open until `close()` or the process's
    death; the table is created with `flags owner` through it (the kernel's
    NFT_TABLE_F_OWNER, Linux >= 5.12: only the owning socket may change the
    table, and the kernel removes it when that socket closes).

    A process that forks (stackpep.pep.workers) hands the socket to its
    children too: they must not outlive it (PR_SET_PDEATHSIG) or the table stays
    while one of them runs."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        lib = ctypes.CDLL(name)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        if not self.ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(self.ctx)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, text: str) -> None:
        if not self.ctx:
            raise RulesError("libnftables context closed")
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, text.encode())
        if rc != 0:
            err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace").strip()
            raise RulesError(f"libnftables: {err or f'error {rc}'}")

    def close(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None


# ------------------------------------------------------------ iptables-legacy
class IptablesLegacyBackend(Backend):
    name = "iptables-legacy"

    def __init__(self, v4: str = "iptables-legacy", v6: str = "ip6tables-legacy") -> None:
        self.tools = {4: v4, 6: v6}

    def chains(self, instance: str = "") -> Tuple[str, str]:
        s = _suffix(instance)
        return (f"{CHAIN_PREFIX}-PRE" + (f"-{s}" if s else ""), f"{CHAIN_PREFIX}-OUT" + (f"-{s}" if s else ""))

    def _rules(self, spec: InterceptSpec, version: int) -> List[List[str]]:
        pre, out = self.chains(spec.instance)
        nets = spec.v4() if version == 4 else spec.v6()
        rules: List[List[str]] = []
        if version == 6 and nets:
            # any packet with a Fragment header (RFC 8200 §4.5) stays with the kernel
            rules.append(["-A", pre, "-m", "frag", "-m", "comment", "--comment",
                          f"{COMMENT}: fragments are forwarded by the kernel", "-j", "RETURN"])
        # multiport takes at most 15 ports (a range counts as two)
        port_groups: List[List[str]] = []
        cur: List[str] = []
        weight = 0
        for lo, hi in spec.ports:
            item, w = (str(lo), 1) if lo == hi else (f"{lo}:{hi}", 2)
            if weight + w > 15:
                port_groups.append(cur)
                cur, weight = [], 0
            cur.append(item)
            weight += w
        if cur:
            port_groups.append(cur)
        for net in nets:
            for ifs, direction, addr_opt, port_opt in (
                (spec.client_interfaces, "client->server", "-d", "--dports"),
                (spec.server_interfaces, "server->client", "-s", "--sports"),
            ):
                for ifname in ifs:
                    for group in port_groups or [None]:
                        # ip6tables -p walks the extension headers (ipv6_find_hdr), as the
                        # capture does; IPv4 fragments (offset != 0 or MF, RFC 791 §3.2)
                        # are not matched (IPv6 ones returned above), so the kernel forwards them.
                        r = ["-A", pre, "-i", ifname, "-p", "tcp", addr_opt, net]
                        if version == 4:
                            r += ["-m", "u32", "--u32", "4&0x3FFF=0"]
                        if group is not None:
                            r += ["-m", "multiport", port_opt, ",".join(group)]
                        if spec.exclude_local:
                            r += ["-m", "addrtype", "!", "--dst-type", "LOCAL"]
                        r += ["-m", "comment", "--comment", f"{COMMENT}: intercepted {direction}", "-j", "DROP"]
                        rules.append(r)
                    if spec.scps_compressed:
                        # protocol 105 right after the IP header: IPv4 not a fragment,
                        # IPv6 next header byte (offset 6) itself 105 (u32 reads bytes 4-7)
                        r = ["-A", pre, "-i", ifname, "-p", "105", addr_opt, net, "-m", "u32", "--u32",
                             "4&0x3FFF=0" if version == 4 else "4>>8&0xFF=105"]
                        if spec.exclude_local:
                            r += ["-m", "addrtype", "!", "--dst-type", "LOCAL"]
                        r += ["-m", "comment", "--comment", f"{COMMENT}: intercepted {direction} SCPS compressed",
                              "-j", "DROP"]
                        rules.append(r)
        rules.append(["-A", out, "-m", "mark", "--mark", f"{spec.mark:#x}", "-m", "comment",
                      "--comment", f"{COMMENT}: emitted by stackpep", "-j", "CT", "--notrack"])
        return rules

    def _jumps(self, instance: str) -> List[Tuple[str, str]]:
        pre, out = self.chains(instance)
        return [("PREROUTING", pre), ("OUTPUT", out)]

    def render(self, spec: InterceptSpec) -> str:
        lines = []
        for v in (4, 6):
            lines.append(f"# {self.tools[v]} -t raw")
            for hook, chain in self._jumps(spec.instance):
                lines.append(f"-N {chain}")
                lines.append(f"-I {hook} 1 -m comment --comment {COMMENT} -j {chain}")
            lines += [" ".join(r) for r in self._rules(spec, v)]
        return "\n".join(lines) + "\n"

    def _ipt(self, v: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return _run([self.tools[v], "-w", "-t", "raw", *args], check=check)

    def install(self, spec: InterceptSpec) -> None:
        for v in (4, 6):
            for hook, chain in self._jumps(spec.instance):
                if self._ipt(v, "-n", "-L", chain, check=False).returncode != 0:
                    self._ipt(v, "-N", chain)
                else:
                    self._ipt(v, "-F", chain)  # refill: idempotent
            for r in self._rules(spec, v):
                self._ipt(v, *r)
            for hook, chain in self._jumps(spec.instance):
                jump = [hook, "-m", "comment", "--comment", COMMENT, "-j", chain]
                if self._ipt(v, "-C", *jump, check=False).returncode != 0:
                    self._ipt(v, "-I", hook, "1", *jump[1:])

    def _our_chains(self, v: int) -> List[str]:
        res = self._ipt(v, "-S", check=False)
        chains = []
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIX + "-"):
                chains.append(parts[1])
        return chains

    def _remove(self, wanted: Optional[set]) -> int:
        n = 0
        for v in (4, 6):
            if shutil.which(self.tools[v]) is None:
                continue
            chains = [c for c in self._our_chains(v) if wanted is None or c in wanted]
            for hook in ("PREROUTING", "OUTPUT"):
                res = self._ipt(v, "-S", hook, check=False)
                for line in res.stdout.splitlines():
                    parts = line.split()
                    # only jumps carrying our comment into one of our chains
                    if (len(parts) >= 2 and parts[0] == "-A" and f"--comment {COMMENT}" in line
                            and parts[-2] == "-j" and parts[-1] in chains):
                        self._ipt(v, "-D", *parts[1:])
                        n += 1
            for c in chains:
                self._ipt(v, "-F", c)
                self._ipt(v, "-X", c)
                n += 1
        return n

    def remove(self, instance: str = "") -> int:
        return self._remove(set(self.chains(instance)))

    def remove_all(self) -> int:
        return self._remove(None)

    def installed(self, instance: str = "") -> bool:
        pre, _ = self.chains(instance)
        return any(pre in self._our_chains(v) for v in (4, 6) if shutil.which(self.tools[v]))

    def available(self) -> Tuple[bool, str]:
        for v in (4, 6):
            if shutil.which(self.tools[v]) is None:
                return False, f"{self.tools[v]} is not installed"
            res = _run([self.tools[v], "-w", "-t", "raw", "-S"], check=False)
            if res.returncode != 0:
                return False, f"{self.tools[v]} does not work here: {res.stderr.strip()}"
        return True, "iptables-legacy and ip6tables-legacy work"


BACKENDS = {"nft": NftBackend, "iptables-legacy": IptablesLegacyBackend}


def choose_backend(preference: str = "auto") -> Tuple[Backend, str]:
    """The backend to use and why (a sentence for the log)."""
    if preference in BACKENDS:
        b = BACKENDS[preference]()
        ok, why = b.available()
        if not ok:
            raise RulesError(f"rules backend {preference!r} was asked for but {why}")
        return b, f"{preference} (asked for in the configuration)"
    if preference != "auto":
        raise ValueError(f"unknown rules backend {preference!r}")
    nft = NftBackend()
    ok, why = nft.available()
    if ok:
        return nft, ("nft (auto: nft works, so stackpep keeps its rules in a table of its own, "
                     "replaced atomically and deleted as a whole)")
    legacy = IptablesLegacyBackend()
    ok2, why2 = legacy.available()
    if ok2:
        return legacy, f"iptables-legacy (auto: {why}; legacy chains of our own in the raw table)"
    raise RulesError(f"no netfilter backend: {why}; {why2}")


def cleanup(instance: Optional[str] = None) -> List[Tuple[str, int]]:
    """Remove stackpep rules from every backend that works here (after a crash).

    instance=None removes every stackpep instance's rules.  Returns
    [(backend name, objects removed)].
    """
    done = []
    for name, cls in BACKENDS.items():
        b = cls()
        ok, _ = b.available()
        if not ok:
            continue
        n = b.remove_all() if instance is None else b.remove(instance)
        done.append((name, n))
    return done


class InstalledRules:
    """Context manager: install on enter, remove on exit (also on exceptions).

    With nft and `tie_to_process` (default) the table is owned by this process
    (`OwnedNft`): if the process dies without the exit (SIGKILL, a crash) the
    kernel removes it at once.  `owned` says whether that worked."""

    def __init__(self, spec: InterceptSpec, preference: str = "auto", tie_to_process: bool = True) -> None:
        self.spec = spec
        self.backend, self.reason = choose_backend(preference)
        self.tie_to_process = tie_to_process
        self.owned: Optional[OwnedNft] = None

    def __enter__(self) -> "InstalledRules":
        b = self.backend
        if isinstance(b, NftBackend) and self.tie_to_process:
            try:
                owned = OwnedNft()
            except OSError as exc:
                owned = None
                log.warning("libnftables not usable (%s): the nft table outlives a crash; "
                            "`stackpep cleanup` removes it", exc)
            if owned is not None:
                t = b.table(self.spec.instance)
                if t in b.tables():
                    b._delete(t)     # a table a crash of an older version left
                    if t in b.tables():
                        owned.close()
                        raise RulesError(f"nft table inet {t} belongs to another running stackpep "
                                         "(give this one its own pep.instance)")
                try:
                    owned.run(b.render(self.spec, owner=True))
                except RulesError as exc:
                    owned.close()
                    owned = None
                    log.warning("nft tables with `flags owner` do not work here (%s; Linux >= 5.12 needed): "
                                "the table outlives a crash; `stackpep cleanup` removes it", exc)
                if owned is not None:
                    self.owned = owned
                    self.reason += "; the table is owned by this process (the kernel removes it if it dies)"
                    return self
        b.install(self.spec)
        return self

    def __exit__(self, *exc) -> None:
        if self.owned is not None:
            try:
                self.owned.run(f"delete table inet {self.backend.table(self.spec.instance)}")
            finally:
                self.owned.close()
                self.owned = None
            return
        self.backend.remove(self.spec.instance)
