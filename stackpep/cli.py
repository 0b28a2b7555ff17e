"""The `stackpep` command.

Each layer registers its sub-commands in stackpep.commands.COMMANDS (a function
that adds its arguments to an argparse sub-parser and sets the handler); this
module imports the layers' cli modules and builds the parser.  Handlers return
the process exit code.
"""
from __future__ import annotations

import argparse
import sys

from stackpep import __version__
from stackpep.commands import COMMANDS, Handler, command  # noqa: F401  (re-exported)


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
