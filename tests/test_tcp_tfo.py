"""TCP Fast Open in the engine (RFC 7413; docs/tcp-engine.md "TCP Fast Open"): what the
scripts in vectors/tcp/tfo/ cannot say -- the cookie against an independent SipHash-2-4,
two engines over a lossy link that duplicates packets (SYN data delivered exactly once),
peers with other keys or without Fast Open, config checks, and tshark reading the
option the engine emits."""
from __future__ import annotations

import hashlib
import struct

import pytest

from stackpep.tcp import events as ev
from stackpep.tcp.config import TcpConfig
from stackpep.tcp.linkmodel import A_ADDR4, B_ADDR4, LinkModel, run_pair

import stackpep._fast.tcp as tcp  # noqa: E402
import stackpep._fast.wire as wire  # noqa: E402
TcpConnection = tcp.TcpConnection

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")
A6 = bytes.fromhex("fd000000000000000000000000000001")
B6 = bytes.fromhex("fd000000000000000000000000000002")


# ---- an independent SipHash-2-4 (Aumasson & Bernstein, "SipHash: a fast short-input PRF") ----
def _siphash24(key: bytes, msg: bytes) -> bytes:
    M = (1 << 64) - 1

    def rotl(x, b):
        return ((x << b) | (x >> (64 - b))) & M

    k0, k1 = struct.unpack("<QQ", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rnd():
        v[0] = (v[0] + v[1]) & M; v[1] = rotl(v[1], 13) ^ v[0]; v[0] = rotl(v[0], 32)  # noqa: E702
        v[2] = (v[2] + v[3]) & M; v[3] = rotl(v[3], 16) ^ v[2]  # noqa: E702
        v[0] = (v[0] + v[3]) & M; v[3] = rotl(v[3], 21) ^ v[0]  # noqa: E702
        v[2] = (v[2] + v[1]) & M; v[1] = rotl(v[1], 17) ^ v[2]; v[2] = rotl(v[2], 32)  # noqa: E702

    tail = len(msg) % 8
    blocks = [struct.unpack_from("<Q", msg, i)[0] for i in range(0, len(msg) - tail, 8)]
    blocks.append(int.from_bytes(msg[len(msg) - tail:], "little") | ((len(msg) & 0xFF) << 56))
    for m in blocks:
        v[3] ^= m
        rnd(); rnd()  # noqa: E702
        v[0] ^= m
    v[2] ^= 0xFF
    for _ in range(4):
        rnd()
    return struct.pack("<Q", v[0] ^ v[1] ^ v[2] ^ v[3])


def test_siphash_reference_vectors():
    # the paper's Appendix A / the reference vectors.h: key 00..0f, messages 00 01 02 ...
    k = bytes(range(16))
    assert tcp.siphash_2_4(k, b"").hex() == "310e0edd47db6f72"
    assert tcp.siphash_2_4(k, bytes(range(15))).hex() == "e545be4961ca29a1"
    for n in range(64):
        assert tcp.siphash_2_4(k, bytes(range(n))) == _siphash24(k, bytes(range(n))), n


def test_cookie_is_siphash_of_client_then_server_address():
    for client, server in ((A_ADDR4, B_ADDR4), (B_ADDR4, A_ADDR4), (A6, B6)):
        c = tcp.fast_open_cookie(KEY, client, server)
        assert c == _siphash24(KEY, client + server) and len(c) == 8
    assert tcp.fast_open_cookie(KEY, A_ADDR4, B_ADDR4) != tcp.fast_open_cookie(OTHER_KEY, A_ADDR4, B_ADDR4)
    assert tcp.fast_open_cookie(KEY, A_ADDR4, B_ADDR4) != tcp.fast_open_cookie(KEY, B_ADDR4, A_ADDR4)
    # the scripts in vectors/tcp/tfo/ spell these out
    assert tcp.fast_open_cookie(KEY, bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])).hex() == "96ea8f53bb3e40c9"
    assert tcp.fast_open_cookie(KEY, bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1])).hex() == "84e8b610cbc2c760"


