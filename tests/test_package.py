"""The package itself: CLI entry point, stubs for compiled modules, CI == README,
and a binary wheel that works with the source tree out of the way."""
import glob
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import stackpep
from stackpep.testbed.topology import python_command, python_env

ROOT = Path(__file__).resolve().parents[1]


def _stackpep(*args):
    return subprocess.run(python_command("stackpep", *args), capture_output=True, text=True, timeout=60,
                          env=python_env())


def test_version_matches_package():
    res = _stackpep("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"stackpep {stackpep.__version__}"


def test_help_lists_commands():
    res = _stackpep("--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: stackpep")


def test_every_compiled_module_has_a_stub():
    pyx = sorted(Path(p).stem for p in glob.glob(str(ROOT / "stackpep" / "_fast" / "*.pyx")))
    pyi = sorted(Path(p).stem for p in glob.glob(str(ROOT / "stackpep" / "_fast" / "*.pyi")))
    assert pyx, "no compiled modules found"
    assert [m for m in pyx if m not in pyi] == []


def test_compiled_modules_import():
    import importlib

    for name in sorted(Path(p).stem for p in glob.glob(str(ROOT / "stackpep" / "_fast" / "*.pyx"))):
        mod = importlib.import_module(f"stackpep._fast.{name}")
        assert mod.__file__.endswith((".so", ".pyd")), mod.__file__


def _readme_test_command():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    return [b for b in blocks if "pytest" in b][0].strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_test_command() in ci


@pytest.mark.timeout(900)
def test_binary_wheel_installs_and_imports_without_source_tree(tmp_path):
    # Build the wheel from the checkout (no build isolation: Cython and setuptools
    # come with the test extras), install it into a fresh venv, import it from a
    # directory where the source tree is not on sys.path.
    wheels = tmp_path / "wheels"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        capture_output=True, text=True, timeout=900,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    (whl,) = wheels.glob("stackpep-*.whl")
    assert re.search(r"-cp\d+-cp\d+-linux_\w+\.whl$", whl.name), whl.name  # a binary wheel
    names = zipfile.ZipFile(whl).namelist()
    for pyx in glob.glob(str(ROOT / "stackpep" / "_fast" / "*.pyx")):
        stem = Path(pyx).stem
        assert any(re.fullmatch(rf"stackpep/_fast/{stem}\..*\.so", n) for n in names), stem
        assert f"stackpep/_fast/{stem}.pyi" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Install by unpacking (a wheel is a zip laid out for site-packages; pip is not in the venv).
    zipfile.ZipFile(whl).extractall(site)
    probe = (
        "import stackpep, stackpep._fast.checksum as c; "
        "print(stackpep.__file__); print(c.__file__); print(c.internet_checksum(b'\\x45\\x00'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pkg_file, so_file, value = out.stdout.split()
    assert pkg_file.startswith(site) and so_file.startswith(site)
    assert not pkg_file.startswith(str(ROOT))
    assert int(value) == 0xBAFF
