"""What enters the one-box splitter (docs/configuration.md, "What enters the splitter"), with real kernels around it:

- corrupt segments (bad TCP checksum, bad IPv4 header checksum, TCP header cut
  short, data offset < 5; IPv4 and IPv6) never open a connection to the server
  and are counted by reason;
- IP fragments of an intercepted flow are neither taken by the capture nor
  dropped by the rules: the kernel forwards them and the server reassembles;
- a client whose socket adds IPv6 Hop-by-Hop and Destination Options headers
  gets its connection split like any other, data intact.

The malformed frames are sent with AF_PACKET from the client's namespace, so
nothing on the way marks their checksums as verified (they arrive without
TP_STATUS_CSUM_VALID; the test checks the counter): the capture's own C
validation is what is tested.
"""
import hashlib
import os
import subprocess
import sys
import textwrap
import time

import pytest

from stackpep.testbed.splitbox import CLIENT4, CLIENT6, SERVER4, SERVER6, SplitterTopology, pep_toml

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

N = 200  # frames per malformed kind


@pytest.fixture(scope="module", params=["nft", "iptables-legacy"])
def topo(request):
    # both rule backends must agree with the capture on what is intercepted
    with SplitterTopology() as t:
        t.start_pep(pep_toml(handshake_timeout=2.0, extra=f'[rules]\nbackend = "{request.param}"\n'))
        yield t
        assert t.stop_pep() == 0, t.pep_log.read_text()


def py(host, code, timeout=60):
    # cwd "/": the child imports the installed package, not a source tree
    res = subprocess.run(host.argv([sys.executable, "-c", textwrap.dedent(code)]), capture_output=True, text=True,
                         timeout=timeout, cwd="/")
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def mac(host, ifname):
    return host.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


def snmp(host, proto, field, path="/proc/net/snmp"):
    """A counter of the namespace's /proc/net/snmp (Ip:, Tcp: ...) or snmp6."""
    text = host.run(["cat", path]).stdout
    if path.endswith("snmp6"):
        return int(dict(l.split() for l in text.splitlines())[field])
    lines = [l.split() for l in text.splitlines() if l.startswith(proto + ":")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))[field])


SENDER = r"""
import socket, struct, sys
from stackpep.wire import Segment
from stackpep._fast.checksum import internet_checksum
C4, S4 = socket.inet_pton(socket.AF_INET, CLIENT4), socket.inet_pton(socket.AF_INET, SERVER4)
C6, S6 = socket.inet_pton(socket.AF_INET6, CLIENT6), socket.inet_pton(socket.AF_INET6, SERVER6)
ETH4 = bytes.fromhex(BOXMAC.replace(":", "") + CMAC.replace(":", "")) + b"\x08\x00"
ETH6 = ETH4[:12] + b"\x86\xdd"

def syn(src, dst, sport, payload=b""):
    s = Segment()
    s.ip_version = 4 if len(src) == 4 else 6
    s.src, s.dst, s.sport, s.dport, s.flags, s.seq, s.window, s.ttl = src, dst, sport, 80, 0x02, 1000 + sport, 64240, 64
    s.mss = 1460
    s.ip_df = False
    return bytearray(s.to_bytes(payload))

def fix_ip4(p):
    p[10:12] = b"\0\0"
    p[10:12] = internet_checksum(bytes(p[:20])).to_bytes(2, "big")
    return p

def bad_tcp(p):
    off = 40 if p[0] >> 4 == 6 else 20
    p[off + 16] ^= 0x5A
    return p

def bad_ip(p):
    p[10] ^= 0x5A
    return p

def truncated(p):
    off = 40 if p[0] >> 4 == 6 else 20
    p = p[:off + 12]  # 12 of the 20 bytes of a TCP header
    if off == 20:
        p[2:4] = (len(p)).to_bytes(2, "big")
        return fix_ip4(p)
    p[4:6] = (12).to_bytes(2, "big")
    return p

def bad_doff(p):
    off = 40 if p[0] >> 4 == 6 else 20
    p[off + 12] = (4 << 4) | (p[off + 12] & 0x0F)
    return p

def fragments(p, ident):
    # RFC 791 §3.2 / RFC 8200 §4.5: split after the TCP header (24 bytes with MSS):
    # the first fragment must hold the whole header chain (RFC 7112, RFC 8200 §4.5)
    if p[0] >> 4 == 4:
        hdr, data = p[:20], p[20:]
        out = []
        for off, chunk, mf in ((0, data[:24], 0x2000), (3, data[24:], 0)):
            h = bytearray(hdr)
            h[2:4] = (20 + len(chunk)).to_bytes(2, "big")
            h[4:6] = ident.to_bytes(2, "big")
            h[6:8] = (mf | off).to_bytes(2, "big")
            out.append(bytes(fix_ip4(h)) + chunk)
        return out
    hdr, data = p[:40], p[40:]
    out = []
    for off, chunk, m in ((0, data[:24], 1), (3, data[24:], 0)):
        h = bytearray(hdr)
        h[4:6] = (8 + len(chunk)).to_bytes(2, "big")
        h[6] = 44
        fh = bytes([6, 0]) + ((off << 3) | m).to_bytes(2, "big") + ident.to_bytes(4, "big")
        out.append(bytes(h) + fh + chunk)
    return out

kind = sys.argv[1]
frames = []
for i in range(NFRAMES):
    sport = 20000 + i
    if kind == "tcp_checksum_v4": p = [bad_tcp(syn(C4, S4, sport))]
    elif kind == "ipv4_checksum": p = [bad_ip(syn(C4, S4, sport))]
    elif kind == "tcp_truncated_v4": p = [truncated(syn(C4, S4, sport))]
    elif kind == "tcp_doff_v4": p = [bad_doff(syn(C4, S4, sport))]
    elif kind == "tcp_checksum_v6": p = [bad_tcp(syn(C6, S6, sport))]
    elif kind == "tcp_truncated_v6": p = [truncated(syn(C6, S6, sport))]
    elif kind == "tcp_doff_v6": p = [bad_doff(syn(C6, S6, sport))]
    elif kind == "fragments_v4": p = fragments(syn(C4, S4, sport, b"x" * 16), 0x4000 + i)
    elif kind == "fragments_v6": p = fragments(syn(C6, S6, sport, b"x" * 16), 0x60000 + i)
    frames += [(ETH6 if f[0] >> 4 == 6 else ETH4) + bytes(f) for f in p]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for f in frames:
    s.send(f)
print(len(frames))
"""


