"""The long leg ([wan]) of the splitter's configuration: which leg it is, the engine
settings it implies (rate control, loss as corruption, buffers from the BDP),
explicit [tcp.<leg>] keys winning, and the problems check-config reports."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackpep.pep import engine as eng
from stackpep.pep.config import check_file, wan_leg_settings
from stackpep.tcp.config import TcpConfig

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text):
    p = tmp_path / "pep.toml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def test_geo_examples_put_the_rate_on_the_link_side():
    a, problems = check_file(ROOT / "examples" / "geo-pep-a.toml")
    assert problems == []
    assert a.wan_leg == "server" and a.wan_rate == 20_000_000 and a.wan_rtt == 0.6
    # 4 x BDP = 4 x 20e6/8 x 0.6 = 6 MB, both ways
    assert a.tcp_server == {"congestion": "rate", "rate_bps": 20_000_000, "rate_share": "wan",
                            "loss_response": "corruption", "snd_buf": 6_000_000, "rcv_buf": 6_000_000,
                            "nagle": False,   # a relayed stream: no partial segment held for a round trip
                            "outage_rtos": 3, "outage_probe_us": 1_000_000,
                            # [wan] keepalive = 15 s: a far box that restarted answers the probe with RST
                            "keepalive": True, "keepalive_idle_us": 15_000_000,
                            "keepalive_interval_us": 3_750_000, "keepalive_count": 4,
                            # zero_rtt: Fast Open with the shared key, both roles, answer in SYN-RECEIVED
                            "tfo_key": bytes.fromhex("5c1f0e6d2b8a47a39e04d1c7b6f25a80"), "tfo_client": True,
                            "tfo_server": True, "tfo_synrcvd_send": 6_000_000,
                            # the first 128 KiB of every long-leg connection go twice
                            "first_flight_redundancy": 131072}
    assert a.tcp_client == {}            # the short leg keeps the engine defaults
    assert a.wan_zero_rtt and a.wan_scps == {"snack": True, "bets": False, "compression": False,
                                             "record_boundary": False}
    b, problems = check_file(ROOT / "examples" / "geo-pep-b.toml")
    assert problems == []
    assert b.wan_leg == "client" and b.tcp_client["congestion"] == "rate" and b.tcp_server == {}
    assert b.wan_zero_rtt and b.tcp_client["tfo_key"] == a.tcp_server["tfo_key"]  # the shared key


def test_engine_built_from_the_wan_leg_paces_at_the_rate():
    cfg, _ = check_file(ROOT / "examples" / "geo-pep-a.toml")
    tcfg = eng.tcp_config(cfg.tcp_server)
    assert isinstance(tcfg, TcpConfig)
    conn = eng.new_connection(tcfg, bytes([198, 18, 3, 2]), 80, bytes([198, 18, 1, 2]), 40000, 1)
    st = conn.statistics()
    assert st.congestion == "rate" and st.cwnd >= 1 << 40
    assert eng.new_connection(eng.tcp_config(cfg.tcp_client), bytes([198, 18, 1, 2]), 40000,
                              bytes([198, 18, 3, 2]), 80, 1).statistics().congestion == "cubic"


def test_interface_names_the_leg_and_explicit_settings_win(tmp_path):
    p = write(tmp_path, """
        [pep]
        instance = "x1"
        [interfaces]
        client = ["wan0"]
        server = ["lan0"]
        [wan]
        interface = "wan0"
        rate = 50000000
        rtt = 0.5
        keepalive = 0
        [tcp.client]
        rcv_buf = 16777216
        loss_response = "congestion"
    """)
    cfg, problems = check_file(p)
    assert problems == []
    assert cfg.wan_leg == "client"
    # 4 x 50e6/8 x 0.5 = 12.5 MB; rcv_buf and loss_response as written; keepalive off
    assert cfg.tcp_client == {"congestion": "rate", "rate_bps": 50_000_000, "rate_share": "wanx1",
                              "loss_response": "congestion", "snd_buf": 12_500_000, "rcv_buf": 16_777_216,
                              "nagle": False, "outage_rtos": 3, "outage_probe_us": 1_000_000}


def test_a_coarser_wake_up_grid_widens_the_pacing_slack(tmp_path):
    # a pacing deadline is served up to one grid step late: the long leg makes it up
    # in full with twice the grid as slack; the default grid (4 ms at 600 ms) keeps
    # the engine's own 8 ms, and [tcp.<leg>] still wins
    def leg(capture, tcp=""):
        p = write(tmp_path, f"""
            [interfaces]
            client = ["lan0"]
            server = ["wan0"]
            {capture}
            [wan]
            leg = "server"
            rate = 50000000
            rtt = 0.6
            {tcp}
        """)
        cfg, problems = check_file(p)
        assert problems == []
        return cfg.hold_us, cfg.tcp_server.get("pace_slack_us")

    assert leg("") == (4000, None)
    assert leg("[capture]\n            hold_us = 8000") == (8000, 16000)
    assert leg("[capture]\n            hold_us = 8000", "[tcp.server]\n            pace_slack_us = 9000") == (8000, 9000)


def test_small_links_keep_the_engine_minimum_buffers():
    assert wan_leg_settings(1_000_000, 0.6)["snd_buf"] == 4 << 20


@pytest.mark.parametrize("wan, key, line", [
    ('leg = "server"', "wan.rate", 4),                          # missing: the [wan] header's line
    ('rate = 20000000', "wan.leg", 4),
    ('leg = "sky"\nrate = 20000000', "wan.leg", 5),
    ('interface = "eth9"\nrate = 20000000', "wan.interface", 5),
    ('leg = "server"\nrate = 100', "wan.rate", 6),
    ('leg = "server"\nrate = 20000000\nrtt = 0', "wan.rtt", 7),
    ('leg = "server"\nrate = 20000000\nburst = 3', "wan.burst", 7),
    ('leg = "server"\nrate = 20000000\nscps = "yes"', "wan.scps", 7),
    ('leg = "server"\nrate = 20000000\nscps_refusal_ttl = 0', "wan.scps_refusal_ttl", 7),
    ('leg = "server"\nrate = 20000000\nkeepalive = 0.5', "wan.keepalive", 7),
    ('leg = "server"\nrate = 20000000\nzero_rtt = true', "wan.zero_rtt", 7),
    ('leg = "server"\nrate = 20000000\nzero_rtt = true\ntfo_key = "00"', "wan.tfo_key", 8),
    ('leg = "server"\nrate = 20000000\nfirst_flight_redundancy = -1', "wan.first_flight_redundancy", 7),
    ('leg = "server"\nrate = 20000000\nfirst_flight_redundancy = 2147483648', "wan.first_flight_redundancy", 7),
    ('leg = "server"\nrate = 20000000\nfirst_flight_redundancy = true', "wan.first_flight_redundancy", 7),
    ('leg = "server"\nrate = 20000000\nfirst_flight_redundancy = "128k"', "wan.first_flight_redundancy", 7),
    ('leg = "server"\nrate = 20000000\nfirst_flight_redundancy = 1.5', "wan.first_flight_redundancy", 7),
])
def test_problems_name_the_key_and_line(tmp_path, wan, key, line):
    text = "[interfaces]\nclient = [\"c0\"]\nserver = [\"s0\"]\n[wan]\n" + wan + "\n"
    p = tmp_path / "pep.toml"
    p.write_text(text)
    cfg, problems = check_file(p)
    assert cfg is None
    hits = [x for x in problems if x.key == key]
    assert hits, problems
    assert hits[0].line == line, problems


def test_wan_leg_settings_rejected_by_the_engine_are_reported(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = "c0"
        server = "s0"
        [wan]
        leg = "server"
        rate = 20000000
        [tcp.server]
        rate_bps = 5
    """)
    cfg, problems = check_file(p)
    assert cfg is None and any(x.key.startswith("tcp.server") for x in problems)


