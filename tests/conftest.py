"""Suite-wide set-up.

Tests run against the *installed* stackpep (in CI a wheel built into .venv) while
pytest's working directory is the source tree, whose `stackpep/` has no compiled
modules.  The processes stackpep itself starts do not depend on that
(topology.python_command / python_env / netns.neutral_cwd; tests/test_testbed_children.py
and tests/test_testbed_demo.py prove it with PYTHONSAFEPATH removed).  The tests' own
helper snippets (`python -c ...` started with subprocess directly) would still import
the source tree from here, so PYTHONSAFEPATH (Python >= 3.11) stays on for them.
"""
import os

os.environ["PYTHONSAFEPATH"] = "1"
