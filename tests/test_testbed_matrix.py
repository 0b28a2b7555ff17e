"""The GEO matrix's pieces without root: IPv6 scenarios, the Vegas two-box
configuration, and the sha256-verified bulk transfer (over a socketpair, on a
counting clock)."""
import socket
import threading

import pytest

from stackpep.testbed.scenarios import StackpepPep, configuration_registry, resolve_scenarios
from stackpep.testbed.workloads import (Workload, bulk_result, receive_stream, send_stream, stream_chunk,
                                        stream_sha256)


def test_matrix_46_puts_each_cell_in_both_families_side_by_side():
    m = resolve_scenarios(["geo-matrix-46"])
    names = [f"geo-{r}M-loss{l}%{v}" for r in (20, 50) for l in ("0", "0.1", "1") for v in ("", "-v6")]
    assert [s.name for s in m] == names
    assert [s.family for s in m] == [4, 6] * 6
    # every workload of a scenario runs over the scenario's family
    assert all(w.family == s.family for s in m for w in s.workloads)
    assert [s.name for s in resolve_scenarios(["geo-matrix-v6"])] == names[1::2]
    assert [s.as_dict()["family"] for s in resolve_scenarios(["geo-matrix"])] == [4] * 6


def test_one_cell_of_the_matrix_by_its_name():
    # `stackpep testbed run geo-20M-loss0%-v6 geo-20M-loss0%`: those cells, in that order
    v6, v4 = resolve_scenarios(["geo-20M-loss0%-v6", "geo-20M-loss0%"])
    assert (v6.name, v6.family, v4.name, v4.family) == ("geo-20M-loss0%-v6", 6, "geo-20M-loss0%", 4)
    assert v6.link.forward.spec() == v4.link.forward.spec() == resolve_scenarios(["geo-matrix"])[0].link.forward.spec()
    with pytest.raises(SystemExit) as exc:
        resolve_scenarios(["geo-30M-loss0%"])
    assert "geo-20M-loss0%-v6" in str(exc.value)


def test_replaced_workloads_keep_the_scenarios_family():
    # `stackpep testbed run --bulk-seconds/--workloads` replaces the workloads
    sc = resolve_scenarios(["geo-matrix-v6"])[0]
    sc.set_workloads([Workload("bulk-download", seconds=20), Workload("fetch", size=100_000, count=3)])
    assert [(w.name, w.family, w.seconds) for w in sc.workloads] == [("bulk-download", 6, 20),
                                                                   ("fetch-100KB", 6, 20.0)]


def _wan(text):
    return text.split("[wan]", 1)[1]


def test_two_boxes_vegas_sets_the_long_legs_congestion_on_both_boxes():
    sc = resolve_scenarios(["geo-matrix"])[0]
    vegas = configuration_registry()["stackpep-two-boxes-vegas"]()
    assert vegas.name == "stackpep-two-boxes-vegas" and vegas.boxes == 2
    for host in ("pep-a", "pep-b"):
        assert _wan(vegas._config_text(host, sc.link)).splitlines() == [
            "", 'interface = "wan0"', "rate = 20000000", "rtt = 0.6", 'congestion = "vegas"']
    # the rate-mode pair says nothing: rate is the default (docs/configuration.md wan.congestion)
    rate = configuration_registry()["stackpep-two-boxes"]()
    assert "congestion" not in rate._config_text("pep-b", sc.link)
    assert StackpepPep(2, zero_rtt=True, congestion="vegas").name == "stackpep-two-boxes-0rtt-vegas"


def test_two_boxes_vegas_config_is_accepted_by_check_config():
    assert configuration_registry()["stackpep-two-boxes-vegas"]().availability() is None


def test_stream_never_repeats_a_chunk_and_depends_on_the_seed():
    chunks = [stream_chunk(1, i) for i in range(4)]
    assert len(set(chunks)) == 4 and all(len(c) == 65536 for c in chunks)
    assert stream_chunk(2, 0) != chunks[0]
    assert stream_chunk(1, 3) == chunks[3]  # deterministic


class StepClock:
    """Advances by `step` on every reading: send_stream sends a fixed number of chunks."""

    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


def test_bulk_transfer_over_a_socketpair_verifies_end_to_end():
    a, b = socket.socketpair()
    a.settimeout(30)
    b.settimeout(30)
    got = {}

    def receiver():
        got.update(receive_stream(b, clock=StepClock(0.25)))
        b.close()  # as the `bulk` receiver does after EOF: the sender waits for it

    t = threading.Thread(target=receiver)
    t.start()
    # clock readings 0.25 (so the end is 1.25), then 0.5, 0.75, 1.0 send a chunk each, 1.25 stops
    sent = send_stream(a, 1.0, seed=7, clock=StepClock(0.25))
    a.close()
    t.join(30)
    assert sent == {"role": "sender", "bytes": 3 * 65536, "sha256": stream_sha256(7, 3 * 65536)}
    assert got["bytes"] == sent["bytes"] and got["sha256"] == sent["sha256"]
    res = bulk_result({"workload": "bulk-download"}, sent, got)
    assert res["sha256_ok"] is True and "error" not in res
    assert res["goodput_bps"] == pytest.approx(got["bytes"] * 8 / got["transfer_s"])


def test_a_hash_or_count_mismatch_is_an_error_with_no_goodput():
    snd = {"role": "sender", "bytes": 131072, "sha256": stream_sha256(1, 131072)}
    rcv = {"role": "receiver", "bytes": 131072, "sha256": stream_sha256(2, 131072), "first_byte_s": 0.6,
           "transfer_s": 1.0, "series": []}
    res = bulk_result({"workload": "bulk-download"}, snd, rcv)
    assert res["sha256_ok"] is False and res["goodput_bps"] == 0.0
    assert res["error"].startswith("sha256 mismatch: received 131072 bytes")
    short = dict(rcv, bytes=65536, sha256=stream_sha256(1, 65536))  # a prefix: right bytes, too few
    assert bulk_result({}, snd, short)["sha256_ok"] is False
