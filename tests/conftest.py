"""Suite-wide set-up.

Tests run against the *installed* stackpep (in CI a wheel built into .venv) while
pytest's working directory is the source tree, whose `stackpep/` has no compiled
modules.  `python -m ...` and `python -c ...` put the working directory first on
sys.path, so every helper process a test starts would import the source tree
instead.  PYTHONSAFEPATH (Python >= 3.11) stops that for all of them.
"""
import os

os.environ["PYTHONSAFEPATH"] = "1"
