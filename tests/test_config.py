"""The PEP's TOML configuration: every problem with file, line and key; the
examples are valid; check-config's exit codes and output."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stackpep.pep.config import ConfigError, PepConfig, check_file, from_dict, key_lines, load

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="pep.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_is_valid(example):
    cfg, problems = check_file(example)
    assert problems == []
    assert isinstance(cfg, PepConfig)
    assert cfg.client_interfaces == ("box1",) and cfg.server_interfaces == ("box2",)


def test_values_are_read(tmp_path):
    p = write(tmp_path, """
        [pep]
        instance = "a1"
        [interfaces]
        client = ["c0", "c1"]
        server = "s0"
        [intercept]
        prefixes = ["198.18.1.0/24", "fd00:2::/64"]
        ports = [80, "5000-5100"]
        [handshake]
        mode = "immediate"
        timeout = 3
        [limits]
        max_connections = 7
        relay_buffer = 4096
        [rules]
        backend = "iptables-legacy"
        mark = 0x10
    """)
    cfg = load(p)
    assert cfg.instance == "a1"
    assert cfg.client_interfaces == ("c0", "c1") and cfg.server_interfaces == ("s0",)
    assert cfg.prefixes == ("198.18.1.0/24", "fd00:2::/64")
    assert cfg.ports == ((80, 80), (5000, 5100))
    assert cfg.handshake_mode == "immediate" and cfg.handshake_timeout == 3.0
    assert cfg.max_connections == 7 and cfg.relay_buffer == 4096
    assert cfg.rules_backend == "iptables-legacy" and cfg.mark == 0x10
    assert cfg.source == str(p)


def test_every_problem_is_reported_with_line_and_key(tmp_path):
    p = write(tmp_path, """
        [pep]
        role = "router"

        [interfaces]
        client = ["box1"]
        server = ["box1", "this-name-is-far-too-long"]

        [intercept]
        prefixes = ["198.18.1.0/33", "fd00::1/64"]
        ports = [80, 0, "90-80", "http"]
        colour = "blue"

        [handshake]
        mode = "later"
        timeout = -1

        [limits]
        max_connections = "many"
        relay_buffer = 10

        [rules]
        backend = "iptables"

        [bogus]
        x = 1
    """)
    cfg, problems = check_file(p)
    assert cfg is None
    got = {(pr.line, pr.key) for pr in problems}
    assert all(pr.file == str(p) for pr in problems)
    assert got == {
        (2, "pep.role"),
        (4, "interfaces"),  # box1 on both sides
        (6, "interfaces.server[1]"),
        (9, "intercept.prefixes[0]"),
        (9, "intercept.prefixes[1]"),  # host bits set
        (10, "intercept.ports[1]"),
        (10, "intercept.ports[2]"),
        (10, "intercept.ports[3]"),
        (11, "intercept.colour"),
        (14, "handshake.mode"),
        (15, "handshake.timeout"),
        (18, "limits.max_connections"),
        (19, "limits.relay_buffer"),
        (22, "rules.backend"),
        (24, "bogus"),
    }
    text = {str(pr) for pr in problems}
    assert f"{p}:2: pep.role: one of splitter (got 'router')" in text
    assert any(t.startswith(f"{p}:11: intercept.colour: unknown key") for t in text)


def test_missing_interfaces_is_a_problem(tmp_path):
    p = write(tmp_path, """
        [pep]
        log_level = "info"
    """)
    cfg, problems = check_file(p)
    assert [(pr.key, pr.line) for pr in problems] == [("interfaces", None)]
    p2 = write(tmp_path, """
        [interfaces]
        client = ["a"]
    """, "p2.toml")
    _, problems = check_file(p2)
    assert [(pr.key, pr.line) for pr in problems] == [("interfaces.server", 1)]


def test_toml_syntax_error_has_line(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = ["box1"]
        server = ["box2"
        [limits]
    """)
    cfg, problems = check_file(p)
    assert cfg is None and len(problems) == 1
    assert problems[0].line in (3, 4)
    assert "TOML syntax error" in problems[0].message


def test_unreadable_file(tmp_path):
    cfg, problems = check_file(tmp_path / "nope.toml")
    assert cfg is None and problems[0].message.startswith("cannot read")


def test_load_raises_with_all_problems(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = ["a"]
        server = ["b"]
        [limits]
        max_connections = 0
        idle_timeout = "long"
    """)
    with pytest.raises(ConfigError) as ei:
        load(p)
    assert [pr.key for pr in ei.value.problems] == ["limits.max_connections", "limits.idle_timeout"]


def test_from_dict_has_no_lines():
    cfg = from_dict({"interfaces": {"client": ["a"], "server": ["b"]}})
    assert cfg.prefixes == ("0.0.0.0/0", "::/0") and cfg.ports == ()
    with pytest.raises(ConfigError) as ei:
        from_dict({"interfaces": {"client": ["a"], "server": ["b"]}, "handshake": {"mode": 1}})
    (pr,) = ei.value.problems
    assert (pr.file, pr.line, pr.key) == ("<dict>", None, "handshake.mode")


def test_key_lines_handles_dotted_and_quoted_keys():
    text = 'a = 1\n[t]\n"b" = 2\nc.d = 3\n[x.y]\n e = """\nz = 1\n"""\nf = 4\n'
    assert key_lines(text) == {"a": 1, "t": 2, "t.b": 3, "t.c.d": 4, "x.y": 5, "x.y.e": 6, "x.y.f": 9}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "stackpep", *args], capture_output=True, text=True, timeout=60,
                          cwd="/")  # not the source tree: `-m` puts cwd first on sys.path


def test_check_config_cli(tmp_path):
    good = _cli("check-config", str(ROOT / "examples" / "splitter.toml"))
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().endswith("splitter.toml: OK")
    p = write(tmp_path, """
        [interfaces]
        client = ["a"]
        server = ["b"]
        [handshake]
        mode = "later"
    """)
    bad = _cli("check-config", str(p))
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines[0] == f"{p}:5: handshake.mode: one of after-server, immediate, syn-cookie (got 'later')"
    assert lines[-1] == f"{p}: 1 problem(s)"


def test_run_refuses_a_bad_config_before_touching_anything(tmp_path):
    p = write(tmp_path, """
        [interfaces]
        client = ["a"]
        server = ["b"]
        [limits]
        relay_buffer = 1
    """)
    res = _cli("run", "-c", str(p))
    assert res.returncode == 2
    assert f"{p}:5: limits.relay_buffer" in res.stderr
    assert "not starting" in res.stderr


def test_default_table_holds_ten_thousand_connections():
    # issue 11: 10,000 split connections a box by default, with the embryonic and
    # server-open limits below it (a flood is bounded before the table is)
    cfg = from_dict({"interfaces": {"client": ["c"], "server": ["s"]}})
    assert cfg.max_connections == 10000
    assert cfg.max_embryonic < cfg.max_connections
    assert cfg.max_embryonic_per_source < cfg.max_embryonic
