"""Many split connections through one box at once (issue 11, "10,000 connections
a box"; the 10,000 run is benchmarks/connections.py): 500 connections from four
source addresses are opened, held idle, all fetch a 100 KB object at once, and
close.  Every object is checked byte for byte by the client
(stackpep.testbed.manyconn); the box must hold no buffer storage while they idle
and, once they are gone, an empty table and no buffer storage -- its free chunks
handed back to the kernel (memory_releases)."""
import pytest

from stackpep.testbed import manyconn
from stackpep.testbed.splitbox import SERVER4, SERVER6, SplitterTopology, pep_toml

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

COUNT = 500
PORT = 8000
SIZE = 100 * 1024


@pytest.mark.parametrize("family", [4, 6])
def test_hundreds_of_connections_idle_fetch_close_and_the_box_returns_to_empty(family):
    with SplitterTopology() as topo:
        srcs = manyconn.prepare(topo, family, 4)
        srv = manyconn.start_server(topo.server, SERVER4 if family == 4 else SERVER6, PORT, SIZE)
        try:
            # TIME-WAIT of the server legs (the box closes them first) kept short: the
            # table is empty soon after the close
            topo.start_pep(pep_toml(ports=(PORT,), handshake_timeout=30.0,
                                    extra="[tcp.server]\ntime_wait_us = 500000\n"),
                           stats_interval=0.2)
            client = manyconn.ClientRun(topo.client, SERVER4 if family == 4 else SERVER6, PORT, COUNT, srcs, SIZE)
            try:
                opened = client.phase()
                assert (opened["ok"], opened["errors"]) == (COUNT, {})
                st = topo.wait_stats(lambda s: s.get("leg_states", {}).get("server_leg_ESTABLISHED", 0) == COUNT
                                     and s.get("leg_states", {}).get("client_leg_ESTABLISHED", 0) == COUNT,
                                     timeout=60)
                assert st["connections_active"] == COUNT and st["connections_embryonic"] == 0
                # idle: both engines of every connection hold no buffer storage
                assert st["buffers"]["bytes"] == 0 and st["buffers"]["chunks"] == 0

                fetched = client.phase("fetch")
                assert (fetched["ok"], fetched["errors"]) == (COUNT, {})
                closed = client.phase("close")
                assert (closed["ok"], closed["errors"]) == (COUNT, {})
            finally:
                client.close()
            st = topo.wait_stats(lambda s: s["connections_active"] == 0 and s["connections_time_wait"] == 0
                                 and not s.get("leg_states"), timeout=60)
            ended = {k: v for k, v in st.items() if k.startswith("ended_") and v}
            # every connection the clients kept ended closed; a box slowed by a busy
            # machine may have timed out a handshake the client then retried (counted)
            assert st["ended_closed"] == COUNT and st["connections_opened"] == sum(ended.values()), ended
            assert st["buffers"]["bytes"] == 0 and st["buffers"]["chunks"] == 0
            assert st["buffers"]["chunks_allocated"] > 0  # (the objects did go through the buffers)
            # the table emptied: free chunks go back to malloc and the heap to the kernel
            releases = st["memory_releases"]
            st = topo.wait_stats(lambda s: s["memory_releases"] > releases or (
                releases > 0 and s["buffers"]["pool_chunks"] == 0), timeout=30)
            assert st["buffers"]["pool_chunks"] == 0
            assert st["buffers"]["chunks_freed"] == st["buffers"]["chunks_allocated"]
        finally:
            srv.terminate()
            srv.wait(timeout=10)
