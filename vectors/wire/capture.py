#!/usr/bin/env python3
"""Capture real Linux TCP packets in network namespaces and write them as vectors.

Run once as root from the repository root:
    PYTHONPATH=. /work/venv/bin/python vectors/wire/capture.py
It writes vectors/wire/captured/*.toml (the files are committed; this script is
kept so they can be remade).  Expected fields come from tshark's dissector, not
from stackpep.  Topology: client -- server on one veth pair, 198.18.0.0/24 and
fd00:1::/64.  The client drops every 20th segment of the bulk replies (iptables
statistic match inside its namespace) so its ACKs carry SACK blocks.
"""
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from tshark import dissect, expect_from  # noqa: E402

from stackpep.testbed.netns import Network  # noqa: E402
from stackpep.wire import vectors  # noqa: E402

SERVER = r"""
import socket, threading
def serve(port, bulk):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(8)
    while True:
        c, _ = s.accept()
        try:
            c.recv(1000)
            c.sendall(b"y" * 600000 if bulk else b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 100)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()
threading.Thread(target=serve, args=(5001, False), daemon=True).start()
serve(5002, True)
"""

CLIENT = r"""
import socket, struct, sys
fam, addr = (socket.AF_INET, "198.18.0.2") if sys.argv[1] == "4" else (socket.AF_INET6, "fd00:1::2")
def fetch(port):
    c = socket.create_connection((addr, port))
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    while c.recv(65536):
        pass
    c.close()
fetch(5001)
fetch(5002)
try:
    socket.create_connection((addr, 5003), timeout=2)   # closed port: RST
except OSError:
    pass
c = socket.create_connection((addr, 5001))              # abort: RST from us
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
"""

PARTIAL_CLIENT = r"""
import socket, sys
addr = "198.18.0.2" if sys.argv[1] == "4" else "fd00:1::2"
c = socket.create_connection((addr, 5001))
c.sendall(b"GET / HTTP/1.0\r\n\r\n")
while c.recv(65536):
    pass
c.close()
"""


def offloads(host, ifname, on):
    host.run(["ethtool", "-K", ifname, "tx", "on" if on else "off", "tso", "off", "gso", "off", "gro", "off"],
             check=False)


def capture(net, host, ifname, pcap, fn):
    p = host.popen(["tcpdump", "-i", ifname, "-U", "-s", "0", "-w", str(pcap), "tcp"])
    time.sleep(1.0)
    fn()
    time.sleep(1.0)
    p.terminate()
    p.wait(5)


def pick(rows, want):
    """First row matching each named predicate."""
    chosen = {}
    for name, pred in want.items():
        for r in rows:
            if pred(r):
                chosen[name] = r
                break
    return chosen


def flags(r):
    return int(r["tcp.flags"], 16) & 0xff


def nsack(r):
    return len(r["tcp.options.sack_le"].split(",")) if r["tcp.options.sack_le"] else 0


