"""SCPS-TP header compression (CCSDS 714.0-B-2, notes "TCP option kinds (IANA)", IP protocol 105):
compress then expand gives back the exact packet (IPv4 and IPv6, every flag
and option the compressed header carries); fields are absolute, so losing one
compressed packet never spoils the next; a corrupted compressed packet, one for
an unknown context and a malformed one are dropped and counted."""
import json
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackpep._fast.checksum import internet_checksum, transport_checksum
from stackpep._fast.scpshc import HcTable, HeaderCompressor, compress, why_not_compressed

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

V4 = (bytes([198, 18, 0, 1]), bytes([198, 19, 0, 2]))
V6 = (bytes.fromhex("fd000001" + "00" * 11 + "01"), bytes.fromhex("fd000002" + "00" * 11 + "02"))

TS = lambda val, ecr: b"\x01\x01\x08\x0a" + struct.pack("!II", val, ecr)  # noqa: E731
SNACK = lambda off, size: b"\x01\x01\x15\x06" + struct.pack("!HH", off, size)  # noqa: E731
RB = b"\x01\x01\x16\x02"
CE = b"\x01\x01\x17\x02"


def sack(*blocks):
    return b"\x01\x01\x05" + bytes([2 + 8 * len(blocks)]) + b"".join(struct.pack("!II", *b) for b in blocks)


def tcp_packet(src, dst, sport=40000, dport=80, seq=1000, ack=2000, flags=0x10, win=65535, urg=0,
               options=b"", payload=b"", ip_id=0x1234, ttl=64):
    """An IPv4 or IPv6 TCP packet with correct checksums (built here, independently of the codec)."""
    assert len(options) % 4 == 0
    hl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (hl // 4) << 4, flags, win, 0, urg) + options + payload
    c = transport_checksum(src, dst, 6, tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, ttl, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:]
        return ip + tcp
    return struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, ttl, src, dst) + tcp


def pair(addrs=V4, local_id=7, peer_id=9):
    """A sender's compressor and the receiver's, for packets from addrs[0]:40000 to addrs[1]:80."""
    a, b = addrs
    tx = HeaderCompressor(a, b, 40000, 80, local_id, peer_id)
    rx = HeaderCompressor(b, a, 80, 40000, peer_id, local_id)
    return tx, rx


def test_pure_ack_v4_exact_bytes():
    # A pure ACK with timestamps: 20 + 12 bytes of TCP header become 22 bytes of compressed header.
    pkt = tcp_packet(*V4, seq=0x01020304, ack=0x0a0b0c0d, win=0x1234, options=TS(0x11111111, 0x22222222))
    c = compress(pkt, 7)
    assert c[:20] != pkt[:20] and c[9] == 105 and struct.unpack("!H", c[2:4])[0] == len(c)
    assert internet_checksum(c[:20]) == 0                       # IPv4 header checksum still right
    hdr = c[20:]
    # cid 7, ctl 1 = TS1 TS2 S A (no ctl 2: 22 bytes are even), window, ack, seq, TSval, TSecr
    assert hdr[:-2] == bytes.fromhex("0763" "1234" "0a0b0c0d" "01020304" "11111111" "22222222")
    assert transport_checksum(c[12:16], c[16:20], 105, hdr) == 0
    assert len(c) == len(pkt) - 10


def test_round_trip_exact_v4_and_v6_with_every_option():
    for addrs in (V4, V6):
        tx, rx = pair(addrs)
        opts = TS(1, 2) + sack((10, 20)) + SNACK(3, 4) + RB
        pkt = tcp_packet(*addrs, flags=0x18 | 0x01 | 0x20, urg=5, options=opts, payload=b"x" * 101)
        c = tx.compress(pkt)
        assert c is not None and len(c) < len(pkt)
        assert rx.expand(c) == pkt
        assert rx.table.statistics()["hc_expanded"] == 1
        assert tx.statistics() == {"hc_compressed": 1, "hc_uncompressed": 0, "hc_bytes_saved": len(pkt) - len(c)}


