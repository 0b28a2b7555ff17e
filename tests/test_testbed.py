"""The five-host testbed: build and teardown (also after failures), the CLI, and
one short scenario end to end through the link emulator."""
import glob
import json
import signal
import time
import os
import subprocess

import pytest

from stackpep.testbed.emulator import DirectionParams
from stackpep.testbed.netns import list_namespaces, run
from stackpep.testbed.topology import (CLIENT4, CLIENT6, SERVER4, SERVER6, LinkSpec, Topology, python_command,
                                       python_env)

pytestmark = [pytest.mark.netns, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

ROLES = ["client", "link", "pep-a", "pep-b", "server"]


def leftovers(prefix):
    """Namespaces and root-namespace interfaces still carrying the prefix."""
    links = [l for l in run("ip -o link show").stdout.splitlines() if f": {prefix}" in l]
    return list_namespaces(prefix) + links


def test_topology_routes_both_families_through_the_link_and_leaves_nothing():
    p = DirectionParams.parse("delay=5ms")
    with Topology() as topo:
        prefix = topo.prefix
        assert sorted(n.split("-", 1)[1] for n in list_namespaces(prefix)) == ROLES
        topo.start_link(LinkSpec(p, p))
        topo.warm_up()
        emu_pid = topo.emulator.pid
        for dst in (SERVER4, SERVER6):
            res = topo.client.run(["ping", "-c", "3", "-i", "0.2", dst])
            rtts = [float(x.split("time=")[1].split()[0]) for x in res.stdout.splitlines() if "time=" in x]
            # 2 x 5 ms through the emulator, never less (how much more is the machine's
            # load: no wall-clock upper bound in the default suite)
            assert len(rtts) == 3 and all(10.0 <= t for t in rtts), rtts
        res = topo.server.run(["ping", "-c", "1", CLIENT6])
        assert "1 received" in res.stdout
        # The PEP hosts forward with the kernel (TTL 64 - 2 hops on arrival).
        assert "ttl=62" in topo.client.run(["ping", "-c", "1", SERVER4]).stdout
        topo.set_congestion("cubic")
        assert "congctl cubic" in topo.server.run("ip route show default").stdout
        # Offloads are off on the link host's veths: no super-frames reach the relay.
        feat = topo.link.run("ethtool -k la").stdout
        assert "generic-receive-offload: off" in feat and "tcp-segmentation-offload: off" in feat
        stats = topo.stop_link()
        assert stats["forward"]["frames_out"] >= 3 and stats["return"]["frames_out"] >= 3
        assert sum(stats["forward"]["drops"].values()) == 0
    assert leftovers(prefix) == []
    assert not os.path.exists(f"/proc/{emu_pid}")


def test_failed_run_still_tears_everything_down():
    p = DirectionParams.parse("delay=1ms")
    with pytest.raises(ZeroDivisionError):
        with Topology() as topo:
            prefix = topo.prefix
            topo.start_link(LinkSpec(p, p))
            sleeper = topo.server.popen(["sleep", "600"])
            1 / 0
    assert leftovers(prefix) == []
    assert sleeper.poll() is not None


def test_half_built_topology_is_removed(monkeypatch):
    # Fail while creating the third veth pair: the hosts and links made so far must go.
    from stackpep.testbed import netns

    calls = {"n": 0}
    real_link = netns.Network.link

    def failing_link(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            run(["ip", "link", "add", f"{self.prefix}a9", "type", "veth", "peer", "name", f"{self.prefix}b9"])
            raise RuntimeError("injected failure")
        return real_link(self, *a, **kw)

    monkeypatch.setattr(netns.Network, "link", failing_link)
    topo = Topology()
    with pytest.raises(RuntimeError, match="injected"):
        with topo:
            pass
    assert leftovers(topo.prefix) == []


def _stackpep(*args, timeout=120):
    return subprocess.run(python_command("stackpep", *args), capture_output=True, text=True,
                          timeout=timeout, env=python_env())


def test_cli_up_then_down():
    res = _stackpep("testbed", "up", "--scenario", "meo")
    assert res.returncode == 0, res.stderr
    prefix = res.stdout.split("testbed ", 1)[1].split()[0]
    try:
        assert sorted(n.split("-", 1)[1] for n in list_namespaces(prefix)) == ROLES
        # It is usable: the HTTP server answers across the emulated 150 ms RTT link.
        out = run(["ip", "netns", "exec", f"{prefix}-client", "curl", "-s", "-o", "/dev/null", "-w",
                   "%{http_code} %{size_download}", f"http://{SERVER4}:8080/obj/5000"]).stdout
        assert out == "200 5000"
    finally:
        down = _stackpep("testbed", "down", "--prefix", prefix)
    assert down.returncode == 0, down.stderr
    assert "removed 5 namespace(s)" in down.stdout
    assert leftovers(prefix) == []
    assert glob.glob(f"/tmp/{prefix}-*") == []


def test_short_scenario_end_to_end(tmp_path):
    from stackpep.testbed.run import execute
    from stackpep.testbed.scenarios import Scenario, resolve_configs
    from stackpep.testbed.workloads import Workload

    d = DirectionParams(delay_ms=20, rate_bps=20e6, queue_ms=50)
    sc = Scenario("short", "40 ms RTT, 20 Mbit/s", LinkSpec(d, d),
                  [Workload("bulk-download", seconds=4), Workload("fetch", size=100_000, count=2)])
    configs = resolve_configs(["e2e-cubic", "e2e-bbr", "stackpep-one-box"])
    out = execute([sc], configs, tmp_path, ["test"], stream=open(os.devnull, "w"))

    cells = {c.configuration: c for c in out.cells}
    cap = sc.capacity_bps()
    assert cap == pytest.approx(20e6 * 1448 / 1500)
    for name in ("e2e-cubic", "e2e-bbr", "stackpep-one-box"):
        c = cells[name]
        assert c.available and c.error is None and not c.failed, c
        bulk, fetch = c.results
        # Goodput never beats the emulated capacity, except by what the emulator's
        # own lateness lets through back to back at the end; and the link carries
        # bulk traffic (the bound is low: the machine may be busy).
        late_s = c.link["send_late_max_us"] / 1e6
        assert 0.3 * cap < bulk["goodput_bps"] <= cap * (1.01 + late_s / 4), (bulk, c.link)
        assert bulk["ratios"]["capacity"] == pytest.approx(bulk["goodput_bps"] / cap, rel=1e-3)
        # one point a second from the first byte; the sender's 4 s plus what its
        # buffers still held (a last partial interval) -- and every byte verified
        assert [p[0] for p in bulk["series"][:4]] == [1.0, 2.0, 3.0, 4.0]
        assert bulk["sha256_ok"] is True and bulk["bytes"] == bulk["sent_bytes"]
        assert fetch["complete"] == 2 and fetch["incomplete"] == 0
        # a 100 KB fetch over a 40 ms RTT takes a few round trips, not less than two
        assert fetch["median_s"] > 0.08, fetch
        assert c.link["forward"]["ip_bytes_out"] >= bulk["bytes"]
    # each baseline is compared with the other, and stackpep with both
    assert "vs_e2e-cubic" in cells["e2e-bbr"].results[0]["ratios"]
    assert sorted(cells["stackpep-one-box"].results[0]["ratios"]) == ["capacity", "vs_e2e-bbr", "vs_e2e-cubic"]
    assert "error" not in out.table
    doc = json.loads(out.json_path.read_text())
    assert [c["configuration"] for c in doc["cells"]] == ["e2e-cubic", "e2e-bbr", "stackpep-one-box"]
    assert doc["scenarios"][0]["capacity_download_bps"] == pytest.approx(cap)
    assert sorted(p.name for p in out.plots) == ["fetch-short.png", "goodput-short.png"]
    assert all(p.stat().st_size > 10_000 for p in out.plots)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_tears_everything_down(sig):
    # Ctrl-C (or SIGTERM) while a workload runs: namespaces, veths and the processes
    # inside them (emulator, HTTP server, iperf3) must all be gone.
    p = subprocess.Popen(python_command("stackpep", "testbed", "run", "meo", "--configs", "e2e-cubic",
                                        "--workloads", "bulk-download", "--bulk-seconds", "30"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=python_env())
    prefix = None
    try:
        for line in p.stdout:
            if line.strip().startswith("testbed sp"):
                prefix = line.split()[1].rstrip(":")
            if "bulk-download" in line and "running" in line:
                break
        assert prefix, "the run did not say which namespaces it built"
        pids = [int(x) for ns in list_namespaces(prefix) for x in run(["ip", "netns", "pids", ns]).stdout.split()]
        assert len(pids) >= 3  # emulator, HTTP server, iperf3 server (and client)
        time.sleep(1.0)
        p.send_signal(sig)
        p.wait(timeout=120)  # a hang detector, not a bound: teardown is slow on a loaded machine
    finally:
        if p.poll() is None:
            p.kill()
    assert leftovers(prefix) == []
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []


def test_netem_backend_refuses_clearly_without_netem():
    from stackpep.testbed.emulator import netem_available

    if netem_available():
        pytest.skip("this kernel has netem")
    p = DirectionParams.parse("delay=1ms")
    with Topology(link_backend="netem") as topo:
        with pytest.raises(RuntimeError, match="no netem"):
            topo.start_link(LinkSpec(p, p))
