"""One stackpep box against the SCPS-TP reference gateway (MITRE's SCPS RI 1.1.146,
GitHub `Linjay/SCPS_Project`) across the emulated GEO link (issue 10, "Peers and roles";
docs/scps.md "Interoperability with the reference gateway").

    stackpep-a:     client ─ stackpep ─ link (emulator) ─ ref-gw ─ server
    stackpep-b:     client ─ ref-gw ─ link (emulator) ─ stackpep ─ server
    stackpep-pair / ref-pair: the same link with two stackpep boxes / two gateways

The reference gateway is built outside this repository (its source carries a
restrictive notice: it is run here as a black-box peer, never copied) by
scripts/build-scps-reference-gateway.sh; pass the build directory (the one holding
apps/gateway).  Its Linux tap mode bridges each of its two interfaces with a tap
device it reads (README.GATEWAY.LINUX.TAP), so it is a bump in the wire: the host on
its LAN side shares the link's subnet.  It calls `brctl`, which this machine lacks: a
shim on iproute2 is put first on its PATH.

    sudo .venv/bin/python benchmarks/interop_reference_gateway.py --gateway /tmp/scpsgw32 --out /tmp/interop

For each pairing and loss: N 100 KB curl fetches (new connections) and one
sha256-checked transfer, up then down (twobox SHA_SERVER/SHA_CLIENTS); captures of
both link ports (`la` towards X, `lb` towards Y); what tshark reads in `la`: option 20
in every SYN / SYN-ACK, option 20 anywhere else, SNACKs, retransmissions and RSTs per
side.  Writes results.json and prints a Markdown summary.  Not a test: CI cannot
fetch the gateway (tests/test_interop_reference_gateway.py runs one cell per role
when STACKPEP_SCPS_GATEWAY is set).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from stackpep.testbed import twobox
from stackpep.testbed.emulator import DirectionParams
from stackpep.testbed.netns import Network
from stackpep.testbed.topology import LinkSpec, python_command, python_env, set_offloads

MTU = 1500
# Role stackpep-a: the client's subnet is behind stackpep, the server sits on the
# link's subnet behind the reference gateway (a bridge).  Role stackpep-b: mirrored.
CLIENT_NET, LINK_NET, SERVER_NET = "198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"
BRCTL_SHIM = """#!/bin/sh
# brctl (bridge-utils) on iproute2, for the SCPS reference gateway's tap mode
case "$1" in
  addbr) exec ip link add "$2" type bridge ;;
  delbr) exec ip link del "$2" ;;
  addif) exec ip link set dev "$3" master "$2" ;;
  delif) exec ip link set dev "$3" nomaster ;;
  stp) exec ip link set dev "$2" type bridge stp_state 0 ;;
  *) echo "brctl shim: unsupported $*" >&2; exit 1 ;;