def test_not_compressed_segments():
    a, b = V4
    assert why_not_compressed(tcp_packet(a, b, flags=0x02, options=b"\x14\x04\x10\x07")) == "flags"  # SYN
    assert why_not_compressed(tcp_packet(a, b, flags=0x50)) == "flags"                                # ECE
    assert why_not_compressed(tcp_packet(a, b, urg=3)) == "flags"                 # urgent pointer without URG
    bad = bytearray(tcp_packet(a, b, payload=b"abc"))
    bad[-1] ^= 1
    assert why_not_compressed(bytes(bad)) == "bad_checksum"
    frag = bytearray(tcp_packet(a, b))
    frag[6] = 0x20                                                                 # MF
    frag[10:12] = b"\0\0"
    frag[10:12] = struct.pack("!H", internet_checksum(bytes(frag[:20])))
    assert why_not_compressed(bytes(frag)) == "fragment"
    hbh = tcp_packet(*V6)
    hbh = hbh[:6] + b"\x00" + hbh[7:]                                              # next header Hop-by-Hop
    assert why_not_compressed(hbh) == "ipv6_ext_header"
    tx, _ = pair()
    assert tx.compress(tcp_packet(a, b, flags=0x02)) is None
    assert tx.statistics()["hc_uncompressed"] == 1
    with pytest.raises(ValueError):
        tx.compress(tcp_packet(a, b, sport=1))                                     # another connection


def test_unknown_context_and_malformed_are_counted():
    tx, rx = pair()
    pkt = tcp_packet(*V4, payload=b"data")
    other = HeaderCompressor(V4[0], V4[1], 40000, 80, 8, 9)        # a connection id rx does not know
    assert rx.expand(other.compress(pkt)) is None
    c = tx.compress(pkt)
    short = bytearray(c[:22])                                       # cut inside the compressed header
    short[2:4] = struct.pack("!H", 22)
    short[10:12] = b"\0\0"
    short[10:12] = struct.pack("!H", internet_checksum(bytes(short[:20])))
    assert rx.expand(bytes(short)) is None
    assert rx.expand(pkt) is None                                    # plain TCP is not protocol 105
    st_ = rx.table.statistics()
    assert (st_["hc_drop_no_context"], st_["hc_drop_malformed"], st_["hc_drop_checksum"], st_["hc_expanded"]) == (1, 2, 0, 0)
    rx.close()
    assert rx.expand(c) is None and rx.table.statistics()["hc_drop_no_context"] == 2


def hc_packet(src, dst, cid, ctl1, ctl2=None, fields=b"", payload=b""):
    """A compressed IPv4 packet written by hand (as a reference peer would send it)."""
    hdr = bytes([cid, ctl1 | (0x80 if ctl2 is not None else 0)]) + (bytes([ctl2]) if ctl2 is not None else b"")
    hdr += fields + b"\0\0"
    assert len(hdr) % 2 == 0
    c = transport_checksum(src, dst, 105, hdr + payload)
    seg = hdr[:-2] + struct.pack("!H", c) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0x1234, 0x4000, 64, 105, 0, src, dst)
    return ip[:10] + struct.pack("!H", internet_checksum(ip)) + ip[12:] + seg


