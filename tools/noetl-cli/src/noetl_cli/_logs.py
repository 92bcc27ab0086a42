"""``noetl logs ID [--step S] [--follow]``: what an execution's python steps printed and logged.

Pages through ``GET /api/executions/{id}/logs`` with ``after`` = the last ``seq`` seen. With
``--follow`` it then long-polls ``GET /api/executions/{id}?wait=`` between reads (the server
answers at once when the execution ends) and reads once more after it ended: a step's lines
are written with its outcome, so the last read has them all. It exits then with the
execution's status code (0 COMPLETED, 3 FAILED, 4 CANCELLED).
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from typing import Any

from ._api import TERMINAL, Api
from ._output import add_output, print_table, wants_json

#: How long one wait for the execution to end lasts between reads while following: the
#: longest a finished step's lines take to show.
FOLLOW_WAIT_SECONDS = 1.0
PAGE = 1000
HEADER = ["SEQ", "AT", "STEP", "STREAM", "TEXT"]
STATUS_EXIT = {"COMPLETED": 0, "FAILED": 3, "CANCELLED": 4}


def _printable(text: str) -> str:
    """Control characters (a terminal escape sequence a task printed) shown, not obeyed."""
    return "".join(
        c if c == "\t" or unicodedata.category(c) != "Cc" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def table_row(item: dict[str, Any]) -> list[str]:
    stream = str(item.get("stream"))
    if item.get("level"):
        stream = f"{stream}:{item['level']}"
    return [str(item.get("seq")), str(item.get("at")), str(item.get("step")), stream, _printable(str(item.get("text")))]


class _Printer:
    """Lines as they come: JSON Lines, or a table whose header is printed once."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.header_done = False
        self.truncated = False

    def page(self, reply: dict[str, Any]) -> None:
        self.truncated = self.truncated or bool(reply.get("truncated"))
        items = reply.get("items") or []
        if self.as_json:
            for item in items:
                print(json.dumps(item, separators=(",", ":")))
        elif items:
            rows = [table_row(item) for item in items]
            if not self.header_done:
                print_table(rows, HEADER)
                self.header_done = True
            else:
                for row in rows:
                    print("  ".join(row))
        sys.stdout.flush()


def _read_all(api: Api, args: argparse.Namespace, after: int, printer: _Printer) -> int:
    """Print every line after ``after`` that exists now; the last ``seq`` printed."""
    while True:
        params: dict[str, Any] = {"after": after, "limit": PAGE}
        if args.step:
            params["step"] = args.step
        reply = api.request("GET", f"/api/executions/{args.execution_id}/logs", params=params)
        printer.page(reply)
        items = reply.get("items") or []
        if items:
            after = int(items[-1]["seq"])
        if reply.get("next_after") is None:
            return after


def cmd_logs(api: Api, args: argparse.Namespace) -> int:
    printer = _Printer(wants_json(args))
    after = _read_all(api, args, 0, printer)
    code = 0
    if args.follow:
        while True:
            execution = api.execution(args.execution_id, wait=FOLLOW_WAIT_SECONDS)
            status = str(execution.get("status"))
            after = _read_all(api, args, after, printer)
            if status in TERMINAL:
                code = STATUS_EXIT.get(status, 1)
                break
    if printer.truncated and not printer.as_json:
        print("note: some step's output was cut at the worker's bound (WORKER_STEP_LOG_MAX_BYTES)", file=sys.stderr)
    return code


def add_logs_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``logs``."""
    logs = sub.add_parser("logs", help="what an execution's python steps printed and logged")
    logs.add_argument("execution_id", metavar="ID")
    logs.add_argument("--step", metavar="S", help="only this step's lines")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep reading until the execution ends, then exit with its status (0, 3 FAILED, 4 CANCELLED)",
    )
    add_output(logs)  # -o json: one JSON object per line
    logs.set_defaults(func=cmd_logs)