@pytest.mark.parametrize("kwargs, msg", [
    (dict(tfo_key=b"short"), "16 bytes"),
    (dict(tfo_client=True), "need tfo_key"),
    (dict(tfo_server=True), "need tfo_key"),
    (dict(tfo_key=KEY, tfo_max_syn_data=0), "tfo_max_syn_data"),
])
def test_config_rejects(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TcpConfig(**kwargs)


def _cfg(**kw):
    base = dict(min_rto_us=200_000, initial_rto_us=1_000_000)
    base.update(kw)
    return TcpConfig(**base)


def _open_pair(cfg_a, cfg_b, first: bytes):
    """A sends `first` before connect(); returns (a, b, SYN packet, b's reply packets)."""
    a = TcpConnection(cfg_a, A_ADDR4, 40000, B_ADDR4, 80, 1000)
    b = TcpConnection(cfg_b, B_ADDR4, 80, A_ADDR4, 40000, 9000)
    b.listen()
    assert a.send(first) == len(first)
    a.connect(0)
    [syn] = a.packets_to_send(0)
    b.receive_packet(syn, 50_000)
    return a, b, syn, b.packets_to_send(50_000)


def _events(conn):
    out = []
    while (e := conn.next_event()) is not None:
        out.append(e)
    return out


def test_first_bytes_cross_in_the_syn_and_are_readable_before_the_handshake_ends():
    first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    a, b, syn, [synack] = _open_pair(_cfg(tfo_key=KEY, tfo_client=True), _cfg(tfo_key=KEY, tfo_server=True), first)
    s = wire.parse_packet(syn)
    assert s.fast_open == tcp.fast_open_cookie(KEY, A_ADDR4, B_ADDR4) and bytes(s.payload) == first
    assert b.state == "SYN-RECEIVED"
    assert _events(b) == [ev.FastOpenAccepted(len(first)), ev.DataReadable()]
    assert b.recv(1000) == first
    sa = wire.parse_packet(synack)
    assert sa.ack == 1000 + 1 + len(first) and sa.fast_open is None
    a.receive_packet(synack, 100_000)
    assert _events(a) == [ev.FastOpenResult(len(first), len(first)), ev.Connected()]
    [ack] = a.packets_to_send(100_000)
    assert wire.parse_packet(ack).seq == 1000 + 1 + len(first) and wire.parse_packet(ack).payload_len == 0
    b.receive_packet(ack, 150_000)
    assert b.state == "ESTABLISHED" and b.recv(1000) == b""
    assert (a.statistics().retransmits, b.statistics().tfo_syn_data_accepted) == (0, len(first))


@pytest.mark.parametrize("server_cfg", [
    _cfg(tfo_key=OTHER_KEY, tfo_server=True),     # another box's key: cookie refused
    _cfg(),                                        # no Fast Open at all (plain TCP: RFC 9293 queues it)
], ids=["other-key", "plain-tcp"])
def test_peer_that_is_not_ours_gets_the_bytes_once(server_cfg):
    first = bytes(range(200))
    a, b, _, [synack] = _open_pair(_cfg(tfo_key=KEY, tfo_client=True), server_cfg, first)
    assert b.recv(1000) == b""                     # nothing readable before ESTABLISHED
    a.receive_packet(synack, 100_000)
    res = [e for e in _events(a) if isinstance(e, ev.FastOpenResult)]
    pkts = a.packets_to_send(100_000)
    for p in pkts:
        b.receive_packet(p, 150_000)
    assert b.state == "ESTABLISHED"
    assert b.recv(1000) == first and b.recv(1000) == b""
    if server_cfg.tfo_server:
        # the SYN-ACK acknowledged the SYN only and offered the other key's cookie
        assert res == [ev.FastOpenResult(200, 0)]
        assert wire.parse_packet(synack).fast_open == tcp.fast_open_cookie(OTHER_KEY, A_ADDR4, B_ADDR4)
        assert [wire.parse_packet(p).payload_len for p in pkts] == [200]
        assert b.statistics().tfo_cookie_rejected == 1
        assert a.statistics().tfo_data_retransmitted_after_handshake == 200
    else:
        assert res == [ev.FastOpenResult(200, 200)]
        assert b.statistics().tfo_cookie_rejected == 0


def _pair_over_link(seed, loss, duplicate, key_a, key_b, size=300_000):
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32)
    a = TcpConnection(_cfg(tfo_key=key_a, tfo_client=True), A_ADDR4, 40000, B_ADDR4, 8080, 1_000_000_000)
    b = TcpConnection(_cfg(tfo_key=key_b, tfo_server=True), B_ADDR4, 8080, A_ADDR4, 40000, 2_000_000_000)
    res = run_pair(a, b, data, b"", LinkModel(seed * 2, 50_000, 0, loss, duplicate=duplicate),
                   LinkModel(seed * 2 + 1, 50_000, 0, loss, duplicate=duplicate))
    assert res.received_by_b == data             # every byte once, in order: a duplicated
    assert res.stats_a.bytes_acked == len(data)  # SYN never delivers its data twice
    return res


