"""A running box in a namespace, watched and steered from outside:
`stackpep stats --json` over the control socket, a Prometheus scrape by curl
(values equal to the stats reply's counters), SIGHUP reload (accepted and
refused), and SIGTERM drain with 20 downloads active (each client completes or
hears a reset; none hangs), rules removed, exit 0."""
import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from stackpep.testbed.splitbox import BOX_C4, ROOT, SERVER4, SplitterTopology, env_with_path, pep_toml

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]


def _wait_log(t, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in t.pep_log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never logged:\n{t.pep_log.read_text()[-3000:]}")


def _closed(st):
    """Every leg the box holds is closed or in TIME-WAIT (no packet of its left to come)."""
    return all(n == 0 or state.endswith(("TIME-WAIT", "CLOSED")) for state, n in st["leg_states"].items())


def _stats(t):
    res = t.box.run([sys.executable, "-m", "stackpep", "stats", "--json", "-s", str(t.control_socket)],
                    env=env_with_path(), cwd=str(ROOT))
    return json.loads(res.stdout)


def test_stats_metrics_scrape_and_reload():
    with SplitterTopology() as t:
        t.start_nginx(80)
        (t.tmp / "nginx" / "html" / "blob").write_bytes(b"b" * 300_000)
        toml = pep_toml(extra=f'[metrics]\nlisten = "{BOX_C4}:9750"\n[log]\nformat = "json"\n')
        t.start_pep(toml, stats_interval=0)
        res = t.client.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}",
                            f"http://{SERVER4}/blob"])
        assert res.stdout == "300000"
        # curl is gone; the box may still be relaying the close (a loaded machine): once
        # every leg is in TIME-WAIT or CLOSED, nothing more comes
        deadline = time.monotonic() + 60
        while True:
            st = _stats(t)
            if _closed(st) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert _closed(st), st["leg_states"]
        assert st["counters"]["connections_opened"] == 1
        assert st["instance"] == "" and st["draining"] is False
        (x,) = st["connections"]  # in TIME-WAIT until 2 MSL have passed
        assert x["bytes_down"] > 300_000 and x["server"] == f"{SERVER4}:80"
        scrape = t.box.run(["curl", "-sS", "--max-time", "5", "-D", "-", f"http://{BOX_C4}:9750/metrics"]).stdout
        head, _, body = scrape.replace("\r\n", "\n").partition("\n\n")
        assert head.startswith("HTTP/1.1 200 OK") and "Content-Type: text/plain; version=0.0.4" in head
        m = {}
        for x in body.splitlines():
            if x and not x.startswith("#"):
                k, v = x.rsplit(" ", 1)
                m[k] = int(v)
        st2 = _stats(t)  # quiet box: nothing changed between the two reads
        c = st2["counters"]
        assert c == st["counters"]
        assert m["stackpep_connections_opened_total"] == c["connections_opened"] == 1
        assert m['stackpep_connections_ended_total{outcome="closed"}'] == c["ended_closed"]
        assert m["stackpep_packets_in_total"] == c["packets_in"]
        assert m['stackpep_drops_total{reason="not_intercepted"}'] == c["drop_not_intercepted"]
        assert m['stackpep_port_rx_packets_total{port="box1"}'] == st2["ports"]["box1"]["rx_packets"]
        missing = t.box.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{BOX_C4}:9750/"]).stdout
        assert missing == "404"

        # SIGHUP: a live change is applied ...
        cfg = t.tmp / "pep.toml"
        cfg.write_text(cfg.read_text().replace("max_connections = 10000", "max_connections = 77"))
        t.pep.send_signal(signal.SIGHUP)
        _wait_log(t, "configuration reloaded from")
        assert _stats(t)["max_connections"] == 77
        # ... one that cannot change live is refused, naming the key; the old one stays
        cfg.write_text(cfg.read_text().replace('server = ["box2"]', 'server = ["box3"]')
                       .replace("max_connections = 77", "max_connections = 5"))
        t.pep.send_signal(signal.SIGHUP)
        _wait_log(t, "reload refused: interfaces.server cannot change while running")
        assert _stats(t)["max_connections"] == 77
        res = t.client.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}",
                            f"http://{SERVER4}/blob"])
        assert res.stdout == "300000"  # still running, still splitting
        assert t.stop_pep(signal.SIGTERM) == 0
        assert not t.control_socket.exists()
        # one JSON line per connection, bare on stderr (the end of TIME-WAIT, or the stop)
        recs = [json.loads(x) for x in t.pep_log.read_text().splitlines() if '"event":"connection_end"' in x]
        assert len(recs) == 2 and {r["server"] for r in recs} == {f"{SERVER4}:80"}
        assert all(r["bytes_down"] > 300_000 and r["outcome"] in ("closed", "shutdown") for r in recs)


N = 20


def test_sigterm_drains_then_every_client_completes_or_is_reset():
    with SplitterTopology() as t:
        t.start_pep(pep_toml(drain_timeout=1.0),
                    stats_interval=0)
        # Half the downloads end soon after the SIGTERM, half never would.
        srv = t.server.popen([sys.executable, "-c", textwrap.dedent(f"""
            import socket, threading, time
            l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            l.bind(({SERVER4!r}, 8005)); l.listen(64); print("LISTENING", flush=True)
            def serve(c):
                try:
                    kind = c.recv(1)
                    n = 0
                    while kind == b"f" or n < 20:
                        c.sendall(b"d" * 20000); time.sleep(0.05); n += 1
                    c.close()
                except OSError:
                    pass
            while True:
                c, _ = l.accept()
                threading.Thread(target=serve, args=(c,), daemon=True).start()
        """)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "LISTENING"
        cli = t.client.popen([sys.executable, "-c", textwrap.dedent(f"""
            import socket, threading, sys
            out = [None] * {N}
            ready = threading.Barrier({N} + 1)
            def fetch(i):
                s = socket.create_connection(({SERVER4!r}, 8005), timeout=10)
                s.settimeout(15)  # only hit if the end of the connection never came
                s.sendall(b"f" if i % 2 else b"s")
                s.recv(1000); ready.wait()
                try:
                    while s.recv(65536):
                        pass
                    out[i] = "complete"
                except ConnectionResetError:
                    out[i] = "reset"
                except socket.timeout:
                    out[i] = "hung"
            ts = [threading.Thread(target=fetch, args=(i,)) for i in range({N})]
            for x in ts: x.start()
            ready.wait(); print("ACTIVE", flush=True)
            for x in ts: x.join()
            print(" ".join(out), flush=True)
        """)], stdout=subprocess.PIPE, text=True)
        try:
            assert cli.stdout.readline().strip() == "ACTIVE"
            assert t.stop_pep(signal.SIGTERM) == 0
            verdicts = cli.stdout.readline().split()
        finally:
            srv.kill()
            cli.kill()
        assert len(verdicts) == N and set(verdicts) <= {"complete", "reset"}, verdicts
        assert "reset" in verdicts  # the endless ones cannot complete
        assert "table inet stackpep" not in t.nft_ruleset()
        log = t.pep_log.read_text()
        assert "draining first" in log and "drained:" in log and "netfilter rules removed" in log
        st = json.loads(t.stats_file.read_text())
        assert st["connections_opened"] == N
        assert st["ended_closed"] + st["ended_shutdown"] + st["ended_reset_by_client"] == N
