"""The `stackpep` command.

Each sub-command registers itself in COMMANDS with a function that adds its
arguments to an argparse sub-parser and returns the handler.  Handlers return the
process exit code.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict

from stackpep import __version__

Handler = Callable[[argparse.Namespace], int]
COMMANDS: Dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def _load_plugins() -> None:
    # Sub-commands living in other layers register themselves on import.
    import stackpep.pep.cli  # noqa: F401  (run, cleanup, check-config)
    import stackpep.testbed.cli  # noqa: F401  (testbed, demo)


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(
        prog="stackpep",
        description="Transparent split-connection TCP Performance Enhancing Proxy "
        "for satellite and other long-delay, lossy links.",
    )
    parser.add_argument("--version", action="version", version=f"stackpep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(COMMANDS):
        COMMANDS[name](sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
