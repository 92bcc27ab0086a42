"""``noetl completion bash|zsh|tcsh``: the shell completion script, generated from the parser
itself (shtab), so every verb and option added later completes without a second list."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import shtab

SHELLS = ("bash", "zsh", "tcsh")


def add_completion_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    root: Callable[[], argparse.ArgumentParser],
) -> None:
    """Add ``completion SHELL``; ``root`` builds the whole parser the script describes."""
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script: eval \"$(noetl completion bash)\" (or zsh, tcsh)",
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or tcsh")
    completion.set_defaults(func=lambda args: _print_script(root(), args.shell), offline=True)


def _print_script(parser: argparse.ArgumentParser, shell: str) -> int:
    print(shtab.complete(parser, shell=shell))
    return 0
