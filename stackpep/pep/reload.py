"""What a configuration reload (SIGHUP) may change on a running box.

Live: limits, timeouts, handshake mode, logging, metrics, engine settings --
all for connections opened from now on; established connections keep what
they started with and are never dropped by a reload.

Not live (the reload is refused as a whole, each key named in the log, and the
old configuration kept): what the capture rings, the netfilter rules or the
shared link budget were built from.  The intercepted prefixes and ports are in
the rules: changing them means replacing the rules, during which an
established connection's packets could pass the box -- a restart says so
honestly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple

from stackpep.pep.config import PepConfig

#: PepConfig field -> (TOML key, live?, why not, if not)
KEYS: Dict[str, Tuple[str, bool, str]] = {
    "client_interfaces": ("interfaces.client", False, "the capture rings are bound to the interfaces"),
    "server_interfaces": ("interfaces.server", False, "the capture rings are bound to the interfaces"),
    "prefixes": ("intercept.prefixes", False, "the netfilter rules select them"),
    "ports": ("intercept.ports", False, "the netfilter rules select them"),
    "exclude_local": ("intercept.exclude_local", False, "the netfilter rules select them"),
    "instance": ("pep.instance", False, "it names the rules and the control socket"),
    "role": ("pep.role", False, "the role is fixed at start"),
    "log_level": ("pep.log_level", True, ""),
    "workers": ("pep.workers", False, "the worker processes and their capture rings are started"),
    "handshake_mode": ("handshake.mode", True, ""),
    "handshake_timeout": ("handshake.timeout", True, ""),
    "idle_timeout": ("limits.idle_timeout", True, ""),
    "max_connections": ("limits.max_connections", True, ""),
    "max_embryonic": ("limits.max_embryonic", True, ""),
    "max_embryonic_per_source": ("limits.max_embryonic_per_source", True, ""),
    "server_opens_per_second": ("limits.server_opens_per_second", True, ""),
    "server_opens_per_second_per_source": ("limits.server_opens_per_second_per_source", True, ""),
    "relay_buffer": ("limits.relay_buffer", True, ""),
    "drain_timeout": ("limits.drain_timeout", True, ""),
    "rules_backend": ("rules.backend", False, "the rules are installed"),
    "mark": ("rules.mark", False, "the rules and the capture sockets carry it"),
    "install_rules": ("rules.install", False, "the rules are installed (or not)"),
    "block_size": ("capture.block_size", False, "the capture rings are mapped"),
    "block_count": ("capture.block_count", False, "the capture rings are mapped"),
    "retire_ms": ("capture.retire_ms", False, "the capture rings are mapped"),
    "hold_us": ("capture.hold_us", False, "the capture ports are open"),
    "gso": ("capture.gso", False, "the transmit sockets are open"),
    "own_wait": ("capture.own_wait", False, "the box's loop chose how it waits when it started"),
    "pcap": ("capture.pcap", False, "the ports are wrapped by the packet capture when they open"),
    "pcap_max_bytes": ("capture.pcap_max_bytes", False, "the capture files are open"),
    "pcap_files": ("capture.pcap_files", False, "the capture files are open"),
    "tcp_client": ("tcp.client", True, ""),
    "tcp_server": ("tcp.server", True, ""),
    "wan_leg": ("wan.leg", False, "the long link's rate is one budget shared by open connections"),
    "wan_rate": ("wan.rate", False, "the long link's rate is one budget shared by open connections"),
    "wan_rtt": ("wan.rtt", False, "the long link's buffers are sized from it"),
    "wan_scps": ("wan.scps", True, ""),
    "wan_scps_refusal_ttl": ("wan.scps_refusal_ttl", False, "the refusal cache is made with it"),
    "server_initiated": ("intercept.server_initiated", True, ""),
    "wan_zero_rtt": ("wan.zero_rtt", True, ""),
    "wan_zero_rtt_wait": ("wan.zero_rtt_wait", True, ""),
    "reset_rate": ("resets.rate", True, ""),
    "reset_burst": ("resets.burst", True, ""),
    "reset_per_source_rate": ("resets.per_source_rate", True, ""),
    "reset_per_source_burst": ("resets.per_source_burst", True, ""),
    "recent_close_time": ("resets.recent_close_time", True, ""),
    "control_socket": ("control.socket", False, "the control socket is open"),
    "metrics_listen": ("metrics.listen", True, ""),
    "log_connections": ("log.connections", True, ""),
    "log_format": ("log.format", True, ""),
}
_IGNORED = {"source", "lines", "worker_slot"}


@dataclass(frozen=True)
class ReloadResult:
    applied: Tuple[str, ...]  # TOML keys that changed and now hold the new value
    refused: Tuple[Tuple[str, str], ...]  # (TOML key, why it cannot change live)

    @property
    def ok(self) -> bool:
        return not self.refused


def compare(old: PepConfig, new: PepConfig) -> ReloadResult:
    """The keys that differ, split into what may change live and what may not."""
    applied, refused = [], []
    for f in dataclasses.fields(PepConfig):
        if f.name in _IGNORED or getattr(old, f.name) == getattr(new, f.name):
            continue
        key, live, why = KEYS.get(f.name, (f.name, False, "not known to reload"))
        if live:
            applied.append(key)
        else:
            refused.append((key, why))
    if any(k.startswith("wan.") for k, _ in refused):
        # tcp.<leg> holds [wan]'s settings merged in: say it once, under wan.*
        applied = [k for k in applied if not k.startswith("tcp.")]
    return ReloadResult(tuple(applied), tuple(refused))
