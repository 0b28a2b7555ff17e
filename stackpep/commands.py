"""The sub-command registry of the `stackpep` command.

Each layer's cli module (stackpep.pep.cli, stackpep.testbed.cli) registers its
sub-commands here with ``@command(name)``: a function that adds its arguments
to an argparse sub-parser and sets the handler.  stackpep.cli imports those
modules and builds the parser from ``COMMANDS``; this module imports nothing of
stackpep, so no layer has to import the top-level command (no import cycle).
"""
from __future__ import annotations

import argparse
from typing import Callable, Dict

__all__ = ["COMMANDS", "Handler", "command"]

Handler = Callable[[argparse.Namespace], int]
COMMANDS: Dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register