esac
"""

# The reference gateway's resource file (names from its source/rs_config.c): A = the
# LAN side (plain TCP), B = the satellite side (SCPS-TP, rate control at the link rate).
RFILE = """# SCPS RI gateway resource file (written by benchmarks/interop_reference_gateway.py)
AIF_NAME\t{aif}
AIF_TAP_NAME\ttap0
AIF_BUF\t{buf}
AIF_RBUF\t{buf}
AIF_RATE\t1000000000
AIF_CC\t1
AIF_MTU\t1500
BIF_NAME\t{bif}
BIF_TAP_NAME\ttap1
BIF_BUF\t{buf}
BIF_RBUF\t{buf}
BIF_RATE\t{rate}
BIF_CC\t{cc}
BIF_MTU\t1500
BIF_SNACK\t1
BIF_MINRTO\t{minrto_us}
C_OTHER_PROTO_QLEN\t1000
C_OTHER_PROTO_NON_IP\t1
C_OTHER_PROTO_XRATE_DROP\t1
"""

BOX_TOML = """\
[pep]
log_level = "info"
workers = 1
[interfaces]
client = ["{client_if}"]
server = ["{server_if}"]
[intercept]
prefixes = ["198.18.0.0/15"]
[control]
socket = ""
[limits]
drain_timeout = 0
[wan]
interface = "wan0"
rate = {rate}
rtt = {rtt}
scps = true
scps_snack = true
"""

HTTP_SERVER = r"""
import http.server, os, sys
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H)
print("LISTENING", flush=True)
s.serve_forever()
"""


class Bed:
    """client, X, link, Y, server; X and Y are each "stackpep" (a router) or "ref" (the
    reference gateway, a bridge).  A role names the pair: stackpep-a = stackpep X with
    ref Y, stackpep-b = ref X with stackpep Y; stackpep-pair and ref-pair side by side."""

    PAIRS = {"stackpep-a": ("stackpep", "ref"), "stackpep-b": ("ref", "stackpep"),
             "stackpep-pair": ("stackpep", "stackpep"), "ref-pair": ("ref", "ref")}

    def __init__(self, role: str, gwdir: Path, workdir: Path, rate: int, rtt_ms: float, loss: float,
                 cc: int):
        self.role, self.gwdir, self.workdir = role, gwdir, workdir
        self.kinds = self.PAIRS[role]
        self.rate, self.rtt_ms, self.loss, self.cc = rate, rtt_ms, loss, cc
        self.net = Network()
        self.procs: List[subprocess.Popen] = []
        self.emulator: Optional[subprocess.Popen] = None
        self.snack_repeat: Optional[int] = None  # [wan] scps_snack_repeat of the stackpep boxes

    # client ─cl0─lan0─ X ─wan0─la─ link ─lb─wan0─ Y ─lan0─sv0─ server
    def build(self) -> "Bed":
        net = self.net
        kx, ky = self.kinds
        self.client = net.add_host("client")
        self.x = net.add_host("x", forwarding=True)
        self.link = net.add_host("link")
        self.y = net.add_host("y", forwarding=True)
        self.server = net.add_host("server")
        self.link.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        # a stackpep X routes the client's subnet; behind a reference gateway (a
        # bridge) the end host sits on the link's subnet
        self.client_addr = "198.18.1.2" if kx == "stackpep" else "198.18.2.3"
        self.server_addr = "198.18.3.2" if ky == "stackpep" else "198.18.2.4"
        net.link(self.client, self.x, [f"{self.client_addr}/24"], ["198.18.1.1/24"] if kx == "stackpep" else [],
                 a_ifname="cl0", b_ifname="lan0", mtu=MTU)
        net.link(self.x, self.link, ["198.18.2.1/24"] if kx == "stackpep" else [], [], a_ifname="wan0",
                 b_ifname="la", mtu=MTU)
        net.link(self.link, self.y, [], ["198.18.2.2/24"] if ky == "stackpep" else [], a_ifname="lb",
                 b_ifname="wan0", mtu=MTU)
        net.link(self.y, self.server, ["198.18.3.1/24"] if ky == "stackpep" else [], [f"{self.server_addr}/24"],
                 a_ifname="lan0", b_ifname="sv0", mtu=MTU)
        if kx == "stackpep":
            self.client.run(["ip", "route", "add", "default", "via", "198.18.1.1"])
        elif ky == "stackpep":
            self.client.run(["ip", "route", "add", SERVER_NET, "via", "198.18.2.2"])
        if kx == ky == "stackpep":  # two routers: each reaches the far subnet through the other
            self.x.run(["ip", "route", "add", SERVER_NET, "via", "198.18.2.2"])
            self.y.run(["ip", "route", "add", CLIENT_NET, "via", "198.18.2.1"])
        if ky == "stackpep":
            self.server.run(["ip", "route", "add", "default", "via", "198.18.3.1"])
        elif kx == "stackpep":
            self.server.run(["ip", "route", "add", CLIENT_NET, "via", "198.18.2.1"])
        for host, ifs in ((self.client, ["cl0"]), (self.x, ["lan0", "wan0"]), (self.link, ["la", "lb"]),
                          (self.y, ["wan0", "lan0"]), (self.server, ["sv0"])):
            for ifname in ifs:
                set_offloads(host, ifname, on=False)
        for host in (self.client, self.server):
            host.sysctl("net.ipv4.tcp_rmem", "4096 131072 33554432")
            host.sysctl("net.ipv4.tcp_wmem", "4096 16384 33554432")
        return self

    def start_pair(self) -> None:
        for host, kind, side in ((self.x, self.kinds[0], "x"), (self.y, self.kinds[1], "y")):
            if kind == "ref":
                self.start_ref(host, side)
            else:
                self.start_box(host, side)

    def start_link(self) -> None:
        d = DirectionParams(delay_ms=self.rtt_ms / 2, rate_bps=self.rate, queue_ms=250, loss=self.loss)
        spec = LinkSpec(d, DirectionParams(**{**d.__dict__}), seed=7)
        ready = self.workdir / "emulator.ready"
        argv = python_command("stackpep.testbed.emulator", "--if-a", "la", "--if-b", "lb", *spec.argv(),
                              "--stats", str(self.workdir / "emulator-stats.json"), "--ready", str(ready))
        self.emulator = self.link.popen(argv, env=python_env(), stderr=open(self.workdir / "emulator.log", "ab"),
                                        cwd=str(self.workdir))
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.emulator.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("link emulator did not start; see emulator.log")
            time.sleep(0.05)

    def start_ref(self, host, side: str) -> None:
        shim = self.workdir / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "brctl").write_text(BRCTL_SHIM)
        (shim / "brctl").chmod(0o755)
        rundir = self.workdir / f"ref-{side}"  # the gateway reads ./rfile
        rundir.mkdir(exist_ok=True)
        rfile = rundir / "rfile"
        rfile.write_text(RFILE.format(aif="lan0", bif="wan0",
                                      buf=4 * self.rate * self.rtt_ms // 8000, rate=self.rate, cc=self.cc,
                                      minrto_us=int(self.rtt_ms * 1000)))
        env = dict(os.environ, PATH=f"{shim}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}")
        log = open(self.workdir / f"ref-gateway-{side}.log", "ab")
        # it reads ./rfile (its -f takes at most 31 characters); stdbuf: its log survives a kill
        p = host.popen(["stdbuf", "-oL", str(self.gwdir / "apps" / "gateway")], env=env, stdout=log,
                       stderr=subprocess.STDOUT, cwd=str(rundir))
        self.procs.append(p)
        deadline = time.monotonic() + 15
        while "master bif" not in host.run(["ip", "-o", "link", "show", "wan0"], check=False).stdout:
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"reference gateway did not come up (rc {p.poll()}); see ref-gateway.log")
            time.sleep(0.1)
        time.sleep(1.0)

    def start_box(self, host, side: str) -> None:
        cif, sif = ("lan0", "wan0") if side == "x" else ("wan0", "lan0")
        cfg = self.workdir / f"stackpep-{side}.toml"
        cfg.write_text(BOX_TOML.format(client_if=cif, server_if=sif, rate=self.rate, rtt=self.rtt_ms / 1000)
                       + (f"scps_snack_repeat = {self.snack_repeat}\n" if self.snack_repeat is not None else ""))
        self.stats = self.workdir / f"stackpep-{side}-stats.json"
        p = host.popen(python_command("stackpep", "run", "-c", str(cfg), "--stats-file", str(self.stats),
                                      "--stats-interval", "0.5"), stdout=subprocess.PIPE,
                       stderr=open(self.workdir / f"stackpep-{side}.log", "ab"), text=True, env=python_env(),
                       cwd=str(self.workdir))
        line = p.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"stackpep did not start: {line!r}; see stackpep.log")
        self.procs.append(p)

    def warm_up(self) -> None:
        deadline = time.monotonic() + 30
        while self.client.run(["ping", "-c", "1", "-W", "2", self.server_addr], check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no path from client to {self.server_addr}")

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # the gateway tears its bridges down on SIGINT
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            try:
                self.emulator.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait()
        self.net.close()


def fetches(bed: Bed, n: int, size: int, port: int = 8080) -> List[dict]:
    docroot = bed.workdir / "www"
    docroot.mkdir(exist_ok=True)
    (docroot / "f").write_bytes(os.urandom(size))
    srv = bed.server.popen([sys.executable, "-c", HTTP_SERVER, str(docroot), bed.server_addr, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bed.procs.append(srv)
    assert srv.stdout.readline().strip() == "LISTENING"
    out = []
    for _ in range(n):
        r = bed.client.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
                            "--max-time", "30", f"http://{bed.server_addr}:{port}/f"], check=False, timeout=40)
        parts = r.stdout.split()
        out.append({"rc": r.returncode, "code": parts[0] if parts else "", "bytes": int(parts[1]) if parts else 0,
                    "s": float(parts[2]) if len(parts) > 2 else None})
        time.sleep(0.5)
    srv.terminate()
    srv.wait()
    return out


def bulk(bed: Bed, size: int, port: int = 5201) -> dict:
    srv = twobox.serve(bed.server, bed.server_addr, port, 1, size)
    bed.procs.append(srv)
    t0 = time.monotonic()
    res = twobox.transfer(bed.client, bed.server_addr, port, 1, size, timeout=600)
    dt = time.monotonic() - t0
    srv.wait(timeout=10)
    return {"result": res[0], "seconds": round(dt, 2), "bytes_each_way": size,
            # both directions one after the other; the wall time covers both plus one handshake
            "mbit_both_ways": round(2 * size * 8 / dt / 1e6, 2)}


TSHARK_FIELDS = ["frame.number", "frame.time_relative", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
                 "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.reset", "tcp.window_size_value", "tcp.len",
                 "tcp.options.scps.vector", "tcp.options.scps.binding", "tcp.options.snack.offset",
                 "tcp.options.snack.size", "tcp.options.scpsrec", "tcp.option_kind", "tcp.analysis.retransmission"]


def analyse(pcap: Path, x_src: str) -> dict:
    """What tshark reads in the link capture: option 20 in each SYN / SYN-ACK, option 20
    anywhere else, SNACK options, retransmissions and RSTs, per side.

    Both PEPs are transparent (they send with the end hosts' addresses), so a segment
    is X's (the client-side PEP's) when its source is the client, otherwise Y's."""
    r = subprocess.run(["tshark", "-r", str(pcap), "-Y", "tcp", "-T", "fields", "-E", "separator=\t",
                        "-E", "occurrence=a", *sum((["-e", f] for f in TSHARK_FIELDS), [])],
                       capture_output=True, text=True, check=False)
    rows = [dict(zip(TSHARK_FIELDS, line.split("\t"))) for line in r.stdout.splitlines()]
    zero = {"x": 0, "y": 0}
    out = {"frames": len(rows), "syn": [], "snacks": dict(zero), "snack_holes": {"x": {}, "y": {}},
           "retransmissions": dict(zero), "rst": dict(zero), "scps_after_syn": 0, "rb": 0}
    for row in rows:
        who = "x" if row["ip.src"] == x_src else "y"
        if row["tcp.flags.syn"] in ("1", "True"):
            out["syn"].append({"t": row["frame.time_relative"], "from": who,
                               "flags": "SYN-ACK" if row["tcp.flags.ack"] in ("1", "True") else "SYN",
                               "win": row["tcp.window_size_value"], "scps_vector": row["tcp.options.scps.vector"],
                               "conn_id": row["tcp.options.scps.binding"], "kinds": row["tcp.option_kind"]})
        elif row["tcp.options.scps.vector"]:
            out["scps_after_syn"] += 1
        if row["tcp.options.snack.offset"]:
            out["snacks"][who] += 1
            # how often each hole (connection, ACK + offset) was reported
            key = f"{row['tcp.srcport']}>{row['tcp.dstport']}"
            holes = out["snack_holes"][who]
            holes[key] = holes.get(key, 0) + 1
        if row["tcp.analysis.retransmission"]:
            out["retransmissions"][who] += 1
        if row["tcp.flags.reset"] in ("1", "True"):
            out["rst"][who] += 1
        if row["tcp.options.scpsrec"]:
            out["rb"] += 1
    return out


