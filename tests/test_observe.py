"""Seeing and steering a running box, over in-memory ports (test_splitter's Box):
the control socket's stats reply, the Prometheus exposition, the connection
log's JSON lines, a configuration reload (live keys applied, the rest refused
and the old configuration kept, established connections untouched) and
draining (new SYNs reset, active connections finish, the rest reset)."""
import json
import logging
import os
import stat

import pytest
import trio
import trio.testing

from stackpep.pep.api import open_pep
from stackpep.pep.metrics import render

def _splitter_tests():
    # (--import-mode=importlib: the sibling module is loaded by path)
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location("_splitter_tests", pathlib.Path(__file__).with_name("test_splitter.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_st = _splitter_tests()
Box, pep_config, recv_all, run_virtual = _st.Box, _st.pep_config, _st.recv_all, _st.run_virtual

import stackpep._fast.tcp  # noqa: F401,E402  (a missing build is a failure, not a skip)


async def _ask(path, req):
    s = await trio.open_unix_socket(str(path))
    await s.send_all(json.dumps(req).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        d = await s.receive_some(1 << 16)
        if not d:
            break
        buf += d
    await s.aclose()
    return json.loads(buf)


def test_stats_over_control_socket_match_the_dispatcher(tmp_path):
    sock = tmp_path / "ctl.sock"
    up, down = os.urandom(50_000), os.urandom(70_000)

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(control={"socket": str(sock)})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router, control=True) as pep:
                # born 0600: only root reads the counters
                assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
                c = await box.connect()
                s = await box.accept()
                await c.send_all(up)
                assert await recv_all(s, len(up)) == up
                await s.send_all(down)
                assert await recv_all(c, len(down)) == down
                # quiet first: the last delayed ACKs (TcpConfig.delayed_ack_us, real time here)
                # sent and taken, so none lands between the reply and the reads below
                await trio.testing.wait_all_tasks_blocked(cushion=0.5)
                reply = await _ask(sock, {"command": "stats"})
                assert reply["ok"] is True
                st = reply["stats"]
                # nothing ran between the reply and these reads: no packets in flight
                assert st["counters"] == pep.dispatcher.counters
                assert st["counters"]["connections_opened"] == 1
                assert st["connections_active"] == 1 and st["leg_states"] == {
                    "client_leg_ESTABLISHED": 1, "server_leg_ESTABLISHED": 1}
                assert st["drops"]["drop_table_full"] == 0
                (conn,) = pep.dispatcher.table.values()
                (x,) = st["connections"]
                assert x["client"] == "198.18.0.2:40000" and x["server"] == "198.18.1.2:80"
                assert (x["bytes_up"], x["bytes_down"]) == (len(up), len(down)) == tuple(conn.bytes_relayed)
                for i, name in enumerate(("client", "server")):
                    eng = conn.legs[i].statistics()
                    lg = x["legs"][name]
                    assert lg["state"] == "ESTABLISHED"
                    assert (lg["cwnd"], lg["srtt_us"], lg["retransmits"], lg["bytes_sent"]) == (
                        eng.cwnd, eng.srtt_us, eng.retransmits, eng.bytes_sent)
                assert x["legs"]["client"]["bytes_sent"] >= len(down)
                bad = await _ask(sock, {"command": "nope"})
                assert bad["ok"] is False and "unknown command 'nope'" in bad["error"]
                await c.aclose()
                await s.aclose()
            assert not sock.exists()  # removed on exit
            n.cancel_scope.cancel()

    trio.run(main)


def _samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = int(value)
    return out


def test_metrics_exposition_matches_the_dispatcher_counters():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(limits={"max_connections": 1})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect(40000)
                await box.accept()
                await box.connect(40001, wait=False)  # refused: table full
                await trio.sleep(1.5)
                text = render(pep)
                m = _samples(text)
                ctr = pep.dispatcher.counters
                assert "# TYPE stackpep_drops_total counter" in text
                assert "# TYPE stackpep_connections gauge" in text
                assert m['stackpep_drops_total{reason="table_full"}'] == ctr["drop_table_full"] > 0
                assert m["stackpep_packets_in_total"] == ctr["packets_in"]
                assert m["stackpep_connections_opened_total"] == 1
                assert m['stackpep_connections_ended_total{outcome="closed"}'] == 0
                assert m['stackpep_connections{state="active"}'] == 1
                assert m['stackpep_legs{leg="client",state="ESTABLISHED"}'] == 1
                assert m["stackpep_connections_max"] == 1
                assert m['stackpep_port_rx_packets_total{port="c"}'] == box.cport.counters["rx_packets"]
                # every dispatcher counter is there, once
                assert sum(1 for k in m if k.startswith(("stackpep_drops_total", "stackpep_icmp_drops_total",
                                                         "stackpep_connections_ended_total"))) + sum(
                    1 for k in ctr if not k.startswith(("drop_", "icmp_drop_", "ended_"))) == len(ctr)
                for k, v in ctr.items():
                    if not k.startswith(("drop_", "icmp_drop_", "ended_")):
                        assert m[f"stackpep_{k}_total"] == v
                await c.aclose()
            n.cancel_scope.cancel()

    run_virtual(main)


def test_connection_end_is_one_json_line(caplog):
    up, down = os.urandom(30_000), os.urandom(40_000)

    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(log={"format": "json"})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect()
                s = await box.accept()
                await c.send_all(up)
                await c.send_eof()
                assert await recv_all(s) == up
                await s.send_all(down)
                await s.send_eof()
                assert await recv_all(c) == down
                while pep.dispatcher.table:
                    await trio.sleep(1)  # TIME-WAIT runs out in virtual time
            n.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="stackpep.connections"):
        run_virtual(main)
    lines = [r for r in caplog.records if r.name == "stackpep.connections"]
    assert len(lines) == 1 and lines[0].json_line is True
    rec = json.loads(lines[0].getMessage())
    assert {k: rec[k] for k in ("event", "client", "server", "outcome", "bytes_up", "bytes_down")} == {
        "event": "connection_end", "client": "198.18.0.2:40000", "server": "198.18.1.2:80",
        "outcome": "closed", "bytes_up": len(up), "bytes_down": len(down)}
    assert rec["retransmits_client_leg"] == 0 and rec["retransmits_server_leg"] == 0
    assert isinstance(rec["duration_s"], float) and isinstance(rec["ts"], float)


def test_text_connection_log_and_switched_off(caplog):
    async def main(log_connections):
        async with trio.open_nursery() as n:
            box = Box(n)
            cfg = pep_config(log={"connections": log_connections})
            async with open_pep(cfg, ports=[box.cport, box.sport], router=box.router):
                c = await box.connect()
                s = await box.accept()
                await c.send_all(b"x" * 10)
                assert await recv_all(s, 10) == b"x" * 10
                s.conn.abort()
                s.driver.flush()
                with pytest.raises(trio.BrokenResourceError):
                    await c.receive_some(10)
                await trio.sleep(0.1)
            n.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="stackpep.connections"):
        trio.run(main, True, clock=trio.testing.MockClock(autojump_threshold=0))
        msgs = [r.getMessage() for r in caplog.records if r.name == "stackpep.connections"]
        assert msgs == ["connection 198.18.0.2:40000 -> 198.18.1.2:80 reset_by_server: 10 bytes up, 0 bytes down, "
                        + msgs[0].rsplit(", ", 1)[1]]
        caplog.clear()
        trio.run(main, False, clock=trio.testing.MockClock(autojump_threshold=0))
        assert [r for r in caplog.records if r.name == "stackpep.connections"] == []