def test_reference_style_header_uses_the_context():
    # A reference peer leaves out S on a pure ACK whose sequence number did not
    # change, and A on data: the context's last values stand in.  Before a packet
    # taught the context, such a packet is dropped as no-context.
    tx, rx = pair()
    a, b = V4
    win_ack = struct.pack("!HI", 1000, 900)
    no_seq = hc_packet(a, b, 7, 0x01, 0x40, fields=win_ack + b"\0")          # A, PAD (even length)
    assert rx.expand(no_seq) is None
    assert rx.table.statistics()["hc_drop_no_context"] == 1
    full = hc_packet(a, b, 7, 0x04 | 0x02 | 0x01, fields=win_ack + struct.pack("!I", 500), payload=b"a")
    assert rx.expand(full) == tcp_packet(a, b, seq=500, ack=900, win=1000, flags=0x18, payload=b"a")
    assert rx.expand(no_seq) == tcp_packet(a, b, seq=500, ack=900, win=1000)
    data_only = hc_packet(a, b, 7, 0x02, fields=struct.pack("!I", 501), payload=b"bc")   # S only
    assert rx.expand(data_only) == tcp_packet(a, b, seq=501, ack=900, win=1000, payload=b"bc")
    # options without NOPs (as the reference sends them) get NOP padding to 32 bits
    mss = hc_packet(a, b, 7, 0x03, 0x80, fields=win_ack + struct.pack("!I", 503) + b"\x02" + b"\x13\x02")
    assert rx.expand(mss) == tcp_packet(a, b, seq=503, ack=900, win=1000, options=b"\x13\x02\x01\x01")
    # ACKR: the ACK flag is clear; RST and FIN map to their flags
    rst = hc_packet(a, b, 7, 0x03, 0x10 | 0x04 | 0x40, fields=win_ack + struct.pack("!I", 504) + b"\0")
    assert rx.expand(rst) == tcp_packet(a, b, seq=504, ack=900, win=1000, flags=0x04)
    assert rx.table.statistics() == {"hc_expanded": 5, "hc_drop_no_context": 1, "hc_drop_checksum": 0,
                                     "hc_drop_malformed": 0, "hc_contexts": 1}


def test_table_grows_and_removes():
    t = HcTable(4)
    addrs = [bytes([198, 18, 1, i]) for i in range(200)]
    for i, a in enumerate(addrs):
        t.add(a, V4[1], 1000 + i, 80, i % 256)
    assert len(t) == 200
    for i, a in enumerate(addrs[::2]):
        assert t.remove(a, V4[1], (2 * i) % 256)
    assert len(t) == 100 and not t.remove(addrs[0], V4[1], 0)
    for i, a in enumerate(addrs):
        if i % 2:
            pkt = tcp_packet(a, V4[1], sport=1000 + i, dport=80, payload=b"z")
            assert t.expand(compress(pkt, i % 256)) == pkt
    assert t.statistics()["hc_expanded"] == 100


# ---- properties -------------------------------------------------------------------

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
ts_opt = st.builds(TS, u32, u32)
snack_opt = st.builds(SNACK, u16, u16)
sack_opt = st.lists(st.tuples(u32, u32), min_size=1, max_size=3).map(lambda b: sack(*b))
other_opt = st.sampled_from([b"\x01\x01\x01\x01", CE, b"\x02\x04\x05\xb4", b"\x01\x03\x03\x07",
                             b"\xfd\x04\xab\xcd", b"\x00\x00\x00\x00", b"\x01\x00\x00\x00"])


