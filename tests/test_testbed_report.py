"""Ratios, the table and the JSON of a testbed run, from synthetic cells (no root)."""
import json

import pytest

from stackpep.testbed.emulator import DirectionParams
from stackpep.testbed.report import add_ratios, failure_report, table, write_json
from stackpep.testbed.scenarios import PAYLOAD_SHARE, Cell, Scenario, resolve_scenarios
from stackpep.testbed.topology import LinkSpec
from stackpep.testbed.workloads import Workload


def scenario():
    fwd = DirectionParams(delay_ms=300, rate_bps=20e6, loss=0.01, queue_ms=250)
    return Scenario("geo-x", "test", LinkSpec(fwd, fwd),
                    [Workload("bulk-download", seconds=30), Workload("fetch", size=100_000, count=3)])


def cells():
    def bulk(g):
        return {"workload": "bulk-download", "goodput_bps": g, "series": [[1.0, g]]}

    def fetch(m):
        return {"workload": "fetch-100KB", "median_s": m, "times_s": [m], "complete": 1, "incomplete": 0}

    return [
        Cell("geo-x", "e2e-cubic", True, results=[bulk(1e6), fetch(3.0)]),
        Cell("geo-x", "e2e-bbr", True, results=[bulk(10e6), fetch(3.2)]),
        Cell("geo-x", "stackpep-one-box", True, results=[bulk(15e6), fetch(1.5)]),
        Cell("geo-x", "stackpep-two-boxes", False, reason="stackpep.pep is not importable"),
    ]


def test_capacity_is_rate_times_delivery_times_payload_share():
    assert PAYLOAD_SHARE == 1448 / 1500
    assert scenario().capacity_bps() == pytest.approx(20e6 * 0.99 * 1448 / 1500)


def test_ratios_are_higher_is_better_against_each_baseline():
    sc, cs = scenario(), cells()
    add_ratios(cs, [sc])
    cap = sc.capacity_bps()
    pep_bulk, pep_fetch = cs[2].results
    assert pep_bulk["ratios"] == {"capacity": round(15e6 / cap, 4), "vs_e2e-cubic": 15.0, "vs_e2e-bbr": 1.5}
    # fetch: baseline time / time, so 2x faster reads as 2.0
    assert pep_fetch["ratios"] == {"vs_e2e-cubic": 2.0, "vs_e2e-bbr": round(3.2 / 1.5, 4)}
    # a baseline is compared with the other baseline, not with itself
    assert set(cs[0].results[0]["ratios"]) == {"capacity", "vs_e2e-bbr"}
    assert cs[1].results[1]["ratios"] == {"vs_e2e-cubic": round(3.0 / 3.2, 4)}


def test_table_shows_values_ratios_and_unavailable_reasons():
    sc, cs = scenario(), cells()
    add_ratios(cs, [sc])
    text = table(cs, [sc])
    lines = text.splitlines()
    assert lines[0].split() == ["scenario", "workload", "e2e-cubic", "e2e-bbr", "stackpep-one-box",
                                "stackpep-two-boxes"]
    bulk_row = next(l for l in lines if "bulk-download" in l)
    assert "15.00 Mb/s 78%cap x15.00" in bulk_row and "not available" in bulk_row
    fetch_row = next(l for l in lines if "fetch-100KB" in l)
    assert "1.50 s x2.00" in fetch_row
    assert "stackpep-two-boxes: not available: stackpep.pep is not importable" in text


def test_json_has_every_cell_and_the_scenario(tmp_path):
    sc, cs = scenario(), cells()
    add_ratios(cs, [sc])
    path = tmp_path / "r.json"
    write_json(path, cs, [sc], ["stackpep", "testbed", "run", "x"])
    doc = json.loads(path.read_text())
    assert doc["command"] == ["stackpep", "testbed", "run", "x"]
    assert doc["scenarios"][0]["rtt_ms"] == 600
    assert doc["scenarios"][0]["forward"] == "delay=300ms,rate=20mbit,queue=250ms,loss=0.01"
    assert [c["configuration"] for c in doc["cells"]] == [c.configuration for c in cs]
    assert doc["cells"][2]["results"][0]["ratios"]["vs_e2e-cubic"] == 15.0


def test_named_scenarios():
    m = resolve_scenarios(["geo-matrix"])
    assert [s.name for s in m] == [f"geo-{r}M-loss{l}%" for r in (20, 50) for l in ("0", "0.1", "1")]
    assert all(s.link.rtt_ms() == 600 for s in m)
    assert m[5].link.forward.loss == m[5].link.ret.loss == 0.01
    leo = resolve_scenarios(["leo"])[0]
    assert leo.link.rtt_ms() == 40 and leo.link.outages[0].every == 15
    meo = resolve_scenarios(["meo"])[0]
    assert meo.link.rtt_ms() == 150
    demo = resolve_scenarios(["demo"])[0]
    assert demo.link.forward.rate_bps == 20e6 and demo.link.forward.loss == 0.01
    assert [w.name for w in demo.workloads] == ["fetch-100KB", "bulk-download"]


def test_a_cell_fails_on_an_error_or_when_stackpep_is_not_available():
    ok = Cell("geo-x", "e2e-cubic", True, results=[{"workload": "fetch-100KB", "median_s": 3.0}], baseline=True)
    no_bbr = Cell("geo-x", "e2e-bbr", False, reason="kernel has no bbr congestion control", baseline=True)
    iperf = Cell("geo-x", "e2e-cubic", True, results=[{"workload": "bulk-download", "error": "unable to connect"}],
                 baseline=True)
    no_pep = Cell("geo-x", "stackpep-two-boxes", False, reason="stackpep.pep is not importable")
    died = Cell("geo-x", "stackpep-one-box", True, error="RuntimeError: `stackpep run` in pep-a exited with 1",
                log_tails={"/w/stackpep-one-box-pep-a.log": ["Traceback (most recent call last):",
                                                             "ModuleNotFoundError: No module named 'x'"]})
    assert [c.failed for c in (ok, no_bbr, iperf, no_pep, died)] == [False, False, True, True, True]
    assert failure_report([ok, no_bbr], "stackpep demo") == ""
    assert failure_report([ok, no_bbr, iperf, no_pep, died], "stackpep demo").splitlines() == [
        "stackpep demo: 3 of 5 cell(s) failed",
        "FAILED geo-x / e2e-cubic: bulk-download: unable to connect",
        "FAILED geo-x / stackpep-two-boxes: not available: stackpep.pep is not importable",
        "FAILED geo-x / stackpep-one-box: RuntimeError: `stackpep run` in pep-a exited with 1",
        "  last 2 lines of /w/stackpep-one-box-pep-a.log:",
        "    Traceback (most recent call last):",
        "    ModuleNotFoundError: No module named 'x'",
    ]
