"""Every process the testbed starts runs the installed stackpep, whatever the
working directory (issue 8 §1), and a failed cell fails the command, saying why.

The trap is a clone's root after `pip install .`: its `stackpep/` holds the
sources but no compiled modules, and `python -m` puts the working directory first
on sys.path.  `source_tree` builds that folder; the tests drop the suite-wide
PYTHONSAFEPATH (conftest.py) so that only what stackpep itself does protects the
children.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import stackpep
from stackpep._fast.__main__ import COMPILED
from stackpep.testbed import topology
from stackpep.testbed.netns import neutral_cwd
from stackpep.testbed.topology import python_command, python_env

INSTALLED = Path(stackpep.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def source_tree(tmp_path, monkeypatch):
    """A folder holding stackpep's sources (*.py only) as the working directory;
    nothing from the test environment that would hide the shadowing."""
    src = REPO / "stackpep" if (REPO / "stackpep" / "__init__.py").exists() else INSTALLED
    root = tmp_path / "clone"
    shutil.copytree(src, root / "stackpep",
                    ignore=lambda d, names: [n for n in names if not n.endswith(".py") and not (Path(d) / n).is_dir()
                                             or n == "__pycache__"])
    assert not list((root / "stackpep" / "_fast").glob("*.so"))
    monkeypatch.chdir(root)
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return root


def _which_build(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def test_compiled_module_list_matches_the_sources():
    pyx = sorted(p.stem for p in (REPO / "stackpep" / "_fast").glob("*.pyx"))
    assert pyx == sorted(COMPILED)


def test_plain_python_m_in_the_source_tree_imports_the_sources(source_tree):
    # The hazard itself, so that the tests below can fail: without stackpep's
    # launcher a child started here imports the bare sources (whose
    # stackpep/_fast/__init__.py then borrows the installed build's compiled
    # modules, so a hand-typed `python -c "import stackpep..."` still works).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    res = _which_build([sys.executable, "-m", "stackpep._fast"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"stackpep {stackpep.__version__} in {source_tree / 'stackpep'}"
    for line in lines[1:]:
        assert Path(line.split(": ", 1)[1]).parent == INSTALLED / "_fast", line


def test_source_tree_without_an_installed_build_says_what_is_missing(source_tree, tmp_path):
    # Only the bare sources on the path (no site-packages): the compiled modules
    # are reported missing, by name, and the exit status is 1.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    res = _which_build([sys.executable, "-S", "-m", "stackpep._fast"], env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "capture: MISSING (ModuleNotFoundError: No module named 'stackpep._fast.capture')" in res.stdout


def test_child_started_as_the_testbed_does_runs_the_installed_package(source_tree):
    # python_command + python_env, with the source tree as working directory
    res = _which_build(python_command("stackpep._fast"), env=python_env())
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == f"stackpep {stackpep.__version__} in {INSTALLED}"
    assert [line.split(": ", 1)[0] for line in lines[1:]] == list(COMPILED)
    for line in lines[1:]:
        assert Path(line.split(": ", 1)[1]).parent == INSTALLED / "_fast", line


def test_neutral_cwd_alone_protects_interpreters_without_safe_path(source_tree):
    # Python < 3.11 has neither -P nor PYTHONSAFEPATH: a Host's default working
    # directory is what keeps the sources off its children's path there.
    env = {k: v for k, v in python_env().items() if k != "PYTHONSAFEPATH"}
    res = _which_build([sys.executable, "-m", "stackpep._fast"], env=env, cwd=neutral_cwd())
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith(f"stackpep {stackpep.__version__} in {INSTALLED}\n")
    assert list(Path(neutral_cwd()).iterdir()) == []


def test_python_env_never_puts_a_bare_source_tree_on_the_path(source_tree, monkeypatch):
    monkeypatch.setattr(stackpep, "__file__", str(source_tree / "stackpep" / "__init__.py"))
    assert "PYTHONPATH" not in python_env()
    assert python_env()["PYTHONSAFEPATH"] == "1"
    # an in-place build (compiled modules next to the sources) is what this
    # process runs, so its children get it too
    (source_tree / "stackpep" / "_fast" / f"capture{topology.importlib.machinery.EXTENSION_SUFFIXES[0]}").touch()
    assert python_env()["PYTHONPATH"] == str(source_tree)


def test_python_env_makes_relative_pythonpath_absolute(source_tree, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"lib{os.pathsep}/opt/x")
    assert python_env()["PYTHONPATH"].split(os.pathsep)[-2:] == [str(source_tree / "lib"), "/opt/x"]


@pytest.mark.netns
@needs_root
def test_demo_children_run_the_installed_package_from_the_source_tree(source_tree, tmp_path):
    """The emulator, the HTTP server and `stackpep run` as the demo starts them,
    from the source tree: each runs (the PEP says READY, so capture imported)."""
    from stackpep.testbed.scenarios import StackpepPep, demo_scenario
    from stackpep.testbed.workloads import HTTP_PORT, start_http_server

    with topology.Topology(workdir=str(tmp_path / "work")) as topo:
        topo.start_link(demo_scenario().link)
        start_http_server(topo)
        pep = StackpepPep(1)
        assert pep.availability(topo) is None
        pep.start(topo)
        try:
            assert topo.emulator.poll() is None
            assert [p.poll() for p in pep.procs] == [None]
            assert topo.server.run(["ss", "-Hltn", f"sport = :{HTTP_PORT}"]).stdout.count("LISTEN") == 1
        finally:
            pep.stop(topo)
        log = (tmp_path / "work" / "stackpep-one-box-pep-a.log").read_text()
        assert "READY" in log and "Error" not in log, log


BROKEN_TEMPLATE = """\
# a box whose interfaces do not exist: check-config passes, `stackpep run` refuses
[pep]
role = "splitter"
[interfaces]
client = ["nosuch0"]
server = ["{server_if}"]
[intercept]
prefixes = ["198.18.0.0/15"]
"""


@pytest.mark.netns
@needs_root
def test_testbed_run_exits_1_and_prints_the_failing_process_log(source_tree, tmp_path):
    """`stackpep testbed run` (the console script, from the source tree) with a PEP
    that cannot start: exit status 1, the cause and the log's last lines on stderr."""
    tpl = tmp_path / "broken.toml"
    tpl.write_text(BROKEN_TEMPLATE)
    script = Path(sys.executable).parent / "stackpep"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    res = subprocess.run([str(script), "testbed", "run", "demo", "--configs", "stackpep-one-box",
                          "--pep-config", str(tpl), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    log = tmp_path / "out" / "work" / "stackpep-one-box-pep-a.log"
    assert res.stderr.splitlines()[:3] == [
        "stackpep testbed run: 1 of 1 cell(s) failed",
        "FAILED demo-geo-20M-loss1% / stackpep-one-box: RuntimeError: stackpep-one-box: "
        "`stackpep run` in pep-a exited with 2",
        f"  last 2 lines of {log}:"]
    assert "interfaces.client[0]: no interface 'nosuch0' on this host" in res.stderr
    assert "ModuleNotFoundError" not in res.stderr
    assert "stackpep-one-box: error:" in res.stdout  # the table's legend says it too
