"""How read commands print: ``-o json`` or ``-o table`` on every one (``--json`` / ``-j`` is
``-o json``), and a quiet end when the reader of stdout goes away (``| head``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: what a process killed by SIGPIPE exits with in a shell (128 + 13), as ``head``'s writers do
EXIT_BROKEN_PIPE = 141


def add_output(parser: argparse.ArgumentParser, default: str = "table") -> None:
    """``-o/--output json|table`` (default ``default``), and ``--json``/``-j`` for ``-o json``."""
    parser.add_argument(
        "-o",
        "--output",
        choices=("json", "table"),
        default=default,
        help=f"output format (default {default})",
    )
    parser.add_argument(
        "-j", "--json", dest="output", action="store_const", const="json", help="same as -o json"
    )


def wants_json(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "table") == "json"


def print_json(value: Any, *, compact: bool = False) -> None:
    text = json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=2)
    print(text)


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())


def cell(value: Any) -> str:
    """One table cell: text as is, nothing as ``-``, anything else as compact JSON."""
    if value is None or value == "":
        return "-"
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def print_fields(value: dict[str, Any]) -> None:
    """One object as a two-column table: ``FIELD  VALUE``."""
    print_table([[key, cell(item)] for key, item in value.items()], ["FIELD", "VALUE"])


def show(args: argparse.Namespace, value: Any, header: list[str], rows: list[list[str]]) -> None:
    """``value`` as JSON, or ``rows`` under ``header``."""
    if wants_json(args):
        print_json(value)
    else:
        print_table(rows, header)


def quiet_broken_pipe() -> int:
    """stdout's reader left: point stdout at /dev/null so the interpreter's last flush cannot
    raise again, and end like a writer killed by SIGPIPE, without a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE
