"""AF_PACKET capture and emit with the interfaces' default offloads on:
only TCP reaches user space, GRO/TSO super-frames arrive whole, checksum-not-
ready frames leave the ring with correct checksums, the byte stream read from
the ring is exactly what was sent, spoofed-source frames are accepted by the
peer, and a full qdisc's ENOBUFS is counted as a drop.

The capture code runs in the box namespace as a subprocess (the socket must be
opened inside the namespace)."""
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stackpep

from stackpep._fast.capture import complete_checksum, flow_key, split_key
from stackpep._fast.checksum import transport_checksum
from stackpep.testbed.netns import Network

# where `stackpep` is imported from (the installed package in CI, the tree in development):
# the helper programs below put it first on sys.path
ROOT = Path(stackpep.__file__).resolve().parents[1]


def test_flow_key_round_trip():
    k = flow_key(bytes([198, 18, 0, 2]), 40000, bytes([198, 18, 1, 2]), 80)
    assert len(k) == 12 and split_key(k) == (bytes([198, 18, 0, 2]), 40000, bytes([198, 18, 1, 2]), 80)
    a6, b6 = bytes.fromhex("fd000001" + "00" * 11 + "02"), bytes.fromhex("fd000002" + "00" * 11 + "02")
    k6 = flow_key(a6, 1, b6, 65535)
    assert len(k6) == 36 and split_key(k6) == (a6, 1, b6, 65535)
    with pytest.raises(ValueError):
        flow_key(a6, 1, bytes(4), 2)


def _tcp_v4(payload=b"hello", bad_csum=0x1234):
    tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 5 << 4, 0x18, 1000, bad_csum, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes([198, 18, 0, 2]),
                     bytes([198, 18, 1, 2]))
    return bytearray(ip + tcp)


def test_complete_checksum_v4_and_v6():
    p = _tcp_v4()
    complete_checksum(p)
    assert transport_checksum(bytes(p[12:16]), bytes(p[16:20]), 6, bytes(p[20:])) == 0
    tcp = struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 5 << 4, 0x10, 1, 0xFFFF, 0) + b"x" * 33
    src, dst = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")
    p6 = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst) + tcp)
    complete_checksum(p6)
    assert transport_checksum(src, dst, 6, bytes(p6[40:])) == 0


# For the receiver programs below: the ring's batches until the test writes a line to
# stdin (once what must be seen has crossed the interface), then until every frame the
# kernel had put in the ring is read (a block is handed over when full or retire_ms
# after its first frame) -- not a fixed time, which a loaded machine may not keep to.
# FINAL: the statistics that found nothing left unread (a frame arriving later, such as
# the last ACK of a close, is in neither count).
RING_READER = r"""
import select, time
FINAL = {}
def ring_batches(ring):
    while not select.select([sys.stdin], [], [], 0.001)[0]:
        yield ring.read_batch()
    while True:
        batch = ring.read_batch()
        if batch:
            yield batch
            continue
        st = ring.statistics()
        if st["rx_packets"] >= st["rx_kernel_packets"] - st["rx_drop_ring_full"]:
            FINAL.update(st)
            return
        time.sleep(0.001)
"""

