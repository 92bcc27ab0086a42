"""``noetl rerun ID [--from STEP] [--dry-run] [--failed-only]``: run an ended execution again,
from the start or from a step (the steps before it keep their recorded outcomes)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._api import Api, CliError, WaitTimeout
from ._output import add_output, print_json, wants_json
from ._upstream import set_value

STATUS_EXIT = {"COMPLETED": 0, "FAILED": 3, "CANCELLED": 4}
EXIT_USAGE = 2
EXIT_TIMEOUT = 5


def _overlay(args: argparse.Namespace) -> dict[str, Any]:
    """``--payload`` (a JSON object), then each ``--set KEY=VALUE``: laid over the first workload."""
    overlay: dict[str, Any] = {}
    if args.payload is not None:
        try:
            given = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise CliError(f"--payload is not valid JSON: {exc}") from None
        if not isinstance(given, dict):
            raise CliError("--payload must be a JSON object")
        overlay.update(given)
    overlay.update(set_value(raw) for raw in args.set)
    return overlay


def _print_plan(reply: dict[str, Any]) -> None:
    print(f"rerun of {reply.get('rerun_of')} from step {reply.get('from_step')}")
    print(f"reused: {', '.join(reply.get('reused') or []) or '-'}")
    print(f"rerun:  {', '.join(reply.get('rerun') or []) or '-'}")
    if reply.get("execution_id"):
        print(f"execution_id: {reply['execution_id']}")


def cmd_rerun(api: Api, args: argparse.Namespace) -> int:
    if args.step is None and (args.dry_run or args.failed_only):
        print("error: --dry-run and --failed-only need --from STEP", file=sys.stderr)
        return EXIT_USAGE
    body: dict[str, Any] = {"workload": _overlay(args)}
    if args.step is not None:
        body.update(from_step=args.step, dry_run=args.dry_run, failed_iterations_only=args.failed_only)
    reply: dict[str, Any] = api.request("POST", f"/api/executions/{args.execution_id}/rerun", body)
    if args.wait and not args.dry_run:
        try:
            final = api.wait(reply["execution_id"], timeout=args.timeout)
        except WaitTimeout as exc:
            print_json(exc.last)
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_TIMEOUT
        keys = ("execution_id", "path", "version", "status", "result", "error", "rerun_of")
        print_json({**reply, **{k: final.get(k) for k in keys}})
        return STATUS_EXIT.get(str(final.get("status")), 1)
    if wants_json(args) or args.step is None:
        print_json(reply)
    else:
        _print_plan(reply)
    return 0


def add_rerun_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rerun``."""
    rerun = sub.add_parser(
        "rerun",
        help="run an ended execution again: from the start, or --from a step reusing the steps before it",
    )
    rerun.add_argument("execution_id", metavar="ID")
    rerun.add_argument("--from", dest="step", metavar="STEP", help="restart from this step")
    rerun.add_argument(
        "--dry-run", action="store_true", help="only list the steps reused and the steps run again"
    )
    rerun.add_argument(
        "--failed-only",
        action="store_true",
        help="the --from step is a loop: run only its iterations that did not complete",
    )
    rerun.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a workload value (repeat)"
    )
    rerun.add_argument("--payload", help="workload values as a JSON object, laid over the first run's")
    rerun.add_argument(
        "--wait", action="store_true", help="wait until the new execution ends; exit with its status"
    )
    rerun.add_argument("--timeout", type=float, default=120.0, help="seconds to --wait (default 120)")
    add_output(rerun)
    rerun.set_defaults(func=cmd_rerun)