@pytest.mark.parametrize("seed", range(6))
def test_two_engines_over_a_lossy_duplicating_link(seed):
    res = _pair_over_link(seed, 0.05, 0.2, KEY, KEY)
    sa, sb = res.stats_a, res.stats_b
    assert sa.tfo_syn_data_sent > 0
    assert sa.tfo_syn_data_acked + sa.tfo_data_retransmitted_after_handshake == sa.tfo_syn_data_sent
    assert sb.tfo_syn_data_accepted in (0, sa.tfo_syn_data_sent)
    assert sb.tfo_cookie_rejected == 0


@pytest.mark.parametrize("seed", range(3))
def test_two_engines_with_different_keys_fall_back(seed):
    res = _pair_over_link(seed, 0.02, 0.1, KEY, OTHER_KEY)
    sa, sb = res.stats_a, res.stats_b
    assert sa.tfo_syn_data_acked == 0 and sb.tfo_syn_data_accepted == 0
    assert sa.tfo_data_retransmitted_after_handshake == sa.tfo_syn_data_sent > 0 or sa.tfo_syn_data_sent == 0


def test_connect_without_fast_open_sends_a_plain_syn():
    a = TcpConnection(_cfg(tfo_key=KEY, tfo_client=True), A_ADDR4, 40000, B_ADDR4, 80, 1)
    a.send(b"x" * 100)
    a.connect(0, fast_open=False)
    [syn] = a.packets_to_send(0)
    s = wire.parse_packet(syn)
    assert s.fast_open is None and s.payload_len == 0 and a.statistics().tfo_syn_data_sent == 0


def test_syn_data_fits_the_mtu():
    # a 1500-byte MTU and every SYN option: the SYN with data is at most 1500 bytes
    a = TcpConnection(_cfg(tfo_key=KEY, tfo_client=True, tfo_max_syn_data=65535, mss=1460),
                      A_ADDR4, 40000, B_ADDR4, 80, 1)
    a.send(bytes(5000))
    a.connect(0)
    [syn] = a.packets_to_send(0)
    s = wire.parse_packet(syn)
    assert len(syn) == 1500 and s.payload_len == 1500 - 20 - s.tcp_hdr_len


def _pcap(path, packets):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))   # LINKTYPE_RAW
        for i, p in enumerate(packets):
            f.write(struct.pack("<IIII", i, 0, len(p), len(p)) + p)


def test_emitted_fast_open_option_decodes_in_tshark(tmp_path):
    # the SYN with data and cookie, and a SYN-ACK answering a cookie request, read back
    # by an independent dissector: the cookie bytes, the request, the data length
    import shutil
    import subprocess
    if not shutil.which("tshark"):
        pytest.skip("tshark not installed")
    first = bytes(range(100))
    _, _, syn, _ = _open_pair(_cfg(tfo_key=KEY, tfo_client=True), _cfg(tfo_key=KEY, tfo_server=True), first)
    b = TcpConnection(_cfg(tfo_key=KEY, tfo_server=True), B_ADDR4, 80, A_ADDR4, 40001, 9000)
    b.listen()
    req = wire.Segment()
    req.ip_version, req.src, req.dst, req.sport, req.dport = 4, A_ADDR4, B_ADDR4, 40001, 80
    req.seq, req.flags, req.window, req.mss, req.fast_open = 77, 0x02, 65535, 1460, b""
    b.receive_packet(req.to_bytes(), 0)
    [synack] = b.packets_to_send(0)
    path = tmp_path / "tfo.pcap"
    _pcap(path, [req.to_bytes(), syn, synack])
    out = subprocess.run(["tshark", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-T", "fields",
                          "-e", "tcp.options.tfo.cookie", "-e", "tcp.options.tfo.request", "-e", "tcp.len",
                          "-e", "tcp.checksum.status", "-e", "_ws.expert.message"],
                         capture_output=True, text=True, timeout=60)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) == 3, out
    norm = [r[0].replace(":", "") for r in rows]
    assert rows[0][1] != "" and norm[0] == ""                       # the request, no cookie
    assert norm[1] == tcp.fast_open_cookie(KEY, A_ADDR4, B_ADDR4).hex() and rows[1][2] == "100"
    assert norm[2] == tcp.fast_open_cookie(KEY, A_ADDR4, B_ADDR4).hex() and rows[2][2] == "0"
    assert all(r[3] in ("1", "Good") for r in rows), rows
    assert not any("alformed" in r[4] for r in rows), rows
