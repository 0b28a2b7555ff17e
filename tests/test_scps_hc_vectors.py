"""Header-compression vectors (vectors/scps-hc/*.toml, written by an independent
pure-Python encoder in vectors/scps-hc/build.py): every compressed packet expands
to exactly the recorded IP/TCP packet or is dropped with exactly the recorded
counter; and the C compressor writes exactly the recorded bytes for ours."""
import ipaddress
import tomllib
from pathlib import Path

import pytest

from stackpep._fast.scpshc import HcTable, compress

ROOT = Path(__file__).resolve().parents[1] / "vectors" / "scps-hc"
FILES = sorted(ROOT.glob("*.toml"))
COUNTERS = ("hc_expanded", "hc_drop_no_context", "hc_drop_checksum", "hc_drop_malformed")


def test_vector_set_covers_every_outcome():
    assert len(FILES) >= 7
    seen = set()
    for f in FILES:
        for p in tomllib.loads(f.read_text())["packets"]:
            seen.add(p.get("drop", "hc_expanded"))
    assert seen == set(COUNTERS)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_vector_replays(path):
    vec = tomllib.loads(path.read_text())
    ctx = vec["context"]
    table = HcTable()
    table.add(ipaddress.ip_address(ctx["src"]).packed, ipaddress.ip_address(ctx["dst"]).packed,
              ctx["sport"], ctx["dport"], ctx["conn_id"])
    for i, p in enumerate(vec["packets"]):
        before = table.statistics()
        got = table.expand(bytes.fromhex(p["compressed"]))
        after = table.statistics()
        moved = {k: after[k] - before[k] for k in COUNTERS if after[k] != before[k]}
        if "expanded" in p:
            assert got == bytes.fromhex(p["expanded"]), f"packet {i}"
            assert moved == {"hc_expanded": 1}
            if p["ours"]:
                assert compress(bytes.fromhex(p["expanded"]), ctx["conn_id"]) == bytes.fromhex(p["compressed"])
        else:
            assert got is None and moved == {p["drop"]: 1}, f"packet {i}: {p.get('why')}"
