"""`python -m stackpep._fast`: which build of stackpep runs here.

Prints the package's folder and the file of each compiled module; exit status 1
if one does not import (a source tree without `pip install .`, a broken build).
"""
import importlib
import sys

import stackpep

COMPILED = ("checksum", "wire", "tcp", "capture", "scpshc", "syncookie", "waitset")  # stackpep/_fast/*.pyx


def main() -> int:
    print(f"stackpep {stackpep.__version__} in {stackpep.__path__[0]}")
    missing = 0
    for name in COMPILED:
        try:
            mod = importlib.import_module(f"stackpep._fast.{name}")
        except ImportError as exc:
            print(f"{name}: MISSING ({type(exc).__name__}: {exc})")
            missing += 1
        else:
            print(f"{name}: {mod.__file__}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
