"""A running splitter applies [wan] to the long leg only (real kernels on both ends).

Not a timing test: the engine settings show in the SYNs on the wire.  With
``[wan] leg = "server"`` at 100 Mbit/s × 0.6 s the server leg gets 4 × BDP = 30 MB
buffers, offered with window scale 9 (RFC 7323 §2.3: the smallest shift that fits
30 MB into 16 bits); the client leg keeps the engine's 4 MiB, shift 7.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import textwrap

import pytest

import dpkt  # the [test] extra

from stackpep.testbed.splitbox import SERVER4, SplitterTopology, pep_toml

pytestmark = pytest.mark.netns

WAN = """
[wan]
leg = "server"
rate = 100000000
rtt = 0.6
"""


def _syn_options(path):
    """(is SYN-ACK, window scale) of each SYN in a pcap."""
    out = []
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            t = getattr(ip, "data", None)
            if not isinstance(t, dpkt.tcp.TCP) or not t.flags & dpkt.tcp.TH_SYN:
                continue
            ws = None
            for kind, val in dpkt.tcp.parse_opts(t.opts):
                if kind == dpkt.tcp.TCP_OPT_WSCALE:
                    ws = val[0]
            out.append((bool(t.flags & dpkt.tcp.TH_ACK), ws))
    return out


def _capture(host, ifname, path):
    p = host.popen(["tcpdump", "-i", ifname, "-nn", "-U", "--immediate-mode", "-w", str(path), "tcp"], stderr=subprocess.PIPE)
    assert b"listening" in p.stderr.readline()
    return p


def test_wan_settings_reach_the_server_leg_only():
    with SplitterTopology() as topo:
        topo.start_pep(pep_toml(extra=WAN))
        srv = topo.server.popen([sys.executable, "-c", textwrap.dedent("""
            import socket
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 8000)); s.listen(1); print("LISTENING", flush=True)
            c, _ = s.accept(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                n += len(b)
            c.sendall(str(n).encode()); c.close()
        """)], stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout.readline().strip() == "LISTENING"
            cap_c = _capture(topo.client, "eth0", topo.tmp / "client.pcap")
            cap_s = _capture(topo.server, "eth0", topo.tmp / "server.pcap")
            out = topo.client.run([sys.executable, "-c", textwrap.dedent(f"""
                import socket
                c = socket.create_connection(("{SERVER4}", 8000), timeout=10)
                c.sendall(b"x" * 100000); c.shutdown(socket.SHUT_WR)
                print(c.recv(100).decode())
            """)], timeout=30)
            assert out.stdout.strip() == "100000", out
        finally:
            srv.kill()
            srv.wait()
        time.sleep(0.3)
        for cap in (cap_c, cap_s):
            cap.send_signal(signal.SIGINT)
            cap.wait(timeout=10)
        # client side: the client's SYN, and the box's SYN-ACK (client leg: engine defaults)
        assert (True, 7) in _syn_options(topo.tmp / "client.pcap")
        # server side: the box's SYN (server leg: [wan] buffers), and the server's SYN-ACK
        server_syns = _syn_options(topo.tmp / "server.pcap")
        assert (False, 9) in server_syns, server_syns
        assert {ws for ack, ws in server_syns if not ack} == {9}, server_syns  # (or retransmitted)
        stats = topo.stats()
        assert stats["connections_opened"] >= 1
