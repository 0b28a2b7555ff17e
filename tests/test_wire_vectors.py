"""Every wire vector (vectors/wire/**/*.toml, format in docs/wire.md) through the C
parsers: well-formed ones give the fields tshark read, malformed ones their
documented error type and counter -- and only that counter moves, by one."""
from collections import Counter
from pathlib import Path

import pytest

from stackpep._fast import wire as w
from stackpep.wire import counters, vectors

VECTOR_ROOT = Path(__file__).resolve().parents[1] / "vectors" / "wire"
VECTORS = vectors.load_all(VECTOR_ROOT)


def test_vector_set_is_complete():
    assert len(VECTORS) >= 60
    groups = Counter(v.name.split("/")[0] for v in VECTORS)
    assert groups["captured"] >= 20 and groups["scps"] >= 8
    captured = [v for v in VECTORS if v.name.startswith("captured/") and not v.error]
    for fam in (4, 6):
        mine = [v for v in captured if v.expect["ip_version"] == fam]
        flags = {v.expect["flags"] for v in mine}
        assert {0x02, 0x12, 0x10, 0x18}.issubset(flags), "handshake and data"
        assert any(f & 0x01 for f in flags) and any(f & 0x04 for f in flags), "FIN and RST"
        assert any(v.expect["sack"] for v in mine), "SACK blocks"
        syn = next(v for v in mine if v.expect["flags"] == 0x02)
        assert syn.expect["mss"] and syn.expect["wscale"] >= 0 and syn.expect["sack_perm"] and syn.expect["ts"]
    # every rejection counter the two parsers can raise on a packet is exercised
    covered = {v.expect["counter"] for v in VECTORS if v.error}
    assert covered == set(w.COUNTER_NAMES)


@pytest.mark.parametrize("vec", VECTORS, ids=[v.name for v in VECTORS])
def test_vector(vec):
    counters.reset()
    out = vectors.run(vec)
    assert vectors.mismatches(vec, out) == []
    moved = dict(counters.nonzero())
    if vec.error:
        assert moved == {vec.expect["counter"]: 1}
        assert out.message  # names the failed condition
    else:
        assert moved == {}


@pytest.mark.parametrize("vec", [v for v in VECTORS if v.rebuild], ids=[v.name for v in VECTORS if v.rebuild])
def test_vector_rebuilds_byte_for_byte(vec):
    """emit_ip_tcp of the parsed segment reproduces the IP packet (Linux option layout)."""
    out = vectors.run(vec)
    s = out.segment
    end = s.payload_off + s.payload_len
    assert s.to_bytes(s.payload) == out.ip_bytes[:end]


def test_error_types_follow_the_code_ranges():
    for code, (name, cond) in w.ERRORS.items():
        e = w.error_for(code)
        assert e.counter == name and e.code == code and str(e) == cond
        assert isinstance(e, w.IntegrityError if code > -40 else w.SanityError)
        assert not isinstance(e, w.SanityError if code > -40 else w.IntegrityError)
