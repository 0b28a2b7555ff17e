"""stackpep against the SCPS-TP reference gateway (MITRE SCPS RI 1.1.146) across the
emulated GEO link, both roles (issue 10, "Peers and roles"; docs/scps.md
"Interoperability with the reference gateway").

Skipped unless STACKPEP_SCPS_GATEWAY names the gateway's build directory (the one
holding apps/gateway, built by scripts/build-scps-reference-gateway.sh): CI cannot
fetch its source.  One cell per role: 20 Mbit/s, 600 ms RTT, no loss; a 100 KB curl
fetch and a 1 MB sha256-checked transfer each way; tshark reads the link capture.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

GATEWAY = os.environ.get("STACKPEP_SCPS_GATEWAY")

pytestmark = [
    pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(300),
    pytest.mark.skipif(not GATEWAY, reason="STACKPEP_SCPS_GATEWAY (the reference gateway's build) not set"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark"),
]


def _interop():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "interop_reference_gateway.py"
    spec = importlib.util.spec_from_file_location("interop_reference_gateway", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("role", ["stackpep-a", "stackpep-b"])
def test_stackpep_and_reference_gateway_negotiate_and_move_data(role, tmp_path):
    mod = _interop()
    assert (Path(GATEWAY) / "apps" / "gateway").exists(), f"{GATEWAY}/apps/gateway: build it first"
    args = SimpleNamespace(gateway=GATEWAY, out=str(tmp_path), rate=20_000_000, rtt_ms=600.0, cc=0, fetches=1,
                           fetch_size=100_000, bulk_size=1_000_000)
    cell = mod.run_cell(args, role, 0.0)
    assert "error" not in cell, cell.get("error")
    fetch = cell["fetch_100k"][0]
    assert (fetch["code"], fetch["bytes"]) == ("200", 100_000)
    assert cell["bulk"]["result"] == "OK"  # both sha256 digests matched, 1 MB each way
    link = cell["link"]
    kinds = dict(zip("xy", mod.Bed.PAIRS[role]))
    # every SYN and SYN-ACK on the link carried option 20 with SNACK (0x40) and nothing
    # else negotiable (no BETS, no compression: neither side offered them)
    assert len(link["syn"]) == 4, link["syn"]  # two connections: SYN + SYN-ACK each, no loss
    assert {(s["flags"], kinds[s["from"]], s["scps_vector"]) for s in link["syn"]} == {
        ("SYN", "stackpep" if role == "stackpep-a" else "ref", "0x40"),
        ("SYN-ACK", "ref" if role == "stackpep-a" else "stackpep", "0x40")}
    assert link["scps_after_syn"] == 0
    # the reference answers a SYN with a window-0 SYN-ACK; stackpep's is open
    ack_windows = {kinds[s["from"]]: s["win"] for s in link["syn"] if s["flags"] == "SYN-ACK"}
    assert ack_windows == ({"ref": "0"} if role == "stackpep-a" else {"stackpep": "65535"})
    side = "x" if role == "stackpep-a" else "y"
    stats = cell[f"stackpep_{side}"]
    assert (stats["scps_offered"] if role == "stackpep-a" else stats["connections_opened"]) == 2
    assert stats["scps_peers"] == 2 and stats["scps_one_sided"] == 0 and stats["scps_fallbacks"] == 0