@st.composite
def option_lists(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(draw(ts_opt))
    parts += draw(st.lists(st.one_of(sack_opt, other_opt, snack_opt, st.just(RB)), max_size=3))
    if draw(st.booleans()):
        parts.append(draw(snack_opt))
    if draw(st.booleans()):
        parts.append(RB)
    if draw(st.booleans()):
        parts = draw(st.permutations(parts))
    opts = b"".join(parts)
    if len(opts) > 40:
        opts = opts[:40]                   # may cut an option: a malformed list travels verbatim
    return opts + b"\x00" * (-len(opts) % 4)


@st.composite
def segments(draw):
    addrs = draw(st.sampled_from([V4, V6]))
    flags = 0x10 * draw(st.booleans()) | draw(st.sampled_from([0, 0x01, 0x04, 0x08, 0x09, 0x20, 0x28, 0x29]))
    urg = draw(u16) if flags & 0x20 else 0
    return tcp_packet(*addrs, sport=draw(u16), dport=draw(u16), seq=draw(u32), ack=draw(u32), flags=flags,
                      win=draw(u16), urg=urg, options=draw(option_lists()),
                      payload=draw(st.binary(max_size=300)), ip_id=draw(u16), ttl=draw(st.integers(1, 255)))


def _ctx_for(pkt, cid):
    t = HcTable()
    v6 = pkt[0] >> 4 == 6
    src, dst = (pkt[8:24], pkt[24:40]) if v6 else (pkt[12:16], pkt[16:20])
    l4 = 40 if v6 else 20
    sport, dport = struct.unpack("!HH", pkt[l4:l4 + 4])
    t.add(src, dst, sport, dport, cid)
    return t


@PROPS
@given(segments(), st.integers(0, 255))
def test_prop_compress_expand_is_byte_exact(pkt, cid):
    c = compress(pkt, cid)
    assert c is not None, why_not_compressed(pkt)
    assert len(c) < len(pkt)
    assert c[9 if c[0] >> 4 == 4 else 6] == 105
    assert _ctx_for(pkt, cid).expand(c) == pkt


@PROPS
@given(st.lists(segments(), min_size=3, max_size=6), st.data())
def test_prop_losing_one_packet_does_not_break_the_next(pkts, data):
    # one connection: give every packet the same addresses and ports
    first = pkts[0]
    v6 = first[0] >> 4 == 6
    l4 = 40 if v6 else 20
    conn = []
    for p in pkts:
        if (p[0] >> 4 == 6) != v6:
            continue
        pl4 = 40 if v6 else 20
        rebuilt = bytearray(p)
        if v6:
            rebuilt[8:40] = first[8:40]
        else:
            rebuilt[12:20] = first[12:20]
        rebuilt[pl4:pl4 + 4] = first[l4:l4 + 4]
        # fix the checksums for the new addresses and ports
        rebuilt[pl4 + 16:pl4 + 18] = b"\0\0"
        src, dst = (bytes(rebuilt[8:24]), bytes(rebuilt[24:40])) if v6 else (bytes(rebuilt[12:16]), bytes(rebuilt[16:20]))
        rebuilt[pl4 + 16:pl4 + 18] = struct.pack("!H", transport_checksum(src, dst, 6, bytes(rebuilt[pl4:])))
        if not v6:
            rebuilt[10:12] = b"\0\0"
            rebuilt[10:12] = struct.pack("!H", internet_checksum(bytes(rebuilt[:20])))
        conn.append(bytes(rebuilt))
    lost = data.draw(st.integers(0, len(conn) - 1))
    t = _ctx_for(conn[0], 3)
    for i, p in enumerate(conn):
        c = compress(p, 3)
        if i == lost:
            continue                       # the link lost it
        assert t.expand(c) == p
    assert t.statistics()["hc_expanded"] == len(conn) - 1


@PROPS
@given(segments(), st.data())
def test_prop_corruption_is_detected(pkt, data):
    c = compress(pkt, 5)
    l4 = 40 if pkt[0] >> 4 == 6 else 20
    i = data.draw(st.integers(l4, len(c) - 1))       # any byte of the compressed segment
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(c)
    bad[i] ^= 1 << bit
    t = _ctx_for(pkt, 5)
    assert t.expand(bytes(bad)) is None
    s = t.statistics()
    assert s["hc_drop_checksum"] == 1 and s["hc_expanded"] == 0


# ---- the capture path: a real AF_PACKET ring in a namespace -----------------------

HC_RECV = r"""
import sys, json, time
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing, HC_EXPANDED
from stackpep._fast.scpshc import HcTable
t = HcTable()
for src, dst, sport, dport, cid in json.loads(sys.argv[1]):
    t.add(bytes.fromhex(src), bytes.fromhex(dst), sport, dport, cid)
ring = PacketRing(IFNAME, client_side=True, hc_table=t)
plain = PacketRing(IFNAME, client_side=True)          # no table: protocol 105 never reaches it
print("READY", flush=True)
got, other = [], []
end = time.time() + 10
while time.time() < end and (len(got) < WANT or ring.statistics()["rx_packets"] < FRAMES):
    got += ring.read_batch(); other += plain.read_batch(); time.sleep(0.01)
time.sleep(0.2)
got += ring.read_batch(); other += plain.read_batch()
print(json.dumps({"stats": ring.statistics(), "table": t.statistics(), "plain": plain.statistics(),
                  "got": [(k.hex(), p.hex(), f) for k, p, f in got], "other": len(other),
                  "HC_EXPANDED": HC_EXPANDED}))
"""

HC_SEND = r"""
import sys, json
sys.path.insert(0, ROOT)
from stackpep._fast.capture import PacketRing
ring = PacketRing(IFNAME, client_side=True)
print(ring.send_batch([bytes.fromhex(h) for h in json.loads(sys.stdin.read())], bytes(12)))
"""


@pytest.mark.netns
def test_capture_expands_compressed_frames_and_counts_the_rest():
    from stackpep.testbed.netns import Network
    from stackpep._fast.capture import split_key

    root = str(__import__("pathlib").Path(__import__("stackpep").__file__).resolve().parents[1])
    a4, b4 = bytes([198, 18, 0, 2]), bytes([198, 18, 1, 2])
    a6, b6 = bytes.fromhex("fd000001" + "00" * 11 + "02"), bytes.fromhex("fd000002" + "00" * 11 + "02")
    p4 = tcp_packet(a4, b4, sport=40000, dport=80, flags=0x18, options=TS(7, 8) + RB, payload=b"over the link")
    p6 = tcp_packet(a6, b6, sport=40001, dport=443, flags=0x11, options=TS(9, 10) + SNACK(1, 2), payload=b"v6")
    c4, c6 = compress(p4, 3), compress(p6, 4)
    corrupt = bytearray(c4)
    corrupt[-1] ^= 0x40                                               # a data byte: checksum fails
    unknown = compress(tcp_packet(a4, b4, sport=40000, dport=80), 99)  # no context for id 99
    plain_tcp = tcp_packet(a4, b4, sport=40002, dport=80, flags=0x10)
    frames = [c4, c6, bytes(corrupt), unknown, plain_tcp]
    contexts = [(a4.hex(), b4.hex(), 40000, 80, 3), (a6.hex(), b6.hex(), 40001, 443, 4)]
    with Network() as net:
        c = net.add_host("client")
        b = net.add_host("box")
        ci, bi = net.link(c, b, ["198.18.0.2/24", "fd00:1::2/64"], ["198.18.0.1/24", "fd00:1::1/64"])
        prog = HC_RECV.replace("ROOT", repr(root)).replace("IFNAME", repr(bi)) \
            .replace("WANT", "3").replace("FRAMES", str(len(frames)))
        rcv = b.popen([sys.executable, "-c", prog, json.dumps(contexts)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert rcv.stdout.readline().strip() == "READY", rcv.stderr.read()
        sent = c.run([sys.executable, "-c", HC_SEND.replace("ROOT", repr(root)).replace("IFNAME", repr(ci))],
                     input=json.dumps([f.hex() for f in frames]))
        assert sent.stdout.strip() == str(len(frames))
        out_s, err = rcv.communicate(timeout=30)
    out = json.loads(out_s)
    got = [(bytes.fromhex(k), bytes.fromhex(p), f) for k, p, f in out["got"]]
    hc = out["HC_EXPANDED"]
    # the two compressed frames come out as the exact original segments, flagged; plain TCP as before
    assert [p for k, p, f in got] == [p4, p6, plain_tcp]
    assert [f for k, p, f in got] == [0x18 | hc, 0x11 | hc, 0x10]
    assert split_key(got[0][0]) == (a4, 40000, b4, 80) and split_key(got[1][0]) == (a6, 40001, b6, 443)
    st_ = out["stats"]
    assert (st_["rx_packets"], st_["rx_hc_expanded"], st_["rx_hc_dropped"], st_["rx_drop_malformed"]) == (5, 2, 2, 0)
    assert out["table"] == {"hc_expanded": 2, "hc_drop_no_context": 1, "hc_drop_checksum": 1,
                            "hc_drop_malformed": 0, "hc_contexts": 2}
    # a ring without a table keeps its old filter: only the plain TCP frame reaches it
    assert out["other"] == 1 and out["plain"]["rx_packets"] == 1
