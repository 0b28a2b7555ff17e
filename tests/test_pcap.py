"""The packet capture (stackpep.io.pcap) on bytes: the pcapng the writer makes,
read back by independent readers -- scapy (interface name, direction, packet,
time), dpkt's block classes (lengths, interface ids, link type) and tshark.
Rotation and write failures on files in a temporary directory; the tap over a
memory port; the configuration keys and `run --pcap` validation."""
import os
import shutil
import struct
import subprocess
import sys

import dpkt
import pytest
import trio
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapNgReader

from stackpep.io.pcap import (EPB_OVERHEAD, INBOUND, LINKTYPE_RAW, OUTBOUND, PcapngWriter, RotatingPcap,
                              interface_path, path_problem, rotated_names, tap_ports)
from stackpep.io.ports import MemoryPort
from stackpep.pep.config import check_dict
from stackpep.testbed.splitbox import env_with_path

TS = 1_785_000_000_123_456  # µs since the epoch (2026), beyond 32 bits on purpose

SYN4 = bytes(IP(src="198.18.0.2", dst="198.18.1.2", id=1) / TCP(sport=40000, dport=80, flags="S", seq=1000))
SYNACK4 = bytes(IP(src="198.18.1.2", dst="198.18.0.2", id=2) / TCP(sport=80, dport=40000, flags="SA", seq=5000,
                                                                   ack=1001))
DATA6 = bytes(IPv6(src="fd00:1::2", dst="fd00:2::2") / TCP(sport=40001, dport=80, flags="PA", seq=7, ack=9)
              / (b"GET / HTTP/1.1\r\n\r\n"))  # 18 bytes: the block needs padding
# An ICMP "fragmentation needed" (RFC 1191) quoting a segment the box sent.
ICMP4 = bytes(IP(src="198.18.1.1", dst="198.18.0.2") / ICMP(type=3, code=4, nexthopmtu=1400)
              / IP(src="198.18.0.2", dst="198.18.1.2") / TCP(sport=40000, dport=80, flags="A"))
IFS = [("box1", "stackpep client side"), ("box2", "stackpep server side")]
PACKETS = [(0, INBOUND, SYN4), (1, OUTBOUND, SYN4), (1, INBOUND, SYNACK4), (0, OUTBOUND, SYNACK4),
           (0, INBOUND, DATA6), (0, INBOUND, ICMP4)]


def _file(tmp_path, writer, packets, ts=TS):
    path = tmp_path / "w.pcapng"
    path.write_bytes(writer.header() + b"".join(writer.packet(i, ts + n, p, d)
                                                for n, (i, d, p) in enumerate(packets)))
    return path


def _blocks(data: bytes):
    """(type, block bytes) by the generic block framing (pcapng §3.1)."""
    out, off = [], 0
    while off < len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        assert blen % 4 == 0 and struct.unpack_from("<I", data, off + blen - 4)[0] == blen
        out.append((btype, data[off:off + blen]))
        off += blen
    assert off == len(data)
    return out


def _stderr(res):
    # tshark's one line about running as root is not about the file
    return [line for line in res.stderr.splitlines() if not line.startswith("Running as user")]


def tshark(path, fields, extra=()):
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=|",
                          *[a for f in fields for a in ("-e", f)], *extra], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and _stderr(res) == [], res.stderr
    return [line.split("|") for line in res.stdout.splitlines()]