def send(topo, kind):
    code = (SENDER.replace("BOXMAC", repr(mac(topo.box, "box1"))).replace("CMAC", repr(mac(topo.client, "eth0")))
            .replace("CLIENT4", repr(CLIENT4)).replace("SERVER4", repr(SERVER4))
            .replace("CLIENT6", repr(CLIENT6)).replace("SERVER6", repr(SERVER6)).replace("NFRAMES", str(N)))
    res = subprocess.run(topo.client.argv([sys.executable, "-c", code, kind]), capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr[-3000:]
    return int(res.stdout)


@pytest.fixture(scope="module")
def server_syn_counter(topo):
    """An nft counter of every TCP SYN that reaches the server's namespace."""
    topo.server.run(["nft", "-f", "-"], input=textwrap.dedent("""
        table inet probe {
            chain pre {
                type filter hook prerouting priority raw; policy accept;
                tcp flags & (syn | ack) == syn counter
            }
        }
    """))

    def count():
        out = topo.server.run(["nft", "list", "chain", "inet", "probe", "pre"]).stdout
        return int(out.split("counter packets ")[1].split()[0])
    return count


@pytest.mark.parametrize("kind,reason", [
    ("tcp_checksum_v4", "tcp_checksum"), ("ipv4_checksum", "ipv4_checksum"),
    ("tcp_truncated_v4", "tcp_truncated"), ("tcp_doff_v4", "tcp_doff"),
    ("tcp_checksum_v6", "tcp_checksum"), ("tcp_truncated_v6", "tcp_truncated"), ("tcp_doff_v6", "tcp_doff"),
])
def test_corrupt_syns_open_nothing_and_are_counted(topo, server_syn_counter, kind, reason):
    before = topo.stats()
    cap0 = before["ports"]["box1"]
    syns0 = server_syn_counter()
    assert send(topo, kind) == N
    key = f"rx_drop_{reason}"
    st = topo.wait_stats(lambda s: s["ports"]["box1"][key] >= cap0[key] + N)
    cap = st["ports"]["box1"]
    assert cap[key] == cap0[key] + N
    assert cap["rx_drop_malformed"] == cap0["rx_drop_malformed"] + N
    assert cap["rx_csum_valid"] == cap0["rx_csum_valid"]  # nothing vouched for them: checked in C
    assert st["connections_opened"] == before["connections_opened"]
    assert st["packets_in"] == before["packets_in"]
    assert server_syn_counter() == syns0  # not one SYN reached the server


def test_a_good_syn_does_reach_the_server(topo, server_syn_counter):
    # the counter above can count: a real connection's SYN reaches it
    syns0 = server_syn_counter()
    py(topo.client, f"""
        import socket
        s = socket.socket(); s.settimeout(5)
        try:
            s.connect(({SERVER4!r}, 80))
        except OSError:
            pass  # nothing listens on port 80: the server refuses, the client gets RST
    """)
    assert server_syn_counter() == syns0 + 1


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_fragmented_syns_cross_the_box_and_are_reassembled(topo, family):
    # The capture leaves fragments to the kernel (rx_pass_fragment) and the rules
    # do not drop them, so the kernel forwards them and the server
    # reassembles each SYN (RFC 791 §3.2 / RFC 8200 §4.5).
    if family == "v4":
        get = lambda: snmp(topo.server, "Ip", "ReasmOKs")  # noqa: E731
    else:
        get = lambda: snmp(topo.server, "", "Ip6ReasmOKs", "/proc/net/snmp6")  # noqa: E731
    cap0 = topo.stats()["ports"]["box1"]
    r0 = get()
    assert send(topo, f"fragments_{family}") == 2 * N
    deadline = time.monotonic() + 10
    while get() < r0 + N and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get() == r0 + N
    # IPv4 fragments reach the ring and are passed over; IPv6 ones (next header
    # 44) the ring's filter already keeps out
    passed = 2 * N if family == "v4" else 0
    st = topo.wait_stats(lambda s: s["ports"]["box1"]["rx_pass_fragment"] >= cap0["rx_pass_fragment"] + passed)
    assert st["ports"]["box1"]["rx_pass_fragment"] == cap0["rx_pass_fragment"] + passed
    assert st["ports"]["box1"]["rx_drop_malformed"] == cap0["rx_drop_malformed"]


EXT_SERVER = r"""
import hashlib, os, socket
l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((SERVER6, 8000)); l.listen(8); print("LISTENING", flush=True)
c, _ = l.accept()
req = c.recv(100)
data = os.urandom(1_000_000)
c.sendall(hashlib.sha256(data).digest() + data)
up = b""
while len(up) < 300_000:
    d = c.recv(65536)
    if not d: break
    up += d
print(hashlib.sha256(up).hexdigest(), req.decode(), flush=True)
c.close()
"""

EXT_CLIENT = r"""
import hashlib, os, socket
s = socket.socket(socket.AF_INET6)
# RFC 8200 §4.3/§4.6: an 8-byte header holding one PadN option (type 1, 4 bytes);
# the kernel fills the next-header byte
opt = bytes([0, 0, 1, 4, 0, 0, 0, 0])
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, opt)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, opt)
s.settimeout(20)
s.connect((SERVER6, 8000))
s.sendall(b"GET")
buf = b""
while len(buf) < 32 + 1_000_000:
    d = s.recv(65536)
    if not d: break
    buf += d
assert hashlib.sha256(buf[32:]).digest() == buf[:32] and len(buf) == 32 + 1_000_000, len(buf)
up = os.urandom(300_000)
s.sendall(up)
s.shutdown(socket.SHUT_WR)
s.recv(10)
print(hashlib.sha256(up).hexdigest(), flush=True)
"""


def test_ipv6_client_with_hop_by_hop_and_destination_options_is_split(topo):
    # the rules (meta l4proto / ip6tables -p walk the chain), the
    # capture filter and the flow key all see through the extension headers.
    before = topo.stats()
    tcpdump = topo.box.popen(["tcpdump", "-i", "box1", "-nn", "-U", "-c", "1", "-w", str(topo.tmp / "ext.pcap"),
                              "ip6 and ip6[6] == 0 and src host " + CLIENT6], stderr=subprocess.PIPE)
    assert b"listening" in tcpdump.stderr.readline()
    srv = topo.server.popen([sys.executable, "-c", EXT_SERVER.replace("SERVER6", repr(SERVER6))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    assert srv.stdout.readline().strip() == "LISTENING"
    out = py(topo.client, EXT_CLIENT.replace("SERVER6", repr(SERVER6)))
    got = srv.communicate(timeout=30)[0].split()
    assert got == [out.strip(), "GET"]
    tcpdump.wait(timeout=10)  # the client's packets did carry a Hop-by-Hop header
    assert tcpdump.returncode == 0
    # split (not forwarded by the kernel), and closed normally: the legs linger in TIME-WAIT
    st = topo.wait_stats(lambda s: s["leg_states"].get("server_leg_TIME-WAIT", 0)
                         + s["ended_closed"] > before["ended_closed"])
    assert st["connections_opened"] == before["connections_opened"] + 1
    assert st["ended_refused"] + st["ended_handshake_timeout"] + st["ended_error"] == (
        before["ended_refused"] + before["ended_handshake_timeout"] + before["ended_error"])
    assert st["ports"]["box1"]["rx_drop_malformed"] == before["ports"]["box1"]["rx_drop_malformed"]
