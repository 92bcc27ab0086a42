"""``noetl executions list``: executions newest first, filtered, one page at a time."""

from __future__ import annotations

import argparse
import sys

from ._api import Api
from ._output import add_output, cell, show


def cmd_executions_list(api: Api, args: argparse.Namespace) -> int:
    reply = api.executions_page(
        limit=args.limit,
        status=args.status,
        path=args.path,
        parent_execution_id=args.parent,
        since=args.since,
        until=args.until,
        before=args.before,
        offset=args.offset or None,
    )
    executions = reply.get("executions", [])
    rows = [
        [
            str(e.get("execution_id")),
            str(e.get("status")),
            str(e.get("path")),
            str(e.get("version")),
            cell(e.get("created_at")),
            cell(e.get("parent_execution_id")),
        ]
        for e in executions
    ]
    show(args, reply, ["EXECUTION_ID", "STATUS", "PATH", "VERSION", "CREATED_AT", "PARENT"], rows)
    cursor = reply.get("next_cursor")
    if cursor is not None and not args.output == "json":
        print(f"more: --before {cursor}", file=sys.stderr)
    return 0


def add_execution_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``executions list``."""
    executions = sub.add_parser("executions", help="list executions")
    executions_sub = executions.add_subparsers(dest="executions_command", required=True)
    listing = executions_sub.add_parser(
        "list", help="executions newest first; page on with --before (the cursor printed) or --offset"
    )
    listing.add_argument("--status", choices=("RUNNING", "COMPLETED", "FAILED", "CANCELLED"), type=str.upper)
    listing.add_argument("--path", help="only this catalog path")
    listing.add_argument("--parent", metavar="ID", help="only children of this execution")
    listing.add_argument("--since", metavar="TIME", help="created at or after (ISO 8601; no zone = UTC)")
    listing.add_argument("--until", metavar="TIME", help="created before (ISO 8601; no zone = UTC)")
    listing.add_argument("--limit", type=int, default=50, help="rows of one page (1..1000, default 50)")
    listing.add_argument("--before", metavar="CURSOR", help="the next_cursor of the previous page")
    listing.add_argument("--offset", type=int, default=0, help="rows to skip (at most 100000)")
    add_output(listing)
    listing.set_defaults(func=cmd_executions_list)
