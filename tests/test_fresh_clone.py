"""The README's main command, as a new user runs it (issue 8 §1): a clean clone of
this repository's HEAD in a temporary folder, no in-place build, a fresh venv,
`pip install '.[plots]'` and `stackpep demo` from the clone's root.  Fails if the
demo exits non-zero or any cell of its results is an error.  Slow (~4 min plus
the build); `pytest -m slow tests/test_fresh_clone.py`.

The README's `scripts/install-system-deps.sh` step (apt-get, network) runs only
with STACKPEP_TEST_SYSTEM_DEPS=1: the system packages are the suite's own
precondition, and CI's README test command has just run that script.
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEM_DEPS = "scripts/install-system-deps.sh"

pytestmark = [pytest.mark.slow, pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not (REPO / ".git").exists() or shutil.which("git") is None,
                                 reason="not a git checkout: nothing to clone")]


def readme_main_command() -> str:
    """The README's first ```sh block: the main command."""
    blocks = re.findall(r"```sh\n(.*?)\n```", (REPO / "README.md").read_text(), re.S)
    return blocks[0].strip()


def test_readme_main_command_from_a_fresh_clone(tmp_path):
    command = readme_main_command()
    steps = [s.strip() for s in command.split("&&")]
    assert steps[0] == SYSTEM_DEPS and steps[-1] == ".venv/bin/stackpep demo", command
    if os.environ.get("STACKPEP_TEST_SYSTEM_DEPS") != "1":
        steps = steps[1:]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    assert not list((clone / "stackpep" / "_fast").glob("*.so"))  # no in-place build
    out = tmp_path / "demo"
    steps[-1] += f" --out {out}"  # only to find the results; the default is a fresh /tmp folder
    # as from a login shell: nothing from this test's interpreter or venv
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONSAFEPATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    venv_bin = str(Path(os.environ.get("VIRTUAL_ENV", "/nonexistent")) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    res = subprocess.run(["bash", "-c", " && ".join(steps)], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=1800)
    report = f"$ {' && '.join(steps)}\nexit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.returncode == 0, report
    assert f"results: {out / 'results.json'}" in res.stdout, report
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [c["configuration"] for c in cells] == ["e2e-cubic", "e2e-bbr", "stackpep-one-box",
                                                   "stackpep-two-boxes", "stackpep-two-boxes-0rtt"], report
    for c in cells:
        assert c["available"] or c["configuration"] == "e2e-bbr", (c, report)
        assert c["error"] is None, (c, report)
        assert [r["workload"] for r in c["results"]] == (["fetch-100KB", "bulk-download"] if c["available"] else []), \
            (c, report)
        assert not [r for r in c["results"] if r.get("error")], (c, report)