CAPTURE_PROG = r"""
import sys, json, time, hashlib
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing, split_key
from stackpep._fast.checksum import transport_checksum
RING_READER
ring = PacketRing(IFNAME, client_side=True)
print("READY", flush=True)
segs = {}; flags_seen = []; bad = 0; versions = set(); keys = set(); max_len = 0
shared = unshared = 0   # consecutive packets of one flow in one batch: one key object, or two equal ones
for batch in ring_batches(ring):
    last = None
    for key, p, flags in batch:
        if last is not None and last == key:
            shared += last is key
            unshared += last is not key
        last = key
        keys.add(key.hex())
        v = p[0] >> 4; versions.add(v)
        if v == 4:
            ihl = (p[0] & 15) * 4; src, dst = p[12:16], p[16:20]
        else:
            ihl = 40; src, dst = p[8:24], p[24:40]
        tcp = p[ihl:]
        if transport_checksum(src, dst, 6, tcp) != 0:
            bad += 1
        max_len = max(max_len, len(p))
        off = (tcp[12] >> 4) * 4
        seq = int.from_bytes(tcp[4:8], "big")
        if split_key(key)[3] == PORT and len(tcp) > off:
            segs[seq] = tcp[off:]
# reassemble the client->server byte stream
data = bytearray(); start = min(segs) if segs else 0; nxt = start
for seq in sorted(segs):
    chunk = segs[seq]
    if seq <= nxt < seq + len(chunk):
        data += chunk[nxt - seq:]; nxt = seq + len(chunk)
print(json.dumps({"stats": FINAL, "bad_csum": bad, "versions": sorted(versions),
                  "keys": sorted(keys), "sha": hashlib.sha256(bytes(data)).hexdigest(), "len": len(data),
                  "max_len": max_len, "shared": shared, "unshared": unshared}))
"""


@pytest.fixture
def net3():
    with Network() as net:
        c = net.add_host("client")
        b = net.add_host("box", forwarding=True)
        s = net.add_host("server")
        ci, bi = net.link(c, b, ["198.18.0.2/24", "fd00:1::2/64"], ["198.18.0.1/24", "fd00:1::1/64"])
        bo, si = net.link(b, s, ["198.18.1.1/24", "fd00:2::1/64"], ["198.18.1.2/24", "fd00:2::2/64"])
        c.run("ip route add default via 198.18.0.1")
        c.run("ip -6 route add default via fd00:1::1")
        s.run("ip route add default via 198.18.1.1")
        s.run("ip -6 route add default via fd00:2::1")
        net.ifs = (ci, bi, bo, si)
        yield net


def _start_capture(box, ifname, port):
    prog = CAPTURE_PROG.replace("ROOT", repr(str(ROOT))).replace("IFNAME", repr(ifname)) \
        .replace("PORT", str(port)).replace("RING_READER", RING_READER)
    p = box.popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  text=True)
    assert p.stdout.readline().strip() == "READY", p.stderr.read()
    return p