def test_scps_on_by_default_with_wan_and_server_initiated_follows_wan(tmp_path):
    base = "[interfaces]\nclient = \"c0\"\nserver = \"s0\"\n"
    cfg, problems = check_file(write(tmp_path, base + "[wan]\nleg = \"server\"\nrate = 20000000\n"))
    assert problems == []
    assert cfg.wan_scps == {"snack": True, "bets": False, "compression": False, "record_boundary": False}
    assert cfg.wan_scps_refusal_ttl == 600.0 and cfg.server_initiated is True
    cfg, _ = check_file(write(tmp_path, base + "[intercept]\nserver_initiated = false\n[wan]\nleg = \"server\"\n"
                                               "rate = 20000000\nscps = false\nscps_refusal_ttl = 30\n"))
    assert cfg.wan_scps is None and cfg.server_initiated is False and cfg.wan_scps_refusal_ttl == 30.0
    cfg, _ = check_file(write(tmp_path, base))
    assert cfg.wan_scps is None and cfg.server_initiated is False
    cfg, _ = check_file(write(tmp_path, base + "[wan]\nleg = \"client\"\nrate = 20000000\nscps_bets = true\n"
                                               "scps_snack = false\n"))
    assert cfg.wan_scps == {"snack": False, "bets": True, "compression": False, "record_boundary": False}


