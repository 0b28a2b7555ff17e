"""The compiled fast path (Cython): checksum, wire, tcp, capture.

A source checkout that was installed with `pip install .` (not built in place)
holds no compiled modules in this folder, and `python -m ...` / `python -c ...`
run from the checkout's root import the checkout first (sys.path[0] is the
working directory).  Rather than fail there with "No module named
stackpep._fast.tcp", this package then also looks in the first *other*
stackpep/_fast on sys.path that holds compiled modules (the installed build)
and loads them from there.  `python -m stackpep._fast` says which files run.
"""
import os as _os
import sys as _sys
from importlib.machinery import EXTENSION_SUFFIXES as _SUFFIXES


def _has_compiled(folder: str) -> bool:
    try:
        names = _os.listdir(folder)
    except OSError:
        return False
    return any(n.startswith("tcp.") and n.endswith(tuple(_SUFFIXES)) for n in names)


def _installed_fallback() -> None:
    here = _os.path.dirname(_os.path.abspath(__file__))
    if _has_compiled(here):
        return
    for entry in _sys.path:
        folder = _os.path.join(_os.path.abspath(entry or _os.curdir), "stackpep", "_fast")
        if folder != here and _has_compiled(folder):
            __path__.append(folder)  # noqa: F821 (the package's own __path__)
            return


_installed_fallback()