@pytest.mark.netns
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_ring_sees_only_tcp_with_super_frames_and_good_checksums(net3, family):
    c, b, s = net3.hosts["client"], net3.hosts["box"], net3.hosts["server"]
    ci, bi, bo, si = net3.ifs
    # Offloads stay as the kernel set them: TSO on the client's veth makes super-frames.
    assert "tcp-segmentation-offload: on" in c.run(["ethtool", "-k", ci]).stdout
    dst = "198.18.1.2" if family == "v4" else "fd00:2::2"
    payload = os.urandom(3_000_000)
    sha = hashlib.sha256(payload).hexdigest()
    srv = s.popen([sys.executable, "-c", textwrap.dedent(f"""
        import socket, hashlib
        l = socket.socket(socket.AF_INET6); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(("::", 5001)); l.listen(); print("L", flush=True)
        conn, _ = l.accept(); h = hashlib.sha256()
        while True:
            d = conn.recv(1 << 20)
            if not d: break
            h.update(d)
        print(h.hexdigest(), flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "L"
    cap = _start_capture(b, bi, 5001)
    # UDP and ICMP through the same interface must not reach the ring.
    c.run(["ping", "-c", "3", "-i", "0.2", dst])
    c.run([sys.executable, "-c",
           f"import socket; s = socket.socket(socket.AF_INET{'6' if ':' in dst else ''}, socket.SOCK_DGRAM); "
           f"[s.sendto(b'x' * 100, ({dst!r}, 9999)) for _ in range(50)]"])
    cl = subprocess.run(c.argv([sys.executable, "-c", textwrap.dedent(f"""
        import socket, sys
        data = sys.stdin.buffer.read()
        s = socket.create_connection(({dst!r}, 5001)); s.sendall(data); s.close()
    """)]), input=payload, capture_output=True, timeout=60)
    assert cl.returncode == 0, cl.stderr
    assert srv.stdout.readline().strip() == sha
    out, err = cap.communicate("stop\n", timeout=30)  # every segment crossed the box: in its ring
    res = json.loads(out)
    st = res["stats"]
    assert res["versions"] == ([4] if family == "v4" else [6])
    assert res["bad_csum"] == 0
    assert st["rx_drop_not_ip_tcp"] == 0 and st["rx_drop_malformed"] == 0 and st["rx_drop_truncated"] == 0
    assert st["rx_drop_ring_full"] == 0 and st["rx_kernel_packets"] == st["rx_packets"]
    assert res["len"] == len(payload) and res["sha"] == sha
    # consecutive segments of the flow in one batch come with one key object (not a new bytes each)
    assert res["shared"] > 0 and res["unshared"] == 0
    # GRO/TSO super-frames and checksum-not-ready frames did arrive and were handled.
    assert st["rx_gro_frames"] > 0 and res["max_len"] > 1500
    assert st["rx_csum_completed"] > 0
    # Every key is the one flow, client first.
    (key,) = {k for k in res["keys"]}
    ca, cp, sa, sp = split_key(bytes.fromhex(key))
    assert socket.inet_ntop(socket.AF_INET if family == "v4" else socket.AF_INET6, sa) == dst and sp == 5001


SEND_PROG = r"""
import sys, json, struct
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
from stackpep._fast.checksum import internet_checksum, pseudo_header_sum
from stackpep.io.routes import NextHopCache, Rtnl
nh = NextHopCache(Rtnl()).lookup(DST)
ring = PacketRing(nh.ifname, client_side=False)
def udp(src, dst, sport, dport, payload):
    u = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if len(src) == 4:
        c = internet_checksum(bytes(u), pseudo_header_sum(src, dst, 17, len(u)))
        u[6:8] = c.to_bytes(2, "big")
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 0, 0, 64, 17, 0, src, dst))
        ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    else:
        c = internet_checksum(bytes(u), pseudo_header_sum(src, dst, 17, len(u)))
        u[6:8] = c.to_bytes(2, "big")
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(u), 17, 64, src, dst)
    return bytes(ip) + bytes(u)