def tshark_expert_problems(path):
    """Expert items of severity warning or error tshark reports for the file."""
    res = subprocess.run(["tshark", "-n", "-r", str(path), "-q", "-z", "expert,warn"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and _stderr(res) == [], res.stderr
    return [line for line in res.stdout.splitlines() if line.strip() and not line.startswith("=")
            and "Expert Info" not in line and "Severity" not in line]


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


# --------------------------------------------------------------------- writer
def test_writer_packets_read_back_by_scapy(tmp_path):
    path = _file(tmp_path, PcapngWriter(IFS), PACKETS)
    with PcapNgReader(str(path)) as r:
        got = list(r)
    assert [(p.sniffed_on, p.direction, bytes(p)) for p in got] == \
        [(IFS[i][0], d, pkt) for i, d, pkt in PACKETS]
    # if_tsresol 6: microseconds
    assert [int(round(p.time * 1_000_000)) for p in got] == [TS + n for n in range(len(PACKETS))]


def test_writer_blocks_read_back_by_dpkt(tmp_path):
    w = PcapngWriter(IFS, application="stackpep test")
    data = _file(tmp_path, w, PACKETS).read_bytes()
    blocks = _blocks(data)
    assert [t for t, _ in blocks] == [dpkt.pcapng.PCAPNG_BT_SHB] + [dpkt.pcapng.PCAPNG_BT_IDB] * 2 + \
        [dpkt.pcapng.PCAPNG_BT_EPB] * len(PACKETS)
    shb = dpkt.pcapng.SectionHeaderBlockLE(blocks[0][1])
    assert (shb.bom, shb.v_major, shb.v_minor) == (dpkt.pcapng.BYTE_ORDER_MAGIC, 1, 0)
    assert [(o.code, o.data) for o in shb.opts] == [(4, b"stackpep test"), (0, b"")]
    for (_, raw), (name, desc) in zip(blocks[1:3], IFS):
        idb = dpkt.pcapng.InterfaceDescriptionBlockLE(raw)
        assert (idb.linktype, idb.snaplen) == (LINKTYPE_RAW, 262144)
        assert [(o.code, o.data) for o in idb.opts] == [(2, name.encode()), (3, desc.encode()), (9, b"\x06"),
                                                        (0, b"")]
    for n, ((_, raw), (i, d, pkt)) in enumerate(zip(blocks[3:], PACKETS)):
        epb = dpkt.pcapng.EnhancedPacketBlockLE(raw)
        assert (epb.iface_id, epb.caplen, epb.pkt_len, epb.pkt_data) == (i, len(pkt), len(pkt), pkt)
        assert (epb.ts_high << 32 | epb.ts_low) == TS + n
        assert [(o.code, o.data) for o in epb.opts] == [(2, struct.pack("<I", d)), (0, b"")]
        assert len(raw) == w.block_len(len(pkt))


@needs_tshark
def test_writer_file_read_by_tshark(tmp_path):
    path = _file(tmp_path, PcapngWriter(IFS), PACKETS)
    rows = tshark(path, ["frame.interface_name", "frame.packet_flags_direction", "frame.len", "ip.src", "ipv6.src",
                         "tcp.flags.str", "icmp.type", "frame.time_epoch"])
    assert [r[:3] for r in rows] == [[IFS[i][0], f"0x{d:08x}", str(len(p))] for i, d, p in PACKETS]
    assert [r[3] or r[4] for r in rows] == ["198.18.0.2", "198.18.0.2", "198.18.1.2", "198.18.1.2", "fd00:1::2",
                                            "198.18.1.1,198.18.0.2"]
    assert [r[5] for r in rows][:5] == ["··········S·", "··········S·", "·······A··S·", "·······A··S·",
                                        "·······AP···"]
    assert rows[5][6] == "3"
    assert rows[0][7] == "1785000000.123456000"
    assert tshark_expert_problems(path) == []


def test_writer_truncates_to_snaplen(tmp_path):
    big = bytes(IP(src="198.18.1.2", dst="198.18.0.2") / TCP(sport=80, dport=40000, flags="A") / (b"x" * 64000))
    w = PcapngWriter(IFS, snaplen=1000)
    blk = w.packet(0, TS, big, INBOUND)
    assert len(blk) == EPB_OVERHEAD + 1000 == w.block_len(len(big))
    epb = dpkt.pcapng.EnhancedPacketBlockLE(blk)
    assert (epb.caplen, epb.pkt_len, epb.pkt_data) == (1000, len(big), big[:1000])
    if shutil.which("tshark"):
        path = tmp_path / "t.pcapng"
        path.write_bytes(w.header() + blk)
        assert tshark(path, ["frame.cap_len", "frame.len"]) == [["1000", str(len(big))]]


# ------------------------------------------------------------------- rotation
def _read_all(path):
    with PcapNgReader(str(path)) as r:
        return [bytes(p) for p in r]


def _numbered(n):
    # distinct, equal-length packets: the sequence number says which
    return [bytes(IP(src="198.18.0.2", dst="198.18.1.2") / TCP(sport=40000, dport=80, flags="A", seq=i)
                  / (b"y" * 100)) for i in range(n)]


def test_rotation_keeps_files_each_bounded_and_complete(tmp_path):
    path = str(tmp_path / "pep.pcapng")
    header_len = len(PcapngWriter(IFS).header())
    pkts = _numbered(50)
    blk = PcapngWriter(IFS).block_len(len(pkts[0]))
    per_file = 7
    max_bytes = header_len + per_file * blk + blk - 1  # room for 7 blocks, not 8
    cap = RotatingPcap(path, IFS, max_bytes=max_bytes, files=3)
    for i in range(0, 50, 5):  # batches of 5
        cap.write(i % 2, INBOUND, pkts[i:i + 5], TS + i)
    cap.close()
    # 50 packets, 7 a file: files of 7 x 7 and one of 1; 7 rotations; the last 3 files remain.
    assert cap.counters == {"pcap_packets": 50, "pcap_bytes": 8 * header_len + 50 * blk, "pcap_truncated": 0,
                            "pcap_rotations": 7, "pcap_write_errors": 0, "pcap_lost": 0}
    names = sorted(os.listdir(tmp_path))
    assert names == ["pep.pcapng", "pep.pcapng.1", "pep.pcapng.2"]
    newest_first = [_read_all(p) for p in rotated_names(path, 3)]
    assert newest_first == [pkts[49:], pkts[42:49], pkts[35:42]]  # packets 0..34 went with the oldest files
    for p in rotated_names(path, 3):
        assert os.path.getsize(p) <= max_bytes
        assert open(p, "rb").read(header_len) == cap.writer.header()  # SHB and both IDBs, each file
        if shutil.which("tshark"):
            assert len(tshark(p, ["frame.number"])) == len(_read_all(p))


def test_one_file_restarts_itself(tmp_path):
    path = str(tmp_path / "one.pcapng")
    header_len = len(PcapngWriter(IFS).header())
    pkts = _numbered(10)
    blk = PcapngWriter(IFS).block_len(len(pkts[0]))
    cap = RotatingPcap(path, IFS, max_bytes=header_len + 4 * blk, files=1)
    cap.write(0, OUTBOUND, pkts, TS)
    cap.close()
    assert os.listdir(tmp_path) == ["one.pcapng"]
    assert _read_all(path) == pkts[8:]
    assert cap.counters["pcap_rotations"] == 2


def test_start_rotates_the_previous_run(tmp_path):
    path = str(tmp_path / "pep.pcapng")
    pkts = _numbered(3)
    for run in range(3):
        cap = RotatingPcap(path, IFS, max_bytes=1 << 20, files=2)
        cap.write(0, INBOUND, [pkts[run]], TS)
        cap.close()
    assert sorted(os.listdir(tmp_path)) == ["pep.pcapng", "pep.pcapng.1"]
    assert (_read_all(path), _read_all(path + ".1")) == ([pkts[2]], [pkts[1]])


def test_snaplen_follows_from_the_size_bound(tmp_path):
    path = str(tmp_path / "s.pcapng")
    big = bytes(IP(src="198.18.1.2", dst="198.18.0.2") / TCP(sport=80, dport=40000, flags="A") / (b"x" * 65400))  # 65440 bytes: a GRO super-frame
    cap = RotatingPcap(path, IFS, max_bytes=65536, files=2)
    header_len = len(cap.writer.header())
    assert cap.writer.snaplen == (65536 - header_len - EPB_OVERHEAD) & ~3
    cap.write(1, INBOUND, [big, big], TS)
    cap.close()
    assert cap.counters["pcap_truncated"] == 2 and cap.counters["pcap_rotations"] == 1
    for p in rotated_names(path, 2):
        assert os.path.getsize(p) <= 65536
        [epb] = [dpkt.pcapng.EnhancedPacketBlockLE(b) for t, b in _blocks(open(p, "rb").read()) if t == 6]
        assert (epb.caplen, epb.pkt_len) == (cap.writer.snaplen, len(big))


def test_write_error_stops_the_capture_not_the_box(tmp_path, caplog):
    cap = RotatingPcap(str(tmp_path / "e.pcapng"), IFS)
    os.close(cap._fd)
    cap._fd = os.open("/dev/full", os.O_WRONLY)  # ENOSPC on every write
    cap.write(0, INBOUND, _numbered(3), TS)
    assert cap.closed
    cap.write(0, INBOUND, _numbered(2), TS)  # no-op once stopped
    assert (cap.counters["pcap_write_errors"], cap.counters["pcap_lost"], cap.counters["pcap_packets"]) == (1, 3, 0)
    assert "packet capture to" in caplog.text and "stopped" in caplog.text


# ------------------------------------------------------------------------ tap
def test_tap_writes_both_directions_and_passes_everything_on(tmp_path):
    client, server = MemoryPort("box1", True), MemoryPort("box2", False)
    tc, ts = tap_ports([client, server], str(tmp_path / "tap.pcapng"))
    clock = iter([TS * 1000 + 999, (TS + 5) * 1000, (TS + 9) * 1000])
    tc._clock = ts._clock = lambda: next(clock)

    async def main():
        client.inject(SYN4)
        client.inject(ICMP4)
        batch = await tc.receive_batch()
        assert [b[1] for b in batch] == [SYN4, ICMP4]
        assert ts.send([SYN4], None) == 1
        assert tc.send([SYNACK4, DATA6], None) == 2

    trio.run(main)
    tc.close()
    ts.close()
    assert server.sent == [SYN4] and client.sent == [SYNACK4, DATA6]
    assert (tc.name, tc.client_side, ts.name, ts.client_side) == ("box1", True, "box2", False)
    assert sorted(os.listdir(tmp_path)) == ["tap.box1.pcapng", "tap.box2.pcapng"]
    hlen = len(tc.pcap.writer.header())
    assert tc.statistics() == {**client.statistics(), "pcap_packets": 4, "pcap_truncated": 0, "pcap_rotations": 0,
                               "pcap_write_errors": 0, "pcap_lost": 0,
                               "pcap_bytes": hlen + sum(tc.pcap.writer.block_len(len(p))
                                                        for p in (SYN4, ICMP4, SYNACK4, DATA6))}
    assert ts.statistics()["pcap_packets"] == 1
    with PcapNgReader(str(tmp_path / "tap.box1.pcapng")) as r:
        got = [(p.sniffed_on, p.direction, bytes(p), int(round(p.time * 1e6))) for p in r]
    assert got == [("box1", INBOUND, SYN4, TS), ("box1", INBOUND, ICMP4, TS),
                   ("box1", OUTBOUND, SYNACK4, TS + 9), ("box1", OUTBOUND, DATA6, TS + 9)]
    with PcapNgReader(str(tmp_path / "tap.box2.pcapng")) as r:
        got = [(p.sniffed_on, p.direction, bytes(p), int(round(p.time * 1e6))) for p in r]
    assert got == [("box2", OUTBOUND, SYN4, TS + 5)]


def test_tap_delegates_port_attributes(tmp_path):
    port = MemoryPort("box1", True)
    port.ifindex = 7
    [tap] = tap_ports([port], str(tmp_path / "p.pcapng"))
    assert tap.ifindex == 7 and tap.port is port
    tap.close()
    assert tap.pcap.closed


@pytest.mark.parametrize("path,ifname,expected", [
    ("/var/tmp/pep.pcapng", "eth0", "/var/tmp/pep.eth0.pcapng"),
    ("/var/tmp/pep", "eth0", "/var/tmp/pep.eth0"),
    ("/var/tmp/.pep", "eth0", "/var/tmp/.pep.eth0"),
    ("/var/tmp/a.b.pcap", "wan", "/var/tmp/a.b.wan.pcap"),
])
def test_interface_path(path, ifname, expected):
    assert interface_path(path, ifname) == expected


# ----------------------------------------------------------------- configuration
BASE = {"interfaces": {"client": ["box1"], "server": ["box2"]}}


def _problems(capture):
    res = check_dict({**BASE, "capture": capture}, "t.toml", {})
    return res if isinstance(res, list) else []


def test_config_pcap_keys(tmp_path):
    cfg = check_dict(BASE, "t.toml", {})
    assert (cfg.pcap, cfg.pcap_max_bytes, cfg.pcap_files) == (None, 64 << 20, 4)  # off by default
    cfg = check_dict({**BASE, "capture": {"pcap": str(tmp_path / "p.pcapng"), "pcap_max_bytes": 65536,
                                          "pcap_files": 2}}, "t.toml", {})
    assert (cfg.pcap, cfg.pcap_max_bytes, cfg.pcap_files) == (str(tmp_path / "p.pcapng"), 65536, 2)
    assert check_dict({**BASE, "capture": {"pcap": ""}}, "t.toml", {}).pcap is None


@pytest.mark.parametrize("capture,key,message", [
    ({"pcap": "pep.pcapng"}, "capture.pcap", "must be an absolute path, got 'pep.pcapng'"),
    ({"pcap": "/nonexistent-stackpep/p.pcapng"}, "capture.pcap", "directory '/nonexistent-stackpep' does not exist"),
    ({"pcap": "/tmp"}, "capture.pcap", "'/tmp' is a directory; give a file name in it"),
    ({"pcap": 5}, "capture.pcap", "must be a string, got 5"),
    ({"pcap_max_bytes": 1000}, "capture.pcap_max_bytes", "bytes per file, 65536 .. 2**40 (got 1000)"),
    ({"pcap_files": 0}, "capture.pcap_files", "number of files kept, 1 .. 1000 (got 0)"),
])
def test_config_pcap_problems(capture, key, message):
    assert [(p.key, p.message) for p in _problems(capture)] == [(key, message)]


def test_a_device_node_is_never_a_capture_file(tmp_path):
    # Rotation renames FILE to FILE.1: with FILE = /dev/null that would move the
    # device node away.  Refused before anything is renamed; /dev/null is untouched.
    assert path_problem("/dev/null") == "'/dev/null' is not a regular file (the capture files rotate by renaming)"
    with pytest.raises(ValueError, match="not a regular file"):
        RotatingPcap("/dev/null", IFS)
    fifo = tmp_path / "f.pcapng"
    os.mkfifo(fifo)
    assert path_problem(str(fifo)) == f"{str(fifo)!r} is not a regular file (the capture files rotate by renaming)"
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert not os.path.exists("/dev/null.1")


def test_path_problem_unwritable(tmp_path, monkeypatch):
    # as a user without write permission on the directory would see it
    monkeypatch.setattr(os, "access", lambda p, mode: p != str(tmp_path))
    assert path_problem(str(tmp_path / "p.pcapng")) == \
        f"directory {str(tmp_path)!r} is not writable (the files rotate by renaming in it)"


def _stackpep(*args, **kw):
    return subprocess.run([sys.executable, "-m", "stackpep", *args], capture_output=True, text=True, timeout=60,
                          env=env_with_path(), cwd="/", **kw)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_check_config_names_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "pep.toml"
    cfg.write_text(f'[interfaces]\nclient = ["box1"]\nserver = ["box2"]\n[capture]\npcap = "{ro}/pep.pcapng"\n')
    # a read-only mount: not writable even for root
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          f"mount -t tmpfs -o ro none {ro} && exec \"$@\"", "sh",
                          sys.executable, "-m", "stackpep", "check-config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd="/", env=env_with_path())
    assert res.returncode == 1
    assert res.stderr.splitlines()[0] == (f"{cfg}:5: capture.pcap: directory '{ro}' is not writable "
                                          "(the files rotate by renaming in it)")


def test_run_pcap_flag_is_checked_before_starting(tmp_path):
    cfg = tmp_path / "pep.toml"
    cfg.write_text('[interfaces]\nclient = ["box1"]\nserver = ["box2"]\n')
    res = _stackpep("run", "-c", str(cfg), "--pcap", "/nonexistent-stackpep/p.pcapng")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "--pcap: /nonexistent-stackpep/p.pcapng: directory '/nonexistent-stackpep' does not exist",
        f"{cfg}: 1 problem(s); not starting"]


def test_tap_writes_what_a_poll_takes(tmp_path):
    # the dispatcher's look between slices of a pass (PacketPort.poll_batch) is captured too
    client = MemoryPort("box1", True)
    (tc,) = tap_ports([client], str(tmp_path / "tap.pcapng"))
    tc._clock = lambda: TS * 1000

    async def main():
        assert tc.poll_batch() == []
        client.inject(SYN4)
        client.inject(ICMP4)
        assert [b[1] for b in tc.poll_batch()] == [SYN4, ICMP4]

    trio.run(main)
    tc.close()
    assert tc.statistics()["pcap_packets"] == 2
    with PcapNgReader(str(tmp_path / "tap.box1.pcapng")) as r:
        assert [(bytes(p), p.direction) for p in r] == [(SYN4, INBOUND), (ICMP4, INBOUND)]