def test_reload_applies_live_keys_and_refuses_the_rest(caplog):
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                c = await box.connect(40000)
                s = await box.accept()
                await c.send_all(b"before")
                assert await recv_all(s, 6) == b"before"
                old = pep.config
                # refused: the interfaces (and one live key with it): nothing changes
                res = await pep.reload(pep_config(interfaces={"client": ["c2"]}, limits={"max_connections": 7}))
                assert not res.ok and res.applied == ()
                assert res.refused == (("interfaces.client", "the capture rings are bound to the interfaces"),)
                assert pep.config is old and pep.dispatcher.config is old
                assert pep.dispatcher.config.max_connections == 10000
                # accepted: limits, timeouts, logging
                res = await pep.reload(pep_config(limits={"max_connections": 1, "idle_timeout": 99.0},
                                                  handshake={"timeout": 4.0}, log={"format": "json"}))
                assert res.ok and set(res.applied) == {"limits.max_connections", "limits.idle_timeout",
                                                       "handshake.timeout", "log.format"}
                assert pep.dispatcher.config.max_connections == 1 and pep.config.log_format == "json"
                # the established connection goes on, both ways
                await c.send_all(b"after")
                assert await recv_all(s, 5) == b"after"
                await s.send_all(b"back")
                assert await recv_all(c, 4) == b"back"
                # the new limit holds for new SYNs
                c2 = await box.connect(40001, wait=False)
                await trio.sleep(1.5)
                assert not c2.driver.connected and pep.statistics()["drop_table_full"] > 0
                assert pep.statistics()["ended_reset_by_client"] + pep.statistics()["ended_shutdown"] == 0
                await c.aclose()
            n.cancel_scope.cancel()

    with caplog.at_level(logging.INFO, logger="stackpep.pep"):
        run_virtual(main)
    msgs = [r.getMessage() for r in caplog.records if r.name == "stackpep.pep"]
    assert ("reload refused: interfaces.client cannot change while running (the capture rings are bound to the "
            "interfaces); restart to change it. Keeping the old configuration") in msgs
    assert any(m.startswith("configuration reloaded from <dict>: ") and "limits.max_connections" in m for m in msgs)