import socket
fam = socket.AF_INET6 if ":" in DST else socket.AF_INET
pkts = [udp(socket.inet_pton(fam, SRC), socket.inet_pton(fam, DST), 7777, 9000, b"spoofed %d" % i) for i in range(COUNT)]
n = ring.send_batch(pkts, nh.macs)
print(json.dumps({"sent": n, "stats": ring.statistics()}))
"""


@pytest.mark.netns
@pytest.mark.parametrize("family", ["v4", "v6"])
def test_emit_spoofed_source_is_accepted_by_peer(net3, family):
    c, b, s = net3.hosts["client"], net3.hosts["box"], net3.hosts["server"]
    src, dst = ("198.18.1.2", "198.18.0.2") if family == "v4" else ("fd00:2::2", "fd00:1::2")
    rcv = c.popen([sys.executable, "-c", textwrap.dedent(f"""
        import socket
        u = socket.socket(socket.AF_INET6 if ":" in {dst!r} else socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(({dst!r}, 9000)); u.settimeout(5); print("L", flush=True)
        for _ in range(3):
            d, a = u.recvfrom(100); print(a[0], a[1], d.decode(), flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    assert rcv.stdout.readline().strip() == "L"
    prog = SEND_PROG.replace("ROOT", repr(str(ROOT))).replace("DST", repr(dst)).replace("SRC", repr(src)) \
        .replace("COUNT", "3")
    res = json.loads(b.run([sys.executable, "-c", prog]).stdout)
    assert res["sent"] == 3 and res["stats"]["tx_packets"] == 3
    out, _ = rcv.communicate(timeout=10)
    assert out.splitlines() == [f"{src} 7777 spoofed {i}" for i in range(3)]


FILLING_PROG = r"""
import sys, json, time, socket
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
ring = PacketRing(IFNAME, client_side=True, retire_ms=RETIRE)
before = (ring.pending(), ring.filling())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("READY", flush=True)
sys.stdin.readline()   # the peer sent three TCP segments
during = (ring.pending(), ring.filling())
end = time.time() + 10
while not ring.pending() and time.time() < end:
    time.sleep(0.01)
ring.read_batch()   # (the segments carry no valid checksum: counted as dropped, that is enough here)
print(json.dumps({"before": before, "during": during, "got": ring.statistics()["rx_packets"],
                  "after": (ring.pending(), ring.filling())}))
"""


@pytest.mark.netns
def test_filling_sees_packets_in_the_block_not_yet_retired(net3):
    """PacketRing.filling(): packets in the block the kernel still fills (handed over
    only after retire_ms, here 3 s) are seen from the mapped header, without a
    system call; once the block is retired and read, the next block is empty."""
    c, b = net3.hosts["client"], net3.hosts["box"]
    ci, bi, bo, si = net3.ifs
    prog = FILLING_PROG.replace("ROOT", repr(str(ROOT))).replace("IFNAME", repr(bi)).replace("RETIRE", "3000")
    cap = b.popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cap.stdout.readline().strip() == "READY"
    c.run([sys.executable, "-c", textwrap.dedent("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        for i in range(3):   # bare TCP headers (a SYN each, no checksum) towards the server
            s.sendto(bytes.fromhex("9c4000500000000100000000500204000000" + "0000"), ("198.18.1.2", 0))
    """)])
    out, _ = cap.communicate("sent\n", timeout=30)
    res = json.loads(out)
    assert res["before"] == [False, False]
    assert res["during"] == [False, True]
    assert res["got"] == 3
    assert res["after"] == [False, False]


@pytest.mark.netns
def test_full_qdisc_enobufs_is_counted_as_drop(net3):
    b = net3.hosts["box"]
    ci, bi, bo, si = net3.ifs
    b.run(["tc", "qdisc", "add", "dev", bi, "root", "tbf", "rate", "1mbit", "burst", "1600", "limit", "3000"])
    prog = SEND_PROG.replace("ROOT", repr(str(ROOT))).replace("DST", repr("198.18.0.2")) \
        .replace("SRC", repr("198.18.1.2")).replace("COUNT", "200")
    res = json.loads(b.run([sys.executable, "-c", prog]).stdout)
    st = res["stats"]
    assert st["tx_drop_nobufs"] > 0
    # every refused frame is a sendmmsg() of its own that failed; the rest go in later calls
    assert st["tx_sendmmsg_calls"] > st["tx_drop_nobufs"] + st["tx_drop_again"]
    assert st["tx_packets"] == res["sent"]
    assert st["tx_packets"] + st["tx_drop_nobufs"] + st["tx_drop_again"] == 200


GSO_SEND = r"""
import sys, json, struct, socket, time
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
from stackpep._fast.checksum import internet_checksum, pseudo_header_sum
from stackpep.io.routes import NextHopCache, Rtnl
SRC, DST = SRCA, DSTA
fam = socket.AF_INET6 if ":" in DST else socket.AF_INET
src, dst = socket.inet_pton(fam, SRC), socket.inet_pton(fam, DST)
nh = NextHopCache(Rtnl()).lookup(DST)
ring = PacketRing(nh.ifname, client_side=False, gso=True)
mss = 1400 if fam == socket.AF_INET else 1380
def seg(seq, payload, flags, ident):
    opts = struct.pack("!BBBBII", 1, 1, 8, 10, 12345, 678)  # NOP NOP TS
    t = bytearray(struct.pack("!HHIIBBHHH", 80, 40000, seq, 1, (5 + 3) << 4, flags, 500, 0, 0) + opts + payload)
    t[16:18] = internet_checksum(bytes(t), pseudo_header_sum(src, dst, 6, len(t))).to_bytes(2, "big")
    if fam == socket.AF_INET:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(t), ident, 0x4000, 64, 6, 0, src, dst))
        ip[10:12] = internet_checksum(bytes(ip)).to_bytes(2, "big")
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(t), 6, 64, src, dst)
    return bytes(ip) + bytes(t)
data = bytes((i * 7) & 0xff for i in range(20 * mss - 100))
pkts = []
for k in range(20):
    chunk = data[k * mss:(k + 1) * mss]
    pkts.append(seg(1000 + k * mss, chunk, 0x18 if k == 19 else 0x10, 100 + k))
pkts.append(seg(5, b"lone", 0x18, 1))  # another flow: not merged
print(json.dumps({"sent": ring.send_batch(pkts, nh.macs), "stats": ring.statistics(), "len": len(data)}))
"""

GSO_RECV = r"""
import sys, json, time
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
from stackpep._fast.checksum import transport_checksum
RING_READER
ring = PacketRing(IFNAME, client_side=True)
print("READY", flush=True)
got = [x for batch in ring_batches(ring) for x in batch]
segs = {}; bad = 0; sizes = []
for key, p, flags in got:
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4; s, d = p[12:16], p[16:20]
    else:
        ihl = 40; s, d = p[8:24], p[24:40]
    t = p[ihl:]
    if int.from_bytes(t[0:2], "big") != 80: continue   # only what the box sent
    bad += transport_checksum(s, d, 6, t) != 0
    off = (t[12] >> 4) * 4
    segs[int.from_bytes(t[4:8], "big")] = (t[off:], t[13])
    sizes.append(len(p))
print(json.dumps({"bad": bad, "segs": {k: [v[0].hex(), v[1]] for k, v in segs.items()}, "sizes": sizes}))
"""


@pytest.mark.netns
@pytest.mark.parametrize("family,tso", [("v4", "on"), ("v6", "on"), ("v4", "off")])
def test_gso_emit_merges_a_run_and_peer_gets_exact_segments(net3, family, tso):
    c, b = net3.hosts["client"], net3.hosts["box"]
    src, dst = ("198.18.1.2", "198.18.0.2") if family == "v4" else ("fd00:2::2", "fd00:1::2")
    rcv = c.popen([sys.executable, "-c", GSO_RECV.replace("ROOT", repr(str(ROOT))).replace("IFNAME", repr(net3.ifs[0]))
                   .replace("RING_READER", RING_READER)], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert rcv.stdout.readline().strip() == "READY"
    # TSO off on the box's device (as on the GEO testbed): the kernel's software GSO cuts the
    # super-frame in the box's send path; on: veth hands it to the peer whole
    b.run(["ethtool", "-K", net3.ifs[1], "tso", tso, "gso", tso])
    prog = GSO_SEND.replace("ROOT", repr(str(ROOT))).replace("SRCA", repr(src)).replace("DSTA", repr(dst))
    res = json.loads(b.run([sys.executable, "-c", prog]).stdout)
    st = res["stats"]
    assert res["sent"] == 21 and st["tx_packets"] == 21
    assert st["tx_gso_frames"] == 1 and st["tx_gso_segments"] == 20
    # two frames (the super-frame and the lone segment), one system call
    assert st["tx_sendmmsg_calls"] == 1
    out = json.loads(rcv.communicate("stop\n", timeout=20)[0])  # (the sender is done)
    assert out["bad"] == 0
    # on (veth's default) the peer gets the run as one frame, off as its 20 segments
    assert len(out["sizes"]) == (2 if tso == "on" else 21)
    segs = {int(k): (bytes.fromhex(v[0]), v[1]) for k, v in out["segs"].items()}
    mss = 1400 if family == "v4" else 1380
    data = bytes((i * 7) & 0xff for i in range(res["len"]))
    # the run arrives as one super-frame (veth keeps GSO) or as its segments: same bytes
    stream = b"".join(segs[k][0] for k in sorted(segs) if k >= 1000)
    assert stream == data
    assert segs[5] == (b"lone", 0x18)
    # PSH only at the end of the run, as a TSO sender would put it
    assert segs[max(k for k in segs if k >= 1000)][1] == 0x18


MALFORMED_SEND = r"""
import sys, json, struct
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing, complete_checksum
from stackpep._fast.checksum import internet_checksum
ring = PacketRing(IFNAME, client_side=True)
src, dst = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
src6, dst6 = bytes.fromhex("fd000001" + "00" * 11 + "02"), bytes.fromhex("fd000002" + "00" * 11 + "02")
SYN = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 1000, 0, 0)
def v4(total=None, ihl=5, frag=0x4000, proto=6, tcp=SYN, ip_csum_ok=True):
    total = 20 + len(tcp) if total is None else total
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 0, frag, 64, proto, 0, src, dst))
    if ip_csum_ok:
        h[10:12] = internet_checksum(bytes(h)).to_bytes(2, "big")
    return bytes(h) + tcp