def run_cell(args, role: str, loss: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"interop-{role}-{loss}-", dir=args.out))
    bed = Bed(role, Path(args.gateway), workdir, args.rate, args.rtt_ms, loss, args.cc)
    bed.snack_repeat = getattr(args, "snack_repeat", None)
    cell: Dict = {"role": role, "loss": loss, "workdir": str(workdir)}
    cap = cap_b = None
    try:
        bed.build()
        bed.start_link()
        bed.start_pair()
        bed.warm_up()
        # la: what X sent (before the link's loss) and what reached it; lb: the same for Y
        pcap, pcap_b = workdir / "link.pcap", workdir / "link-b.pcap"
        cap = twobox.capture(bed.link, "la", pcap, bpf="tcp")
        cap_b = twobox.capture(bed.link, "lb", pcap_b, bpf="tcp")
        cell["fetch_100k"] = fetches(bed, args.fetches, args.fetch_size)
        cell["bulk"] = bulk(bed, args.bulk_size)
        twobox.stop_capture(cap)
        twobox.stop_capture(cap_b)
        cap = None
        # "box" = X's segments (the client side), "ref" = Y's
        cell["link"] = analyse(pcap, bed.client_addr)
        for side in "xy":
            try:
                st = json.loads((workdir / f"stackpep-{side}-stats.json").read_text())
                cell[f"stackpep_{side}"] = {k: st.get(k) for k in ("scps_offered", "scps_peers", "scps_one_sided",
                                                                    "scps_fallbacks", "connections_opened",
                                                                    "ended_shutdown", "ended_error")}
            except (OSError, ValueError):
                pass
    except Exception as e:  # report the cell, run the next
        cell["error"] = f"{type(e).__name__}: {e}"
    finally:
        if cap is not None:
            twobox.stop_capture(cap)
            twobox.stop_capture(cap_b)
        bed.close()
    return cell