def test_drain_resets_new_syns_lets_active_finish_then_resets_the_rest():
    async def main():
        async with trio.open_nursery() as n:
            box = Box(n)
            async with open_pep(pep_config(), ports=[box.cport, box.sport], router=box.router) as pep:
                a = await box.connect(40000)
                sa = await box.accept()
                b = await box.connect(40001)
                sb = await box.accept()
                left = []

                async def drain():
                    left.append(await pep.drain(timeout=30.0))

                n.start_soon(drain)
                await trio.sleep(0.1)
                # a new client is refused with RST at once
                c = await box.connect(40002, wait=False)
                with pytest.raises(trio.BrokenResourceError):
                    await c.wait_connected()
                assert pep.statistics()["drop_draining"] == 1
                # an active connection still carries data and closes normally
                await sa.send_all(b"last words")
                await sa.send_eof()
                assert await recv_all(a) == b"last words"
                await a.send_eof()
                await a.aclose()
                await sa.aclose()
                await trio.sleep(40)  # drain times out: b is still open
                assert left == [1]
                # the block's exit resets what is left; both ends of b hear it
            with pytest.raises(trio.BrokenResourceError):
                await b.receive_some(10)
            with pytest.raises(trio.BrokenResourceError):
                await sb.receive_some(10)
            st = pep.statistics()
            # a lingered in TIME-WAIT (no RST for it: its legs are closed), b was reset
            assert st["ended_shutdown"] == 2 and st["drop_draining"] == 1 and st["connections_opened"] == 2
            n.cancel_scope.cancel()

    run_virtual(main)


def test_check_config_validates_the_new_keys():
    from stackpep.pep.config import check_dict, from_dict

    base = {"interfaces": {"client": ["c"], "server": ["s"]}}
    cfg = from_dict(base)
    assert (cfg.control_socket, cfg.metrics_listen, cfg.log_connections, cfg.log_format, cfg.drain_timeout) == (
        "/run/stackpep/stackpep.sock", None, True, "text", 10.0)
    assert from_dict({**base, "pep": {"instance": "a1"}}).control_socket == "/run/stackpep/a1.sock"
    cfg = from_dict({**base, "metrics": {"listen": "[fd00::1]:9750"}, "control": {"socket": ""},
                     "log": {"connections": False, "format": "json"}, "limits": {"drain_timeout": 0}})
    assert (cfg.metrics_listen, cfg.control_socket, cfg.log_connections, cfg.log_format, cfg.drain_timeout) == (
        "[fd00::1]:9750", "", False, "json", 0.0)
    bad = check_dict({**base, "metrics": {"listen": "localhost:http", "x": 1}, "control": {"socket": "rel.sock"},
                      "log": {"format": "xml"}, "limits": {"drain_timeout": -1}}, "f.toml", {})
    assert sorted(p.key for p in bad) == ["control.socket", "limits.drain_timeout", "log.format", "metrics.listen",
                                          "metrics.x"]