def v6(tcp=SYN, ext=b"", nh=6):
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(tcp), nh, 64, src6, dst6) + ext + tcp
def good(p):
    b = bytearray(p); complete_checksum(b); return bytes(b)
def bad_tcp(p):
    b = bytearray(good(p)); ihl = 40 if b[0] >> 4 == 6 else (b[0] & 15) * 4; b[ihl + 16] ^= 0xff; return bytes(b)
frames = [
    v4(400),                                                  # total length beyond the frame
    v4(ihl=15),                                               # header longer than the packet
    v4(tcp=struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 4 << 4, 0x02, 1000, 0, 0)),  # data offset < 5
    v4(tcp=SYN[:12]),                                         # TCP header cut short
    bad_tcp(v4()),                                            # TCP checksum wrong
    good(v4(ip_csum_ok=False)),                               # IPv4 header checksum wrong
    v4(frag=0x2000 | 10),                                     # a fragment: left to the kernel
    good(v4()),                                               # intact: taken
    bad_tcp(v6()),                                            # IPv6 TCP checksum wrong
    good(v6()),                                               # intact: taken
]
print(json.dumps(ring.send_batch(frames, bytes(12))))
"""

MALFORMED_RECV = r"""
import sys, json, time
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
RING_READER
ring = PacketRing(IFNAME, client_side=True)
print("READY", flush=True)
got = [x for batch in ring_batches(ring) for x in batch]
print(json.dumps({"stats": FINAL, "n": len(got), "lens": [len(p) for k, p, f in got]}))
"""


@pytest.mark.netns
def test_malformed_frames_are_counted_by_reason_not_passed_on(net3):
    # Frames from AF_PACKET arrive without TP_STATUS_CSUM_VALID: every checksum
    # is verified in C, each refusal counted by its reason.
    c, b = net3.hosts["client"], net3.hosts["box"]
    ci, bi, bo, si = net3.ifs
    rcv = b.popen([sys.executable, "-c", MALFORMED_RECV.replace("ROOT", repr(str(ROOT))).replace("IFNAME", repr(bi))
                   .replace("RING_READER", RING_READER)], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert rcv.stdout.readline().strip() == "READY"
    sent = json.loads(c.run([sys.executable, "-c", MALFORMED_SEND.replace("ROOT", repr(str(ROOT)))
                             .replace("IFNAME", repr(ci))]).stdout)
    assert sent == 10
    out = json.loads(rcv.communicate("stop\n", timeout=20)[0])  # (the sender is done)
    st = out["stats"]
    assert st["rx_packets"] == 10
    reasons = {k: v for k, v in st.items() if k.startswith("rx_drop_") and v}
    assert reasons == {"rx_drop_malformed": 7, "rx_drop_ipv4_total_len": 1, "rx_drop_ipv4_hdr_past_end": 1,
                       "rx_drop_tcp_doff": 1, "rx_drop_tcp_truncated": 1, "rx_drop_tcp_checksum": 2,
                       "rx_drop_ipv4_checksum": 1}
    assert st["rx_pass_fragment"] == 1 and st["rx_csum_valid"] == 0
    assert out["n"] == 2 and out["lens"] == [40, 60]
