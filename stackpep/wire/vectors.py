"""Wire vector files (vectors/wire/**/*.toml): load, write, run.

One vector a file, TOML (format in docs/wire.md):

    description = "Linux SYN, IPv4, MSS/SACK-perm/TS/WS"
    source = "captured by vectors/wire/capture.py (Linux 6.18, netns, tcpdump -w)"
    layer = "eth"          # the bytes start with: "eth" (Ethernet II) or "ip"
    parser = "ip_tcp"      # "ip_tcp" (parse_ip_tcp) or "icmp_ptb" (parse_icmp_ptb)
    verify_csum = 1        # 0 no check, 1 check, 2 checksum-partial frame
    rebuild = true         # emit_ip_tcp of the parsed segment gives the same IP bytes
    hex = '''
    45 00 00 3c ...        # 16 bytes a line; whitespace ignored
    '''
    [expect]               # fields of the parsed segment ...
    sport = 43210
    # ... or the rejection:
    # error = "IntegrityError"
    # counter = "tcp_opt_len"
"""
from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from stackpep._fast import wire as _w

def default_dir() -> Path:
    """$STACKPEP_VECTORS, else vectors/wire of the source tree this module sits in,
    else ./vectors/wire (an installed wheel carries no vectors)."""
    env = os.environ.get("STACKPEP_VECTORS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2] / "vectors" / "wire"
    return here if here.is_dir() else Path.cwd() / "vectors" / "wire"


VECTOR_DIR = default_dir()

CSUM_NAMES = {0: "UNCHECKED", 1: "GOOD", 2: "PARTIAL", 3: "BAD"}


@dataclass
class Vector:
    name: str
    description: str
    source: str
    layer: str
    parser: str
    verify_csum: int
    data: bytes
    expect: Dict[str, Any]
    rebuild: bool = False
    path: Optional[Path] = None

    @property
    def error(self) -> Optional[str]:
        return self.expect.get("error")


@dataclass
class Outcome:
    """What the parser did with a vector: the error, or the fields (same names as [expect])."""

    error: Optional[str] = None
    counter: Optional[str] = None
    message: str = ""
    fields: Dict[str, Any] = field(default_factory=dict)
    ip_bytes: bytes = b""
    segment: Any = None


def _hex(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        lines.append(" ".join(f"{b:02x}" for b in chunk))
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r}")


def dump(path: Path, *, description: str, source: str, layer: str, parser: str, verify_csum: int,
         data: bytes, expect: Dict[str, Any], rebuild: bool = False, comment: str = "") -> None:
    out = []
    for line in comment.strip().splitlines():
        out.append(f"# {line}")
    out.append(f"description = {_toml_value(description)}")
    out.append(f"source = {_toml_value(source)}")
    out.append(f"layer = {_toml_value(layer)}")
    out.append(f"parser = {_toml_value(parser)}")
    out.append(f"verify_csum = {verify_csum}")
    if rebuild:
        out.append("rebuild = true")
    out.append(f"length = {len(data)}")
    out.append("hex = '''")
    out.append(_hex(data))
    out.append("'''")
    out.append("")
    out.append("[expect]")
    for k, v in expect.items():
        out.append(f"{k} = {_toml_value(v)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def load(path: Path, root: Optional[Path] = None) -> Vector:
    path = Path(path)
    root = Path(root) if root is not None else VECTOR_DIR
    doc = tomllib.loads(path.read_text())
    data = bytes.fromhex("".join(doc["hex"].split()))
    if "length" in doc and doc["length"] != len(data):
        raise ValueError(f"{path}: length {doc['length']} but hex holds {len(data)} bytes")
    try:
        name = str(path.resolve().relative_to(root.resolve()).with_suffix(""))
    except ValueError:
        name = path.stem
    return Vector(
        name=name, description=doc["description"], source=doc["source"], layer=doc["layer"], parser=doc["parser"],
        verify_csum=doc.get("verify_csum", 1), data=data, expect=doc.get("expect", {}),
        rebuild=doc.get("rebuild", False), path=path,
    )


def load_all(root: Optional[Path] = None) -> List[Vector]:
    root = Path(root) if root is not None else VECTOR_DIR
    return [load(p, root) for p in sorted(root.rglob("*.toml"))]


def _addr(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def segment_fields(s) -> Dict[str, Any]:
    """The [expect] field names and values of a parsed Segment."""
    f: Dict[str, Any] = dict(
        ip_version=s.ip_version, src=_addr(s.src), dst=_addr(s.dst), tos=s.tos, ttl=s.ttl,
        sport=s.sport, dport=s.dport, seq=s.seq, ack=s.ack, flags=s.flags, window=s.window,
        urg_ptr=s.urg_ptr, tcp_hdr_len=s.tcp_hdr_len, ip_hdr_len=s.ip_hdr_len, payload_len=s.payload_len,
        csum_status=CSUM_NAMES[s.csum_status],
        mss=s.mss or 0, wscale=-1 if s.wscale is None else s.wscale, sack_perm=s.sack_perm,
        ts=list(s.ts) if s.ts else [], sack=[list(b) for b in s.sack],
        record_boundary=s.record_boundary, corruption_experienced=s.corruption_experienced,
        unknown=[[k, d.hex()] for k, d in s.unknown_options],
    )
    if s.ip_version == 4:
        f["ip_ident"] = s.ip_ident
        f["ip_df"] = s.ip_df
    else:
        f["flow_label"] = s.flow_label
    if s.scps is not None:
        f["scps"] = dict(bitmap=s.scps[0], connection_id=s.scps[1], binding_space=s.scps[2].hex())
        if s.scps[0] is None:                      # extended option without the 4-byte base form
            f["scps"] = dict(binding_space=s.scps[2].hex())
    if s.snack is not None:
        f["snack"] = list(s.snack)
    f["snack_holes"] = [list(h) for h in s.snack_holes]
    if s.fast_open is not None:
        f["fast_open"] = s.fast_open.hex()
    f["flags_hi"] = s.flags_hi
    f["final_dst"] = _addr(s.final_dst)
    return f


def run(v: Vector) -> Outcome:
    """Run a vector through the C parsers (counters move as they would in use)."""
    try:
        if v.parser == "ip_tcp":
            if v.layer == "eth":
                tci, s = _w.parse_frame(v.data, v.verify_csum)
                ip_bytes = bytes(memoryview(v.data)[_w.EthernetFrame(v.data).header_len:])
            else:
                tci, s = None, _w.parse_packet(v.data, v.verify_csum)
                ip_bytes = v.data
            out = Outcome(fields=segment_fields(s), segment=s, ip_bytes=ip_bytes)
            if v.layer == "eth":
                out.fields["vlan_tci"] = -1 if tci is None else tci
            return out
        if v.parser == "icmp_ptb":
            info = _w.parse_ptb_ex(v.data, v.verify_csum)
            q = info.quoted
            f = dict(mtu=info.mtu, mtu_field=info.mtu_field, mtu_estimated=info.mtu_estimated,
                     quoted_total_len=info.quoted_total_len, ip_version=q.ip_version, src=_addr(q.src),
                     dst=_addr(q.dst), sport=q.sport, dport=q.dport, seq=q.seq, tcp_hdr_len=q.tcp_hdr_len)
            return Outcome(fields=f, segment=q)
        raise ValueError(f"unknown parser {v.parser!r}")
    except _w.WireError as e:
        return Outcome(error=type(e).__name__, counter=e.counter, message=str(e))


def mismatches(v: Vector, out: Outcome) -> List[str]:
    """Differences between a vector's [expect] and what the parser did (empty = pass)."""
    exp = dict(v.expect)
    if "error" in exp:
        got = (out.error, out.counter)
        want = (exp["error"], exp.get("counter"))
        return [] if got == want else [f"expected {want}, got {got} ({out.message or 'parsed'})"]
    if out.error:
        return [f"expected a parse, got {out.error}/{out.counter}: {out.message}"]
    bad = []
    for k, want in exp.items():
        got = out.fields.get(k, "<absent>")
        if got != want:
            bad.append(f"{k}: expected {want!r}, got {got!r}")
    return bad