def summary(cells: List[dict]) -> str:
    out = ["| X ─ link ─ Y | loss | fetch 100 KB (s, each) | 10 MB up then down (sha256, s) | first SYN / SYN-ACK: from, option 20 vector, window | SNACKs X/Y | retransmissions X/Y | RST X/Y |",
           "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if "error" in c:
            out.append(f"| {c['role']} | {c['loss']:.0%} | error: {c['error']} | | | | | |")
            continue
        f = " ".join(f"{x['s']:.2f}" if x["code"] == "200" and x["bytes"] else f"FAIL({x['rc']},{x['code']})"
                     for x in c["fetch_100k"])
        b = c["bulk"]
        kinds = dict(zip("xy", Bed.PAIRS[c["role"]]))
        syns = "; ".join(f"{kinds[s['from']]} {s['flags']} {s['scps_vector'] or '-'} w{s['win']}"
                         for s in c["link"]["syn"][:2])
        lk = c["link"]
        out.append(f"| {' ─ '.join(Bed.PAIRS[c['role']])} | {c['loss']:.0%} | {f} | {b['result']} {b['seconds']} | "
                   f"{syns} | {lk['snacks']['x']}/{lk['snacks']['y']} | "
                   f"{lk['retransmissions']['x']}/{lk['retransmissions']['y']} | {lk['rst']['x']}/{lk['rst']['y']} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gateway", required=True, help="the reference gateway's build directory (holds apps/gateway)")
    ap.add_argument("--out", default="/tmp/interop-ref-gw")
    ap.add_argument("--roles", default="stackpep-a,stackpep-b",
                    help="comma-separated: stackpep-a, stackpep-b, stackpep-pair, ref-pair")
    ap.add_argument("--loss", default="0,0.01")
    ap.add_argument("--rate", type=int, default=20_000_000)
    ap.add_argument("--rtt-ms", type=float, default=600.0)
    ap.add_argument("--cc", type=int, default=0, help="reference gateway BIF_CC: 0 rate, 1 VJ, 2 Vegas")
    ap.add_argument("--snack-repeat", type=int, default=None,
                    help="[wan] scps_snack_repeat of the stackpep boxes (default: not set, the engine's 3)")
    ap.add_argument("--fetches", type=int, default=5)
    ap.add_argument("--fetch-size", type=int, default=100_000)
    ap.add_argument("--bulk-size", type=int, default=10_000_000)
    args = ap.parse_args(argv)
    if not (Path(args.gateway) / "apps" / "gateway").exists():
        ap.error(f"{args.gateway}/apps/gateway not found: build the reference gateway first (docs/scps.md)")
    if shutil.which("tshark") is None:
        ap.error("needs tshark")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cells = []
    for role in args.roles.split(","):
        for loss in (float(x) for x in args.loss.split(",")):
            cell = run_cell(args, role, loss)
            cells.append(cell)
            print(json.dumps(cell), flush=True)
    doc = {"command": ["python", "benchmarks/interop_reference_gateway.py", *(argv or sys.argv[1:])],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cells": cells}
    (Path(args.out) / "results.json").write_text(json.dumps(doc, indent=1))
    print(summary(cells))
    return 0 if all("error" not in c for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