# -- SCPS-TP congestion control, loss type, outage (issue 10) -----------------------------
def test_wan_congestion_loss_type_vegas_and_outage_keys(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = "c0"
        server = "s0"
        [wan]
        leg = "server"
        rate = 20000000
        congestion = "vegas"
        loss_type = "corruption"
        vegas = { alpha = 2, beta = 4, gamma = 1.5 }
        outage_rtos = 4
        outage_probe_interval = 0.5
        keepalive = 0
    """)
    cfg, problems = check_file(p)
    assert problems == []
    assert cfg.tcp_server == {"congestion": "vegas", "loss_response": "corruption", "snd_buf": 6_000_000,
                              "rcv_buf": 6_000_000, "nagle": False, "vegas_alpha": 2.0, "vegas_beta": 4.0, "vegas_gamma": 1.5,
                              # Vegas over a link of known rate: never paced above it, and
                              # the first window is 1.25 x the BDP (20 Mbit/s x 0.6 s = 1.5 MB)
                              "rate_bps": 20_000_000, "initial_window_segments": 1_875_000 // 1448 + 1,
                              "outage_rtos": 4, "outage_probe_us": 500_000}
    conn = eng.new_connection(eng.tcp_config(cfg.tcp_server), bytes([198, 18, 3, 2]), 80,
                              bytes([198, 18, 1, 2]), 40000, 1)
    assert conn.statistics().congestion == "vegas"


def test_wan_min_rate_tcp_mode_and_outage_off(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = "c0"
        server = "s0"
        [wan]
        leg = "server"
        rate = 20000000
        min_rate = 5000000
        loss_type = "congestion"
        outage_rtos = 0
    """)
    cfg, problems = check_file(p)
    assert problems == []
    assert cfg.tcp_server["min_rate_bps"] == 5_000_000 and cfg.tcp_server["loss_response"] == "congestion"
    assert "outage_rtos" not in cfg.tcp_server
    TcpConfig(**cfg.tcp_server)
    p = write(tmp_path, """
        [interfaces]
        client = "c0"
        server = "s0"
        [wan]
        leg = "server"
        rate = 20000000
        congestion = "tcp"
    """)
    cfg, problems = check_file(p)
    assert problems == [] and cfg.tcp_server["congestion"] == "newreno" and "rate_bps" not in cfg.tcp_server


