"""Two workers in one box (`stackpep run --workers 2`): the PACKET_FANOUT groups
send both directions of every connection to the same worker, connections of
both families spread over both, none broken; a worker killed is started again
and the box goes on; `stackpep stats` sums the workers."""
import json
import os
import signal
import sys
import time

import pytest

from stackpep.testbed.splitbox import SERVER4, SERVER6, SplitterTopology, env_with_path, pep_toml

def _load_splitter_tests():
    # the sha256 transfer server and client of the one-box tests
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_splitter_netns", Path(__file__).with_name("test_splitter_netns.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_s = _load_splitter_tests()
TRANSFER_CLIENT, TRANSFER_SERVER, py, start_py = _s.TRANSFER_CLIENT, _s.TRANSFER_SERVER, _s.py, _s.start_py

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

CONNS = 40


def stats(t, connections=False):
    argv = [sys.executable, "-m", "stackpep", "stats", "-s", str(t.control_socket), "--json"]
    if not connections:
        argv.append("--no-connections")
    res = t.box.run(argv, env=env_with_path(), cwd="/")
    return json.loads(res.stdout)


def transfer(t, server, conns, nbytes):
    code = TRANSFER_CLIENT.replace("SERVER", repr(server)).replace("PORT", "8000") \
        .replace("CONNS", str(conns)).replace("NBYTES", str(nbytes)).replace("MBYTES", str(nbytes))
    return py(t.client, code, timeout=240).strip()


@pytest.fixture(scope="module")
def two():
    with SplitterTopology() as t:
        srv = start_py(t.server, TRANSFER_SERVER.replace("PORT", "8000"))
        t.start_pep(pep_toml(), args=("--workers", "2"))
        yield t
        srv.kill()
        rc = t.stop_pep(signal.SIGTERM)
        assert rc == 0, t.pep_log.read_text()[-3000:]


def test_both_families_spread_over_both_workers_none_broken(two):
    before = stats(two)
    # 40 parallel upload+download transfers per family, each checked by sha256 at both ends
    for server in (SERVER4, SERVER6):
        assert transfer(two, server, CONNS, 200_000) == "[]"
    st = stats(two)
    opened = [w["connections_opened"] - b["connections_opened"] for w, b in zip(st["workers"], before["workers"])]
    assert sum(opened) == 2 * CONNS and st["counters"]["connections_opened"] == sum(
        w["connections_opened"] for w in st["workers"])
    assert all(n > 0 for n in opened), opened           # each worker took some
    # no packet of a connection reached the other worker: it would have answered
    # it as an unknown flow
    assert st["counters"]["drop_unknown_flow"] == 0
    assert st["counters"]["drop_server_side_syn"] == 0
    assert [w["answered"] for w in st["workers"]] == [True, True]
    # both families on each worker: the connection list says which worker holds each
    assert st["max_connections"] == 10000


def test_a_killed_worker_is_started_again(two):
    st = stats(two)
    old = [w["pid"] for w in st["workers"]]
    os.kill(old[1], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = stats(two)
        pids = [w["pid"] for w in st["workers"]]
        if pids[0] == old[0] and pids[1] not in (0, old[1]) and all(w["answered"] for w in st["workers"]):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"worker 1 was not restarted: {st['workers']}")
    # the box goes on with both workers
    for server in (SERVER4, SERVER6):
        assert transfer(two, server, 10, 100_000) == "[]"
    log = two.pep_log.read_text()
    assert "worker 1 (pid %d) died (signal SIGKILL); starting it again" % old[1] in log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_kill_9_does_not_cut_the_link(workers):
    # nft: the table is owned by the process and the kernel removes it when the
    # process dies, so traffic is forwarded again at once, without `stackpep cleanup`
    with SplitterTopology() as t:
        t.start_nginx(80)
        (t.tmp / "nginx" / "html" / "x").write_bytes(b"y" * 100_000)
        t.start_pep(pep_toml(), args=("--workers", workers))
        assert "table inet stackpep" in t.nft_ruleset() and "flags owner" in t.nft_ruleset()
        pids = [w["pid"] for w in stats(t).get("workers", [])]
        assert len(pids) == (2 if workers == "2" else 0)
        t.pep.kill()
        t.pep.wait()
        deadline = time.monotonic() + 10
        while "table inet stackpep" in t.nft_ruleset() and time.monotonic() < deadline:
            time.sleep(0.05)      # the workers die with the parent (PR_SET_PDEATHSIG)
        assert "table inet stackpep" not in t.nft_ruleset()
        for url in (f"http://{SERVER4}/x", f"http://[{SERVER6}]/x"):
            res = t.client.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}", url])
            assert res.stdout == "100000"
        for pid in pids:                          # no worker outlives the parent (PR_SET_PDEATHSIG)
            while _alive(pid) and time.monotonic() < deadline + 10:
                time.sleep(0.05)
            assert not _alive(pid)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
