"""Internet checksum (RFC 1071), pseudo-headers, RFC 1624 updates and
checksum-partial completion, against a plain-Python reference."""
import os
import struct
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from stackpep._fast import checksum as cs
from stackpep._fast import wire as w
from stackpep.wire import vectors


VECTOR_ROOT = Path(__file__).resolve().parents[1] / "vectors" / "wire"

def ref_sum(data: bytes, init: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = init + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_csum(data: bytes, init: int = 0) -> int:
    return ~ref_sum(data, init) & 0xFFFF


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 7))
def test_matches_reference_at_any_length_and_alignment(data, skew):
    buf = bytearray(skew) + data
    view = memoryview(buf)[skew:]          # unaligned starts
    assert cs.internet_checksum(view) == ref_csum(data)


def test_rfc1071_example_and_large_buffers():
    # RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2
    assert cs.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == ~0xDDF2 & 0xFFFF
    for n in (0, 1, 31, 32, 33, 1500, 9000, 65535):
        data = os.urandom(n)
        assert cs.internet_checksum(data) == ref_csum(data)
    assert cs.internet_checksum(b"\xff" * 9000) == 0


def test_pseudo_headers():
    s4, d4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    assert ref_sum(b"", cs.pseudo_header_sum(s4, d4, 6, 1234)) == ref_sum(s4 + d4 + struct.pack("!BBH", 0, 6, 1234))
    s6, d6 = os.urandom(16), os.urandom(16)
    want = ref_sum(s6 + d6 + struct.pack("!IxxxB", 70000, 6))
    assert ref_sum(b"", cs.pseudo_header_sum(s6, d6, 6, 70000)) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=20, max_size=64).filter(lambda b: len(b) % 2 == 0), st.integers(0, 9), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFFFFFF))
def test_rfc1624_incremental_update(data, word, new16, new32):
    """After an RFC 1624 eqn. 3 update the data verifies (sums to -0 = 0xffff).
    Real headers always hold a non-zero word (IP version, TCP data offset); the
    all-zero buffer is eqn. 3's known +0/-0 corner (RFC 1624 §3), kept out."""
    buf = bytearray(data)
    buf[-1] |= 1                          # a non-zero word the updates never touch
    c = ref_csum(bytes(buf))
    old16 = struct.unpack_from("!H", buf, 2 * word)[0]
    struct.pack_into("!H", buf, 2 * word, new16)
    c = cs.update16(c, old16, new16)
    assert ref_sum(bytes(buf), c) == 0xFFFF
    off = 4 * (word % ((len(buf) - 2) // 4))
    old32 = struct.unpack_from("!I", buf, off)[0]
    struct.pack_into("!I", buf, off, new32)
    c = cs.update32(c, old32, new32)
    assert ref_sum(bytes(buf), c) == 0xFFFF


def test_checksum_many_is_the_xor_of_single_checksums():
    data = os.urandom(9000 * 4)
    x = 0
    for i in range(4):
        x ^= ref_csum(data[i * 9000:(i + 1) * 9000])
    assert cs.checksum_many(data, 9000, 4) == x


def test_complete_partial_fixes_a_real_checksum_partial_frame():
    """A captured Linux segment sent with tx checksum offload: rejected as is,
    accepted with verify_csum=2, and valid after complete_partial()."""
    for name in ("captured/v4-csum-partial", "captured/v6-csum-partial"):
        vec = next(v for v in vectors.load_all(VECTOR_ROOT) if v.name == name)
        assert w.check_packet(vec.data, 1) == w.CODES["tcp_checksum"]
        s = w.parse_packet(vec.data, 2)
        assert s.csum_status == 2                           # CSUM_PARTIAL
        fixed = bytearray(vec.data)
        cs.complete_partial(fixed, s.ip_hdr_len, 16)
        good = w.parse_packet(bytes(fixed), 1)
        assert good.csum_status == 1 and good.seq == s.seq
        assert fixed[:s.ip_hdr_len + 16] == vec.data[:s.ip_hdr_len + 16]


def test_fill_checksum_partial_then_complete_round_trips():
    seg = w.Segment()
    seg.ip_version, seg.src, seg.dst, seg.sport, seg.dport, seg.flags = 4, b"\xc6\x12\0\1", b"\xc6\x12\0\2", 1, 2, 0x18
    pkt = bytearray(seg.to_bytes(b"payload!"))
    v = w.TcpSegment(memoryview(pkt)[20:])
    v.fill_checksum_partial(seg.src, seg.dst)
    assert w.check_packet(bytes(pkt), 1) == w.CODES["tcp_checksum"]
    cs.complete_partial(pkt, 20, 16)
    assert w.check_packet(bytes(pkt), 1) == 0