@pytest.mark.parametrize("wan, key, words", [
    ('congestion = "bbr"', "wan.congestion", "one of rate, vegas, tcp"),
    ('loss_type = "random"', "wan.loss_type", "one of corruption, congestion"),
    ('min_rate = 30000000', "wan.min_rate", "at most wan.rate"),
    ('congestion = "vegas"\nmin_rate = 1000000', "wan.min_rate", "only with wan.congestion"),
    ('vegas = { alpha = 3 }', "wan.vegas", "only with wan.congestion"),
    ('congestion = "vegas"\nvegas = { alpha = 6, beta = 5 }', "wan.vegas", "alpha must not exceed beta"),
    ('congestion = "vegas"\nvegas = { delta = 1 }', "wan.vegas.delta", "unknown key"),
    ('congestion = "vegas"\nvegas = { gamma = -1 }', "wan.vegas.gamma", "> 0"),
    ('vegas = 3\ncongestion = "vegas"', "wan.vegas", "must be a table"),
    ('outage_rtos = -1', "wan.outage_rtos", "0 .. 100"),
    ('outage_probe_interval = 0', "wan.outage_probe_interval", "seconds"),
    ('scps_snack_repeat = 101', "wan.scps_snack_repeat", "0 .. 100"),
    ('scps_snack_repeat = true', "wan.scps_snack_repeat", "an integer"),
])
def test_wan_scps_keys_are_checked(tmp_path, wan, key, words):
    text = "[interfaces]\nclient = [\"c0\"]\nserver = [\"s0\"]\n[wan]\nleg = \"server\"\nrate = 20000000\n" + wan + "\n"
    p = tmp_path / "pep.toml"
    p.write_text(text)
    cfg, problems = check_file(p)
    assert cfg is None
    hits = [x for x in problems if x.key == key]
    assert hits and words in hits[0].message, problems


@pytest.mark.parametrize("extra, want", [
    ("", None),                                                    # no zero_rtt: off
    ('zero_rtt = true\ntfo_key = "' + "ab" * 16 + '"', 131072),     # on with zero_rtt
    ('zero_rtt = true\ntfo_key = "' + "ab" * 16 + '"\nfirst_flight_redundancy = 0', None),
    ("first_flight_redundancy = 65536", 65536),                    # also without zero_rtt
])
def test_first_flight_redundancy_default_follows_zero_rtt(tmp_path, extra, want):
    text = "[interfaces]\nclient = [\"c0\"]\nserver = [\"s0\"]\n[wan]\nleg = \"server\"\nrate = 20000000\n" + extra + "\n"
    cfg, problems = check_file(write(tmp_path, text))
    assert problems == []
    assert cfg.tcp_server.get("first_flight_redundancy") == want
    assert TcpConfig(**cfg.tcp_server).first_flight_redundancy == (want or 0)


def test_first_flight_redundancy_problem_says_what_is_allowed(tmp_path):
    text = "[interfaces]\nclient = [\"c0\"]\nserver = [\"s0\"]\n[wan]\nleg = \"server\"\nrate = 20000000\n" \
           "first_flight_redundancy = -5\n"
    cfg, problems = check_file(write(tmp_path, text))
    assert cfg is None
    [p] = [x for x in problems if x.key == "wan.first_flight_redundancy"]
    assert "0 (off) .. 1073741824" in p.message and "-5" in p.message


def test_scps_snack_repeat_reaches_the_engine_settings_only_when_given(tmp_path):
    # docs/scps.md "Interoperability with the reference gateway": 1 against a reference
    # peer; absent, the engine's default (ScpsSettings.snack_repeat = 3) holds
    from stackpep.pep.scps import ScpsLink

    base = "[interfaces]\nclient = [\"c0\"]\nserver = [\"s0\"]\n[wan]\nleg = \"server\"\nrate = 20000000\n"
    cfg, problems = check_file(write(tmp_path, base + "scps_snack_repeat = 1\n"))
    assert problems == [] and cfg.wan_scps["snack_repeat"] == 1
    assert ScpsLink(cfg.wan_scps, 1_000_000, {}).settings.snack_repeat == 1
    cfg, _ = check_file(write(tmp_path, base))
    assert "snack_repeat" not in cfg.wan_scps
    assert ScpsLink(cfg.wan_scps, 1_000_000, {}).settings.snack_repeat == 3