def main():
    out_dir = HERE / "captured"
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    src = f"captured by vectors/wire/capture.py: Linux {kernel} in network namespaces, tcpdump -w"
    with tempfile.TemporaryDirectory() as tmp, Network() as net:
        cli = net.add_host("cli")
        srv = net.add_host("srv")
        ci, si = net.link(cli, srv, ["198.18.0.1/24", "fd00:1::1/64"], ["198.18.0.2/24", "fd00:1::2/64"])
        offloads(cli, ci, False)
        offloads(srv, si, False)
        # Lose every 20th bulk segment at the client's INPUT (the server's OUTPUT
        # sees GSO super-packets): the client ACKs then carry SACK blocks.
        for tool in ("iptables", "ip6tables"):
            cli.run([tool, "-A", "INPUT", "-p", "tcp", "--sport", "5002", "-m", "statistic", "--mode", "nth",
                     "--every", "20", "--packet", "5", "-j", "DROP"])
        srv.popen([sys.executable, "-c", SERVER])
        time.sleep(0.5)
        written = 0
        for fam in ("4", "6"):
            pcap = Path(tmp) / f"v{fam}.pcap"
            capture(net, cli, ci, pcap, lambda: cli.run([sys.executable, "-c", CLIENT, fam], timeout=60))
            rows = dissect(str(pcap))
            by = pick(rows, {
                "syn": lambda r: flags(r) == 0x02,
                "syn-ack": lambda r: flags(r) == 0x12,
                "handshake-ack": lambda r: flags(r) == 0x10 and r["tcp.len"] == "0" and not r["tcp.options.sack_le"],
                "request-psh": lambda r: flags(r) == 0x18 and r["tcp.dstport"] == "5001",
                "data-full-mss": lambda r: r["tcp.srcport"] == "5002" and int(r["tcp.len"]) >= 1400,
                "sack-1-block": lambda r: nsack(r) == 1,
                "sack-2-blocks": lambda r: nsack(r) == 2,
                "sack-3-blocks": lambda r: nsack(r) == 3,
                "fin-ack": lambda r: flags(r) & 0x01 and r["tcp.srcport"] == "5001",
                "rst-closed-port": lambda r: flags(r) & 0x04 and r["tcp.srcport"] == "5003",
                "rst-abort": lambda r: flags(r) & 0x04 and r["tcp.dstport"] == "5001",
            })
            frames = read_pcap(pcap)
            for name, r in by.items():
                frame = frames[int(r["frame.number"]) - 1]
                e = expect_from(r)
                e["csum_status"] = "GOOD"
                layer = "eth" if name in ("syn", "syn-ack", "data-full-mss") else "ip"
                if layer == "eth":
                    e["vlan_tci"] = -1
                data = frame if layer == "eth" else frame[14:]
                vectors.dump(out_dir / f"v{fam}-{name}.toml", description=f"Linux {name}, IPv{fam}",
                             source=src, layer=layer, parser="ip_tcp", verify_csum=1, data=data, expect=e,
                             rebuild=True, comment=f"Real kernel packet ({name}); fields from tshark {tshark_version()}.")
                written += 1
            missing = set(["syn", "syn-ack", "sack-1-block", "fin-ack", "rst-closed-port"]) - set(by)
            if missing:
                raise SystemExit(f"IPv{fam}: no packet for {sorted(missing)}")
        # checksum-partial: with tx checksum offload on, the sender's own capture
        # shows packets whose TCP checksum holds only the pseudo-header sum.
        offloads(cli, ci, True)
        for fam in ("4", "6"):
            pcap = Path(tmp) / f"partial{fam}.pcap"
            capture(net, cli, ci, pcap, lambda: cli.run([sys.executable, "-c", PARTIAL_CLIENT, fam], timeout=30))
            rows = dissect(str(pcap))
            frames = read_pcap(pcap)
            r = next(r for r in rows if r["tcp.dstport"] == "5001" and flags(r) == 0x18)
            frame = frames[int(r["frame.number"]) - 1]
            e = expect_from(r)
            e["csum_status"] = "PARTIAL"
            vectors.dump(out_dir / f"v{fam}-csum-partial.toml",
                         description=f"Linux data segment sent with tx checksum offload, IPv{fam}: checksum not yet computed",
                         source=src, layer="ip", parser="ip_tcp", verify_csum=2, data=frame[14:], expect=e,
                         comment="AF_PACKET/tcpdump see CHECKSUM_PARTIAL frames as sent: verify_csum=2 accepts them.")
            vectors.dump(out_dir / f"v{fam}-csum-partial-checked.toml",
                         description=f"the same checksum-partial segment checked as if complete, IPv{fam}",
                         source=src, layer="ip", parser="ip_tcp", verify_csum=1, data=frame[14:],
                         expect={"error": "IntegrityError", "counter": "tcp_checksum"},
                         comment="Without the partial mark the stored pseudo-header sum is a wrong checksum.")
            written += 2
    print(f"wrote {written} vectors to {out_dir}")


_TSHARK = None


def tshark_version():
    global _TSHARK
    if _TSHARK is None:
        _TSHARK = subprocess.run(["tshark", "-v"], capture_output=True, text=True).stdout.split()[2]
    return _TSHARK


def read_pcap(path):
    import dpkt
    with open(path, "rb") as f:
        return [bytes(buf) for _ts, buf in dpkt.pcap.Reader(f)]


if __name__ == "__main__":
    main()
