"""The PEP's TOML configuration, read with tomli and checked as a whole.

Every problem is reported with file, line and dotted key (`check-config`), and
`load()` refuses a file with any problem, so bad values never start a
half-configured box.  The format is documented in docs/configuration.md;
examples/*.toml are checked by the tests.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tomli

HANDSHAKE_MODES = ("after-server", "immediate", "syn-cookie")
ROLES = ("splitter",)
BACKENDS = ("auto", "nft", "iptables-legacy")
LOG_LEVELS = ("debug", "info", "warning", "error")
WAN_LEGS = ("client", "server")
LOG_FORMATS = ("text", "json")
CONTROL_DIR = "/run/stackpep"


@dataclass(frozen=True)
class Problem:
    file: str
    line: Optional[int]
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The configuration has problems; .problems lists every one."""

    def __init__(self, problems: List[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class PepConfig:
    client_interfaces: Tuple[str, ...]
    server_interfaces: Tuple[str, ...]
    prefixes: Tuple[str, ...] = ("0.0.0.0/0", "::/0")
    ports: Tuple[Tuple[int, int], ...] = ()
    exclude_local: bool = True
    instance: str = ""
    role: str = "splitter"
    log_level: str = "info"
    workers: int = 1                   # worker processes (stackpep.pep.workers); the file's default: one per core
    handshake_mode: str = "after-server"
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    max_connections: int = 10000      # 10,000 split connections (20,000 engines) at ~13 KB each idle (docs/BENCHMARKS-connections.md)
    max_embryonic: int = 2048          # split connections not yet established both ways (oldest evicted first)
    max_embryonic_per_source: int = 256  # ... from one source (IPv4 address, IPv6 /64)
    server_opens_per_second: float = 5000.0  # server legs opened per second, whole box
    server_opens_per_second_per_source: float = 1000.0  # ... for one source
    relay_buffer: int = 256 * 1024
    rules_backend: str = "auto"
    mark: int = 0x5350
    install_rules: bool = True
    block_size: int = 1 << 18
    block_count: int = 64
    retire_ms: int = 1
    hold_us: int = 0  # capture.hold_us: the wake-up grid of the dispatcher's loop and of the connections' deadlines
    gso: bool = True
    own_wait: bool = True  # capture.own_wait: the loop waits in its own epoll_wait while trio is idle (WaitSet.block)
    pcap: Optional[str] = None         # pcapng of every packet captured and emitted (None = off)
    pcap_max_bytes: int = 64 << 20     # ... each file at most this long
    pcap_files: int = 4                # ... FILE, FILE.1 .. FILE.<n-1>
    tcp_client: Dict[str, Any] = field(default_factory=dict)  # TcpConfig fields, client leg
    tcp_server: Dict[str, Any] = field(default_factory=dict)  # TcpConfig fields, server leg
    wan_leg: Optional[str] = None      # the leg that crosses the long link ([wan])
    wan_rate: Optional[int] = None     # its rate, bits/s on IP bytes
    wan_rtt: float = 0.6               # its round-trip time, seconds
    wan_scps: Optional[Dict[str, Any]] = None  # ScpsSettings fields of the long leg (None: no SCPS-TP)
    wan_scps_refusal_ttl: float = 600.0  # seconds a destination that refused option 20 is remembered
    server_initiated: bool = False     # SYNs arriving on server-facing interfaces open split connections too
    worker_slot: Tuple[int, int] = (0, 1)  # (index, count) of this worker: SCPS connection ids are split by it
    wan_zero_rtt: bool = False         # the near box answers the client's SYN and sends its first bytes in the long leg's SYN
    wan_zero_rtt_wait: float = 0.01    # seconds the near box waits for the client's first bytes before opening the long leg
    reset_rate: float = 200.0          # unknown-flow RSTs per second, whole box ([resets])
    reset_burst: int = 50
    reset_per_source_rate: float = 10.0  # ... per source address
    reset_per_source_burst: int = 10
    recent_close_time: float = 10.0    # seconds a closed flow's late segments are recognised
    drain_timeout: float = 10.0        # SIGTERM: active connections get this long to finish
    control_socket: str = ""           # `stackpep stats` talks here ("" = no control socket)
    metrics_listen: Optional[str] = None  # "host:port" of the Prometheus endpoint (None = off)
    log_connections: bool = True       # one log line per connection end
    log_format: str = "text"           # "text" or "json" (JSON lines)
    source: str = "<dict>"
    lines: Dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> Optional[int]:
        return _line_for(self.lines, key)


# ----------------------------------------------------------------- key lines
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]\[]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _norm(dotted: str) -> str:
    parts = [p.strip().strip("\"'") for p in dotted.split(".")]
    return ".".join(parts)


def key_lines(text: str) -> Dict[str, int]:
    """Map each dotted key (and table header) to the line that defines it."""
    lines: Dict[str, int] = {}
    table = ""
    in_multiline: Optional[str] = None
    for no, line in enumerate(text.splitlines(), 1):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        m = _HEADER.match(line)
        if m and "=" not in line.split("#")[0]:
            table = _norm(m.group(1))
            lines.setdefault(table, no)
            continue
        m = _KEY.match(line)
        if m:
            key = _norm(m.group(1))
            full = f"{table}.{key}" if table else key
            lines.setdefault(full, no)
            rest = line[m.end():]
            for q in ('"""', "'''"):
                if rest.count(q) == 1:
                    in_multiline = q
    return lines


def _line_for(lines: Dict[str, int], key: str) -> Optional[int]:
    k = key
    while k:
        if k in lines:
            return lines[k]
        k = k.rpartition(".")[0]
        k = re.sub(r"\[\d+\]$", "", k)
    return None


# ---------------------------------------------------------------- validation
class _Checker:
    def __init__(self, source: str, lines: Dict[str, int]):
        self.source = source
        self.lines = lines
        self.problems: List[Problem] = []

    def bad(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.source, _line_for(self.lines, re.sub(r"\[\d+\]", "", key)), key, message))

    def table(self, data: dict, name: str, allowed: Dict[str, Any]) -> dict:
        t = data.get(name, {})
        if not isinstance(t, dict):
            self.bad(name, "must be a table")
            return {}
        for k in t:
            if k not in allowed:
                self.bad(f"{name}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return t

    def typed(self, t: dict, table: str, key: str, kind, default, check=None, what: str = ""):
        if key not in t:
            return default
        v = t[key]
        ok = isinstance(v, kind) and not (kind in (int, float, (int, float)) and isinstance(v, bool))
        if not ok:
            names = {str: "a string", bool: "true or false", int: "an integer", list: "a list",
                     (int, float): "a number", float: "a number"}
            self.bad(f"{table}.{key}", f"must be {names.get(kind, str(kind))}, got {v!r}")
            return default
        if check is not None and not check(v):
            self.bad(f"{table}.{key}", f"{what} (got {v!r})")
            return default
        return v


def default_control_socket(instance: str) -> str:
    return f"{CONTROL_DIR}/{instance or 'stackpep'}.sock"


def split_listen(v: str) -> Tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError if it is neither."""
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not host:port: {v!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ipaddress.ip_address(host)
    return host, int(port)


def _listen_ok(v: str) -> bool:
    if v == "":
        return True
    try:
        split_listen(v)
    except ValueError:
        return False
    return True


def _ifname_ok(v: str) -> bool:
    return 0 < len(v) < 16 and not re.search(r"[\s/:]", v)


def _tcp_fields() -> Optional[Dict[str, Any]]:
    """Field names and defaults of the engine's TcpConfig, if the engine is present."""
    try:
        from stackpep.tcp.config import TcpConfig  # type: ignore
    except Exception:
        return None
    if dataclasses.is_dataclass(TcpConfig):
        return {f.name: f for f in dataclasses.fields(TcpConfig)}
    return None


def _check_tcp_leg(ck: _Checker, data: dict, leg: str) -> Dict[str, Any]:
    tcp = data.get("tcp", {})
    if not isinstance(tcp, dict):
        ck.bad("tcp", "must be a table with [tcp.client] and/or [tcp.server]")
        return {}
    for k in tcp:
        if k not in ("client", "server"):
            ck.bad(f"tcp.{k}", "unknown leg (known: client, server)")
    t = tcp.get(leg, {})
    if not isinstance(t, dict):
        ck.bad(f"tcp.{leg}", "must be a table")
        return {}
    fields = _tcp_fields()
    if fields is None:
        return dict(t)
    out = {}
    for k, v in t.items():
        if k not in fields:
            ck.bad(f"tcp.{leg}.{k}", f"unknown engine setting (known: {', '.join(sorted(fields))})")
            continue
        out[k] = v
    # Let the engine's own validation speak (TcpConfig.__post_init__, if any).
    try:
        from stackpep.tcp.config import TcpConfig  # type: ignore
        TcpConfig(**out)
    except (TypeError, ValueError) as exc:
        ck.bad(f"tcp.{leg}", f"engine rejected the settings: {exc}")
    return out


#: [wan] congestion -> TcpConfig.congestion (CCSDS 714.0-B-2, notes "Congestion control modes (reference gateway)";
#: the reference gateway's modes 0 pure rate, 2 Vegas, 1 Van Jacobson = standard TCP)
WAN_CONGESTION = {"rate": "rate", "vegas": "vegas", "tcp": "newreno"}
WAN_LOSS_TYPES = ("corruption", "congestion")
#: [wan] first_flight_redundancy with zero_rtt on: a 100 KB answer and its headers
#: (docs/scps.md "First-flight redundancy")
FIRST_FLIGHT_REDUNDANCY_DEFAULT = 128 * 1024


def wan_leg_settings(rate_bps: int, rtt_s: float, share: str = "wan", congestion: str = "rate",
                     loss_type: str = "corruption", min_rate: Optional[int] = None,
                     vegas: Optional[Dict[str, float]] = None, outage_rtos: int = 3,
                     outage_probe_interval: float = 1.0, keepalive_s: float = 0.0) -> Dict[str, Any]:
    """Engine settings of the leg that crosses a long, lossy link of known rate
    (docs/configuration.md "The long leg"): SCPS-TP congestion control (CCSDS
    714.0-B-2, notes "Congestion control modes (reference gateway)": by default rate control, the
    reference gateway's mode 0) with loss treated as corruption, link-outage persistence after ``outage_rtos``
    RTOs (0: off), and buffers of 4 × the bandwidth-delay product (at least the
    engine's 4 MiB): a lost retransmission holds the left edge of the window for
    an RTO and more while the rate keeps sending.  With rate control all the box's
    connections on that leg share the rate (``rate_share``), as the link does.

    ``keepalive_s`` > 0: keep-alive probes (RFC 1122 §4.2.3.6) after that long
    without a segment, 4 more at a quarter of it, then the leg is given up: a far
    box that restarted answers the first probe with RST, so a client that only
    receives learns of it in ``keepalive_s`` rather than at the idle timeout."""
    bdp = int(rate_bps / 8 * rtt_s)
    buf = max(4 << 20, 4 * bdp)
    buf = min(buf, 1 << 30)
    out: Dict[str, Any] = {
        "congestion": WAN_CONGESTION[congestion],
        "loss_response": loss_type,
        "snd_buf": buf,
        "rcv_buf": buf,
        # No Nagle (RFC 9293 §3.7.4 lets the application turn it off): what this leg
        # sends is what another TCP connection delivered, in its chunks, and a partial
        # segment held until the previous small one is acknowledged costs a whole link
        # round trip -- measured: the last 88 bytes of a 100 KB answer 0.6 s late when
        # the server's first burst ended mid-segment (docs/scps.md "First-flight
        # redundancy").  Pacing at the rate already fills segments while data waits.
        "nagle": False,
    }
    if congestion == "rate":
        out.update(rate_bps=int(rate_bps), rate_share=share)
        if min_rate is not None:
            out["min_rate_bps"] = int(min_rate)
    if congestion == "vegas":
        # Vegas on a link of known rate and RTT: paced at most at the link's rate, and
        # the first window is the link's bandwidth-delay product (+25 %, Vegas's own
        # pacing margin), not RFC 6928's 10 segments: slow start doubling every other
        # 600 ms round trip would take ~14 s to fill 50 Mbit/s.  Vegas then keeps
        # alpha..beta segments queued from there (Brakmo & Peterson §3.2).
        out.update(rate_bps=int(rate_bps), initial_window_segments=max(10, int(bdp * 1.25) // 1448 + 1))
        if vegas:
            out.update({f"vegas_{k}": float(v) for k, v in vegas.items()})
    if outage_rtos:
        out.update(outage_rtos=int(outage_rtos), outage_probe_us=int(round(outage_probe_interval * 1_000_000)))
    if keepalive_s > 0:
        idle_us = int(keepalive_s * 1_000_000)
        out.update(keepalive=True, keepalive_idle_us=idle_us, keepalive_interval_us=max(1, idle_us // 4),
                   keepalive_count=4)
    return out


#: [wan] keys of SCPS-TP on the long leg (docs/scps.md, "The PEP").
WAN_SCPS_KEYS = {"keepalive": 1, "zero_rtt": 1, "tfo_key": 1, "zero_rtt_wait": 1, "first_flight_redundancy": 1,
                 "scps": 1, "scps_snack": 1,
                 "scps_bets": 1, "scps_compression": 1, "scps_record_boundary": 1, "scps_refusal_ttl": 1,
                 "scps_snack_repeat": 1}


def _check_wan_scps(ck: "_Checker", wan: dict) -> Tuple[Optional[Dict[str, Any]], float]:
    """(ScpsSettings fields of the long leg or None, refusal ttl in seconds) from [wan].

    SCPS-TP (CCSDS 714.0-B-2) is on by default on a [wan] leg: its SYN offers
    option 20, and only a far end that answers it (another box, any SCPS gateway)
    gets the SCPS features; anything else gets the tuned TCP of one-sided mode."""
    on = ck.typed(wan, "wan", "scps", bool, True)
    snack = ck.typed(wan, "wan", "scps_snack", bool, True)
    bets = ck.typed(wan, "wan", "scps_bets", bool, False)
    compression = ck.typed(wan, "wan", "scps_compression", bool, False)
    rb = ck.typed(wan, "wan", "scps_record_boundary", bool, False)
    ttl = ck.typed(wan, "wan", "scps_refusal_ttl", (int, float), 600.0, lambda v: 0 < v <= 7 * 86400,
                   "seconds, > 0 and <= 604800")
    # ACKs that report the same SNACK hole (ScpsSettings.snack_repeat; docs/scps.md
    # "Interoperability with the reference gateway": 1 halves the reference's double repairs)
    repeat = ck.typed(wan, "wan", "scps_snack_repeat", int, None, lambda v: 0 <= v <= 100, "0 .. 100")
    if not wan or not on:
        return None, ttl
    out = {"snack": snack, "bets": bets, "compression": compression, "record_boundary": rb}
    if repeat is not None:  # absent: the engine's default (3, as the reference)
        out["snack_repeat"] = repeat
    return out, ttl


def _check_wan_zero_rtt(ck: "_Checker", wan: dict) -> Tuple[bool, Optional[bytes], float]:
    """(zero_rtt, the 16-byte TCP Fast Open key, wait in seconds) from [wan]
    (docs/scps.md, "Zero-RTT")."""
    on = ck.typed(wan, "wan", "zero_rtt", bool, False)
    key_hex = ck.typed(wan, "wan", "tfo_key", str, None, lambda v: re.fullmatch(r"[0-9A-Fa-f]{32}", v) is not None,
                       "32 hex digits (16 bytes), the same on both boxes")
    wait = ck.typed(wan, "wan", "zero_rtt_wait", (int, float), 0.01, lambda v: 0 <= v <= 1,
                    "seconds, 0 .. 1")
    if on and key_hex is None and "tfo_key" not in wan:
        ck.bad("wan.zero_rtt", "needs wan.tfo_key: the Fast Open cookie both boxes derive from it")
    key = bytes.fromhex(key_hex) if on and isinstance(key_hex, str) and len(key_hex) == 32 else None
    return bool(on and key is not None), key, float(wait)


def pcap_problems(path: Optional[str], max_bytes: int, files: int) -> List[Tuple[str, str]]:
    """[(key, message)] for capture.pcap* values the box could not honour (also
    for `stackpep run --pcap`): the directory must exist and be writable, since
    the files rotate by renaming in it."""
    from stackpep.io.pcap import MIN_MAX_BYTES, path_problem

    out = []
    if path is not None:
        why = path_problem(path)
        if why:
            out.append(("capture.pcap", why))
    if not MIN_MAX_BYTES <= max_bytes <= 1 << 40:
        out.append(("capture.pcap_max_bytes", f"bytes per file, {MIN_MAX_BYTES} .. 2**40 (got {max_bytes!r})"))
    if not 1 <= files <= 1000:
        out.append(("capture.pcap_files", f"number of files kept, 1 .. 1000 (got {files!r})"))
    return out


def _check_pcap(ck: "_Checker", cap: dict) -> Tuple[Optional[str], int, int]:
    from stackpep.io.pcap import DEFAULT_FILES, DEFAULT_MAX_BYTES

    path = ck.typed(cap, "capture", "pcap", str, None)
    if path == "":
        path = None  # "" = off, like metrics.listen
    max_bytes = ck.typed(cap, "capture", "pcap_max_bytes", int, DEFAULT_MAX_BYTES)
    files = ck.typed(cap, "capture", "pcap_files", int, DEFAULT_FILES)
    bad = pcap_problems(path, max_bytes, files)
    for key, msg in bad:
        ck.bad(key, msg)
    if bad:
        return None, DEFAULT_MAX_BYTES, DEFAULT_FILES
    return path, max_bytes, files


def _parse_ports(ck: _Checker, ports: Any) -> Tuple[Tuple[int, int], ...]:
    if not isinstance(ports, list):
        ck.bad("intercept.ports", f"must be a list of ports or \"lo-hi\" ranges, got {ports!r}")
        return ()
    out = []
    for i, p in enumerate(ports):
        key = f"intercept.ports[{i}]"
        if isinstance(p, int) and not isinstance(p, bool):
            lo = hi = p
        elif isinstance(p, str) and re.fullmatch(r"\d+-\d+", p.strip()):
            lo, hi = (int(x) for x in p.strip().split("-"))
        else:
            ck.bad(key, f"must be a port number or a \"lo-hi\" range, got {p!r}")
            continue
        if not (1 <= lo <= hi <= 65535):
            ck.bad(key, f"ports must satisfy 1 <= lo <= hi <= 65535, got {p!r}")
            continue
        out.append((lo, hi))
    return tuple(out)


def from_dict(data: dict, source: str = "<dict>", lines: Optional[Dict[str, int]] = None) -> PepConfig:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    problems = check_dict(data, source, lines or {})
    if isinstance(problems, list):
        raise ConfigError(problems)
    return problems


def check_dict(data: dict, source: str, lines: Dict[str, int]):
    """PepConfig if data is valid, else the list of problems."""
    ck = _Checker(source, lines)
    known = {"pep", "interfaces", "intercept", "handshake", "limits", "rules", "capture", "tcp", "wan", "resets",
             "control", "metrics", "log"}
    for k in data:
        if k not in known:
            ck.bad(k, f"unknown table (known: {', '.join(sorted(known))})")

    pep = ck.table(data, "pep", {"instance": 1, "role": 1, "log_level": 1, "workers": 1})
    instance = ck.typed(pep, "pep", "instance", str, "", lambda v: v == "" or re.fullmatch(r"[A-Za-z0-9_]{1,16}", v),
                        "1-16 letters, digits or _")
    role = ck.typed(pep, "pep", "role", str, "splitter", lambda v: v in ROLES, f"one of {', '.join(ROLES)}")
    log_level = ck.typed(pep, "pep", "log_level", str, "info", lambda v: v in LOG_LEVELS,
                         f"one of {', '.join(LOG_LEVELS)}")
    workers = ck.typed(pep, "pep", "workers", int, os.cpu_count() or 1, lambda v: 1 <= v <= 256, "1-256")

    ifs = ck.table(data, "interfaces", {"client": 1, "server": 1})
    if "interfaces" not in data:
        ck.bad("interfaces", "missing: [interfaces] with client = [...] and server = [...]")
    side: Dict[str, List[str]] = {}
    for s in ("client", "server"):
        v = ifs.get(s)
        if v is None:
            if "interfaces" in data:
                ck.bad(f"interfaces.{s}", "missing: the list of %s-facing interfaces" % s)
            side[s] = []
            continue
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            ck.bad(f"interfaces.{s}", f"must be a non-empty list of interface names, got {v!r}")
            side[s] = []
            continue
        for i, name in enumerate(v):
            if not _ifname_ok(name):
                ck.bad(f"interfaces.{s}[{i}]", f"not a valid interface name: {name!r}")
        side[s] = list(v)
    both = set(side["client"]) & set(side["server"])
    if both:
        ck.bad("interfaces", f"an interface cannot face both clients and servers: {', '.join(sorted(both))}")

    ic = ck.table(data, "intercept", {"prefixes": 1, "ports": 1, "exclude_local": 1, "server_initiated": 1})
    prefixes: List[str] = []
    raw_prefixes = ic.get("prefixes", ["0.0.0.0/0", "::/0"])
    if not isinstance(raw_prefixes, list) or not raw_prefixes:
        ck.bad("intercept.prefixes", f"must be a non-empty list of prefixes, got {raw_prefixes!r}")
    else:
        for i, p in enumerate(raw_prefixes):
            try:
                if not isinstance(p, str):
                    raise ValueError("not a string")
                prefixes.append(str(ipaddress.ip_network(p, strict=True)))
            except ValueError as exc:
                ck.bad(f"intercept.prefixes[{i}]", f"not a valid prefix {p!r}: {exc}")
    ports = _parse_ports(ck, ic.get("ports", []))
    exclude_local = ck.typed(ic, "intercept", "exclude_local", bool, True)
    server_initiated = ck.typed(ic, "intercept", "server_initiated", bool, None)

    hs = ck.table(data, "handshake", {"mode": 1, "timeout": 1})
    hmode = ck.typed(hs, "handshake", "mode", str, "after-server", lambda v: v in HANDSHAKE_MODES,
                     f"one of {', '.join(HANDSHAKE_MODES)}")
    htimeout = ck.typed(hs, "handshake", "timeout", (int, float), 10.0, lambda v: 0 < v <= 600,
                        "must be > 0 and <= 600 seconds")

    lim = ck.table(data, "limits", {"max_connections": 1, "idle_timeout": 1, "relay_buffer": 1, "drain_timeout": 1,
                                    "max_embryonic": 1, "max_embryonic_per_source": 1, "server_opens_per_second": 1,
                                    "server_opens_per_second_per_source": 1})
    maxc = ck.typed(lim, "limits", "max_connections", int, 10000, lambda v: 1 <= v <= 1_000_000,
                    "must be between 1 and 1000000")
    idle = ck.typed(lim, "limits", "idle_timeout", (int, float), 600.0, lambda v: 0 < v <= 86400,
                    "must be > 0 and <= 86400 seconds")
    relay = ck.typed(lim, "limits", "relay_buffer", int, 256 * 1024, lambda v: 1024 <= v <= 1 << 30,
                     "must be between 1024 and 2**30 bytes")
    max_emb = ck.typed(lim, "limits", "max_embryonic", int, 2048, lambda v: 1 <= v <= 1_000_000,
                       "must be between 1 and 1000000")
    max_emb_src = ck.typed(lim, "limits", "max_embryonic_per_source", int, 256, lambda v: 1 <= v <= 1_000_000,
                           "must be between 1 and 1000000")
    opens = ck.typed(lim, "limits", "server_opens_per_second", (int, float), 5000.0, lambda v: 0 < v <= 1e7,
                     "must be > 0 and <= 10000000")
    opens_src = ck.typed(lim, "limits", "server_opens_per_second_per_source", (int, float), 1000.0,
                         lambda v: 0 < v <= 1e7, "must be > 0 and <= 10000000")
    drain = ck.typed(lim, "limits", "drain_timeout", (int, float), 10.0, lambda v: 0 <= v <= 86400,
                     "must be >= 0 and <= 86400 seconds (0: reset at once)")

    ctl = ck.table(data, "control", {"socket": 1})
    default_sock = default_control_socket(instance)
    csock = ck.typed(ctl, "control", "socket", str, default_sock,
                     lambda v: v == "" or (v.startswith("/") and len(v.encode()) < 108),
                     "an absolute path shorter than 108 bytes, or \"\" for none")
    met = ck.table(data, "metrics", {"listen": 1})
    mlisten = ck.typed(met, "metrics", "listen", str, None, _listen_ok,
                       "\"host:port\" (IPv6 as \"[addr]:port\", port 0-65535), or \"\" for off")
    if mlisten == "":
        mlisten = None
    lg = ck.table(data, "log", {"connections": 1, "format": 1})
    log_conns = ck.typed(lg, "log", "connections", bool, True)
    log_format = ck.typed(lg, "log", "format", str, "text", lambda v: v in LOG_FORMATS,
                          f"one of {', '.join(LOG_FORMATS)}")

    ru = ck.table(data, "rules", {"backend": 1, "mark": 1, "install": 1})
    backend = ck.typed(ru, "rules", "backend", str, "auto", lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}")
    mark = ck.typed(ru, "rules", "mark", int, 0x5350, lambda v: 0 < v < 2 ** 32, "must be 1 .. 2**32-1")
    install = ck.typed(ru, "rules", "install", bool, True)

    cap = ck.table(data, "capture", {"block_size": 1, "block_count": 1, "retire_ms": 1, "hold_us": 1, "gso": 1, "pcap": 1,
                                     "pcap_max_bytes": 1, "pcap_files": 1, "own_wait": 1})
    bsize = ck.typed(cap, "capture", "block_size", int, 1 << 18,
                     lambda v: (1 << 17) <= v <= (1 << 24) and v % 4096 == 0,
                     "must be a multiple of 4096 between 128 KiB and 16 MiB")
    bcount = ck.typed(cap, "capture", "block_count", int, 64, lambda v: 2 <= v <= 4096, "must be 2 .. 4096")
    retire = ck.typed(cap, "capture", "retire_ms", int, 1, lambda v: 1 <= v <= 1000, "must be 1 .. 1000")
    hold = ck.typed(cap, "capture", "hold_us", int, None, lambda v: 0 <= v <= 20000, "must be 0 .. 20000")
    gso = ck.typed(cap, "capture", "gso", bool, True)
    own_wait = ck.typed(cap, "capture", "own_wait", bool, True)
    pcap, pcap_max, pcap_files = _check_pcap(ck, cap)

    wan = ck.table(data, "wan", {"leg": 1, "interface": 1, "rate": 1, "rtt": 1, "congestion": 1, "loss_type": 1,
                                 "min_rate": 1, "vegas": 1, "outage_rtos": 1, "outage_probe_interval": 1,
                                 **WAN_SCPS_KEYS})
    wan_leg = ck.typed(wan, "wan", "leg", str, None, lambda v: v in WAN_LEGS, f"one of {', '.join(WAN_LEGS)}")
    wan_if = ck.typed(wan, "wan", "interface", str, None)
    if wan_if is not None:
        # the leg is the side whose interfaces hold this name
        by_if = [s for s in ("client", "server") if wan_if in side[s]]
        if "leg" in wan:
            ck.bad("wan.interface", "give either wan.leg or wan.interface, not both")
        elif not by_if:
            ck.bad("wan.interface", f"{wan_if!r} is not one of interfaces.client or interfaces.server")
        else:
            wan_leg = by_if[0]
    wan_rate = ck.typed(wan, "wan", "rate", int, None, lambda v: 8000 <= v <= 10 ** 12,
                        "bits/s on IP bytes, between 8000 and 10**12")
    wan_rtt = ck.typed(wan, "wan", "rtt", (int, float), 0.6, lambda v: 0 < v <= 10,
                       "seconds, > 0 and <= 10")
    if hold is None:
        # Wake-up coalescing by default only where a long link makes its delay
        # negligible: 1 % of the [wan] RTT, at most 4 ms (6 ms at 600 ms -> 4 ms).
        hold = min(4000, int(float(wan_rtt) * 10_000)) if wan_leg is not None else 0
    wan_cc = ck.typed(wan, "wan", "congestion", str, "rate", lambda v: v in WAN_CONGESTION,
                      f"one of {', '.join(WAN_CONGESTION)}")
    wan_loss = ck.typed(wan, "wan", "loss_type", str, "corruption", lambda v: v in WAN_LOSS_TYPES,
                        f"one of {', '.join(WAN_LOSS_TYPES)}")
    wan_min = ck.typed(wan, "wan", "min_rate", int, None,
                       lambda v: 8000 <= v <= (wan_rate if wan_rate is not None else 10 ** 12),
                       "bits/s on IP bytes, at least 8000 and at most wan.rate")
    if wan_min is not None and wan_cc != "rate":
        ck.bad("wan.min_rate", f"only with wan.congestion = \"rate\" (not {wan_cc!r})")
    wan_vegas: Dict[str, float] = {}
    if "vegas" in wan:
        vt = wan["vegas"]
        if not isinstance(vt, dict):
            ck.bad("wan.vegas", "must be a table, e.g. { alpha = 3, beta = 5, gamma = 4 }")
            vt = {}
        for k in vt:
            if k not in ("alpha", "beta", "gamma"):
                ck.bad(f"wan.vegas.{k}", "unknown key (known: alpha, beta, gamma)")
                continue
            v = ck.typed(vt, "wan.vegas", k, (int, float), None, lambda x: 0 < x <= 1000,
                         "segments, > 0 and <= 1000")
            if v is not None:
                wan_vegas[k] = float(v)
        if wan_cc != "vegas":
            ck.bad("wan.vegas", f"only with wan.congestion = \"vegas\" (not {wan_cc!r})")
        if wan_vegas.get("alpha", 3.0) > wan_vegas.get("beta", 5.0):
            ck.bad("wan.vegas", "alpha must not exceed beta (Vegas keeps alpha..beta segments queued)")
    wan_outage = ck.typed(wan, "wan", "outage_rtos", int, 3, lambda v: 0 <= v <= 100,
                          "retransmission timeouts in a row, 0 .. 100 (0: no outage handling)")
    wan_probe = ck.typed(wan, "wan", "outage_probe_interval", (int, float), 1.0, lambda v: 0.01 <= v <= 600,
                         "seconds, 0.01 .. 600")
    if wan and (wan_leg is None) != (wan_rate is None):
        if "leg" not in wan and "interface" not in wan:
            ck.bad("wan.leg", "missing: which leg crosses the long link, \"client\" or \"server\" "
                              "(or wan.interface)")
        if "rate" not in wan:
            ck.bad("wan.rate", "missing: the long link's rate in bits/s (IP bytes)")
    wan_scps, scps_ttl = _check_wan_scps(ck, wan)
    if wan_scps and wan_scps["compression"] and workers > 1:
        # a compressed header has no ports: the workers' flow hash cannot find the connection
        ck.bad("wan.scps_compression", "needs pep.workers = 1 (compressed headers carry no ports to "
                                       "spread over workers)")
    zero_rtt, tfo_key, zero_rtt_wait = _check_wan_zero_rtt(ck, wan)
    # docs/scps.md "First-flight redundancy": on by default where a short request is
    # meant to cost one round trip (zero_rtt), so that one loss does not add another
    ffr = ck.typed(wan, "wan", "first_flight_redundancy", int,
                   FIRST_FLIGHT_REDUNDANCY_DEFAULT if zero_rtt else 0, lambda v: 0 <= v <= 1 << 30,
                   "bytes at the start of each long-leg connection sent twice, 0 (off) .. 1073741824")
    wan_keepalive = ck.typed(wan, "wan", "keepalive", (int, float), 15.0, lambda v: v == 0 or 1 <= v <= 7200,
                             "seconds, 0 (off) or 1 .. 7200")
    if server_initiated is None:
        # a link with a box at each end carries connections opened from either side
        server_initiated = bool(wan)

    rs = ck.table(data, "resets", {"rate": 1, "burst": 1, "per_source_rate": 1, "per_source_burst": 1,
                                   "recent_close_time": 1})
    rst_rate = ck.typed(rs, "resets", "rate", (int, float), 200.0, lambda v: 0 <= v <= 1e6,
                        "RSTs per second, 0 .. 1000000 (0: never answer unknown flows)")
    rst_burst = ck.typed(rs, "resets", "burst", int, 50, lambda v: 1 <= v <= 1_000_000, "must be 1 .. 1000000")
    rst_src_rate = ck.typed(rs, "resets", "per_source_rate", (int, float), 10.0, lambda v: 0 <= v <= 1e6,
                            "RSTs per second to one address, 0 .. 1000000")
    rst_src_burst = ck.typed(rs, "resets", "per_source_burst", int, 10, lambda v: 1 <= v <= 1_000_000,
                             "must be 1 .. 1000000")
    recent = ck.typed(rs, "resets", "recent_close_time", (int, float), 10.0, lambda v: 0 <= v <= 600,
                      "seconds, 0 .. 600 (0: forget a flow as soon as it ends)")

    tcp_client = _check_tcp_leg(ck, data, "client")
    tcp_server = _check_tcp_leg(ck, data, "server")
    if wan_leg is not None and wan_rate is not None:
        # the long leg's defaults, under whatever [tcp.<leg>] sets explicitly
        explicit = tcp_client if wan_leg == "client" else tcp_server
        merged = {**wan_leg_settings(wan_rate, float(wan_rtt), f"wan{instance}", congestion=wan_cc,
                                     loss_type=wan_loss, min_rate=wan_min, vegas=wan_vegas,
                                     outage_rtos=wan_outage, outage_probe_interval=float(wan_probe),
                                     keepalive_s=float(wan_keepalive)),
                  **explicit}
        if ffr:
            merged.setdefault("first_flight_redundancy", ffr)
        # a pacing deadline is served up to one grid step late (capture.hold_us: the
        # dispatcher's loop wakes on that grid): made up in full if the slack is twice
        # it (the engine's default, 8 ms, is that for the default grid of 4 ms)
        if 2 * hold > 8000:
            merged.setdefault("pace_slack_us", 2 * hold)
        if zero_rtt:
            # RFC 7413 with a shared key: the near box's SYN carries the cookie and the
            # client's first bytes, the far box accepts them (one config for both roles)
            merged.update(tfo_key=tfo_key, tfo_client=True, tfo_server=True)
            # the far box answers before the handshake's ACK, up to the window a box on
            # this link is configured with (its receive buffer; docs/scps.md "Zero-RTT")
            merged.setdefault("tfo_synrcvd_send", merged["rcv_buf"])
        try:
            from stackpep.tcp.config import TcpConfig  # type: ignore
            TcpConfig(**merged)
        except ImportError:
            pass
        except (TypeError, ValueError) as exc:
            ck.bad(f"tcp.{wan_leg}", f"engine rejected the settings with [wan]: {exc}")
        if wan_leg == "client":
            tcp_client = merged
        else:
            tcp_server = merged

    if ck.problems:
        return ck.problems
    return PepConfig(
        client_interfaces=tuple(side["client"]), server_interfaces=tuple(side["server"]),
        prefixes=tuple(prefixes), ports=ports, exclude_local=exclude_local, instance=instance,
        role=role, log_level=log_level, workers=workers, handshake_mode=hmode, handshake_timeout=float(htimeout),
        idle_timeout=float(idle), max_connections=maxc, max_embryonic=max_emb, max_embryonic_per_source=max_emb_src,
        server_opens_per_second=float(opens), server_opens_per_second_per_source=float(opens_src), relay_buffer=relay,
        rules_backend=backend,
        mark=mark, install_rules=install, block_size=bsize, block_count=bcount, retire_ms=retire, hold_us=hold, gso=gso, own_wait=own_wait,
        pcap=pcap, pcap_max_bytes=pcap_max, pcap_files=pcap_files,
        tcp_client=tcp_client, tcp_server=tcp_server, wan_leg=wan_leg, wan_rate=wan_rate,
        wan_rtt=float(wan_rtt), wan_scps=wan_scps if wan_leg is not None else None,
        wan_scps_refusal_ttl=float(scps_ttl), server_initiated=server_initiated,
        wan_zero_rtt=zero_rtt and wan_leg is not None, wan_zero_rtt_wait=zero_rtt_wait, reset_rate=float(rst_rate), reset_burst=rst_burst,
        reset_per_source_rate=float(rst_src_rate), reset_per_source_burst=rst_src_burst,
        recent_close_time=float(recent), drain_timeout=float(drain), control_socket=csock, metrics_listen=mlisten,
        log_connections=log_conns, log_format=log_format, source=source, lines=dict(lines),
    )


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def check_file(path) -> Tuple[Optional[PepConfig], List[Problem]]:
    """(config, []) when valid, else (None, every problem found)."""
    p = Path(path)
    src = str(path)
    try:
        text = p.read_text()
    except OSError as exc:
        return None, [Problem(src, None, "", f"cannot read: {exc.strerror or exc}")]
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        msg = getattr(exc, "msg", None) or str(exc)
        if line is None:
            m = _TOML_POS.search(str(exc))
            line = int(m.group(1)) if m else None
        msg = _TOML_POS.sub("", msg).strip()
        return None, [Problem(src, line, "", f"TOML syntax error: {msg}")]
    res = check_dict(data, src, key_lines(text))
    if isinstance(res, list):
        return None, res
    return res, []


def load(path) -> PepConfig:
    cfg, problems = check_file(path)
    if problems:
        raise ConfigError(problems)
    assert cfg is not None
    return cfg
