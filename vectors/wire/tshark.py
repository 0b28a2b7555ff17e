"""Expected fields for wire vectors, read by tshark's dissectors (independent of
stackpep's parser): used by capture.py and build.py when they write vectors."""
import subprocess
from typing import Any, Dict, List

FIELDS = [
    "frame.number", "ip.version", "ip.src", "ip.dst", "ip.dsfield", "ip.ttl", "ip.id", "ip.flags.df",
    "ipv6.src", "ipv6.dst", "ipv6.tclass", "ipv6.flow", "ipv6.hlim",
    "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.window_size_value",
    "tcp.urgent_pointer", "tcp.hdr_len", "tcp.len", "tcp.options.mss_val", "tcp.options.wscale.shift",
    "tcp.options.sack_perm", "tcp.options.timestamp.tsval", "tcp.options.timestamp.tsecr",
    "tcp.options.sack_le", "tcp.options.sack_re", "tcp.checksum.status",
    "tcp.options.scps.vector", "tcp.options.scps.binding", "tcp.options.scps.binding.id",
    "tcp.options.scps.binding.len",
    "tcp.options.snack.offset", "tcp.options.snack.size", "tcp.options.scpsrec", "tcp.options.scpscor",
    "vlan.id", "icmp.mtu", "icmpv6.mtu", "tcp.option_kind",
    "tcp.options.tfo.cookie", "tcp.options.tfo.request",
]


def _int(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s)


def dissect(pcap: str) -> List[Dict[str, str]]:
    cmd = ["tshark", "-n", "-r", pcap, "-o", "tcp.relative_sequence_numbers:FALSE",
           "-o", "tcp.check_checksum:TRUE", "-o", "tcp.analyze_sequence_numbers:FALSE",
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        cmd += ["-e", f]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = []
    for line in res.stdout.splitlines():
        vals = line.split("\t")
        vals += [""] * (len(FIELDS) - len(vals))
        rows.append(dict(zip(FIELDS, vals)))
    return rows


def expect_from(row: Dict[str, str]) -> Dict[str, Any]:
    """tshark's view of a TCP packet, in vector [expect] names (see stackpep.wire.vectors)."""
    v6 = bool(row["ipv6.src"])
    e: Dict[str, Any] = {}
    if v6:
        e.update(ip_version=6, src=row["ipv6.src"].split(",")[-1], dst=row["ipv6.dst"].split(",")[-1],
                 tos=_int(row["ipv6.tclass"]), ttl=int(row["ipv6.hlim"].split(",")[-1]),
                 flow_label=_int(row["ipv6.flow"]))
    else:
        e.update(ip_version=4, src=row["ip.src"].split(",")[-1], dst=row["ip.dst"].split(",")[-1],
                 tos=_int(row["ip.dsfield"].split(",")[-1]), ttl=int(row["ip.ttl"].split(",")[-1]),
                 ip_ident=_int(row["ip.id"].split(",")[-1]), ip_df=row["ip.flags.df"].split(",")[-1] in ("1", "True"))
    e.update(sport=int(row["tcp.srcport"]), dport=int(row["tcp.dstport"]), seq=int(row["tcp.seq_raw"]),
             ack=int(row["tcp.ack_raw"]), flags=_int(row["tcp.flags"]) & 0xff,
             window=int(row["tcp.window_size_value"]), urg_ptr=int(row["tcp.urgent_pointer"] or 0),
             tcp_hdr_len=int(row["tcp.hdr_len"]), payload_len=int(row["tcp.len"]))
    e["mss"] = int(row["tcp.options.mss_val"]) if row["tcp.options.mss_val"] else 0
    e["wscale"] = int(row["tcp.options.wscale.shift"]) if row["tcp.options.wscale.shift"] else -1
    e["sack_perm"] = bool(row["tcp.options.sack_perm"])
    e["ts"] = ([int(row["tcp.options.timestamp.tsval"]), int(row["tcp.options.timestamp.tsecr"])]
               if row["tcp.options.timestamp.tsval"] else [])
    if row["tcp.options.sack_le"]:
        le = [int(x) for x in row["tcp.options.sack_le"].split(",")]
        re_ = [int(x) for x in row["tcp.options.sack_re"].split(",")]
        e["sack"] = [list(p) for p in zip(le, re_)]
    else:
        e["sack"] = []
    if row["tcp.options.scps.vector"]:
        e["scps_bitmap"] = _int(row["tcp.options.scps.vector"])
        # tshark 4.0 names the connection id "tcp.options.scps.binding" and the
        # extended option's binding space "tcp.options.scps.binding.id"
        e["scps_conn_id"] = int(row["tcp.options.scps.binding"] or 0)
        e["scps_binding_ids"] = row["tcp.options.scps.binding.id"]
    if _int(row["tcp.flags"]) >> 8:
        e["flags_hi"] = _int(row["tcp.flags"]) >> 8      # AE (0x100) and the reserved bits
    if row["tcp.options.snack.offset"]:
        offs = [int(x) for x in row["tcp.options.snack.offset"].split(",")]
        sizes = [int(x) for x in row["tcp.options.snack.size"].split(",")]
        e["snack"] = [offs[0], sizes[0]]
        if len(offs) > 1:
            e["snack_holes"] = [list(h) for h in zip(offs, sizes)]
    kinds = [int(k) for k in row["tcp.option_kind"].split(",") if k]
    e["record_boundary"] = 22 in kinds           # tcp.options.scpsrec is FT_NONE: no value printed
    e["corruption_experienced"] = 23 in kinds
    if 34 in kinds:                              # TCP Fast Open (RFC 7413): b"" = a cookie request
        e["fast_open"] = row["tcp.options.tfo.cookie"].replace(":", "")
    return e
