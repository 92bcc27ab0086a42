"""``noetl``: register playbooks, run them and read their state and events.

Exit codes: 0 success; 1 API error or unreachable server (one line on stderr; ``dlq``: NATS
unreachable or a message not replayed);
2 usage error; 3 the execution FAILED; 4 it was CANCELLED; 5 ``--wait``/``--watch`` timed
out; 6 ``replay`` found the replayed state different from the stored one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ._api import DEFAULT_SERVER, Api, CliError, WaitTimeout
from ._auth_commands import add_auth_commands
from ._completion import add_completion_command
from ._credentials import token_for
from ._dlq import add_dlq_commands
from ._executions import add_execution_commands
from ._logs import add_logs_commands
from ._output import add_output, print_fields, quiet_broken_pipe, show, wants_json
from ._output import print_json as _print_json
from ._output import print_table as _table
from ._rerun import add_rerun_commands
from ._upstream import add_list_commands, add_upstream_commands
from ._watch import watch

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_CANCELLED = 4
EXIT_TIMEOUT = 5
EXIT_REPLAY_DIFFERS = 6
STATUS_EXIT = {"COMPLETED": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}


def _summary(execution: dict[str, Any]) -> dict[str, Any]:
    keys = ("execution_id", "path", "version", "status", "result", "error")
    return {key: execution.get(key) for key in keys}


def _payload(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as exc:
            raise CliError(f"cannot read payload file {raw[1:]}: {exc.strerror or exc}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"--payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("--payload must be a JSON object")
    return value


# -- commands ----------------------------------------------------------------------------------
def cmd_register(api: Api, args: argparse.Namespace) -> int:
    for name in args.files:
        path = Path(name)
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        for file in files:
            reply = api.register_file(file)
            print(f"registered {reply.get('path')} version {reply.get('version')} ({file})")
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace) -> int:
    """The catalog; upstream's ``TYPE`` argument: ``Playbook`` (the default), ``Credential``
    (the credential list), any other kind is not stored here (nothing listed)."""
    kind = str(getattr(args, "resource_type", None) or "playbook").lower()
    if kind == "credential":
        return cmd_credential_list(api, args)
    entries = api.catalog() if kind == "playbook" else []
    rows = [[str(e.get("path")), str(e.get("version")), str(e.get("name"))] for e in entries]
    show(args, entries, ["PATH", "VERSION", "NAME"], rows)
    return EXIT_OK


def cmd_execute(api: Api, args: argparse.Namespace) -> int:
    if args.extra is not None and args.path in ("status", "playbook"):
        # upstream's `execute status ID` and `execute playbook PATH`
        if args.path == "status":
            args.execution_id, args.output = args.extra, "json"
            return cmd_status(api, args)
        args.path = args.extra
    elif args.extra is not None:
        raise CliError(f"unexpected argument {args.extra!r} after PATH")
    payload = _payload(args.payload)
    target = args.path
    if Path(target).is_file():
        # A playbook file: register it (idempotent for unchanged content) and run that path.
        registered = api.register_file(Path(target))
        target = str(registered["path"])
    started = api.execute(target, payload=payload, version=args.version)
    if args.watch:
        try:
            final = watch(
                api, started["execution_id"], sys.stdout, live=sys.stdout.isatty(), timeout=args.timeout
            )
        except TimeoutError:
            print(
                f"error: execution {started['execution_id']} still running after {args.timeout:g}s",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        return STATUS_EXIT.get(str(final.get("status")), EXIT_ERROR)
    if not args.wait:
        _print_json(started)
        return EXIT_OK
    try:
        final = api.wait(started["execution_id"], timeout=args.timeout)
    except WaitTimeout as exc:
        _print_json(_summary(exc.last))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    _print_json(_summary(final))
    return STATUS_EXIT.get(str(final.get("status")), EXIT_ERROR)


def cmd_status(api: Api, args: argparse.Namespace) -> int:
    execution = api.execution(args.execution_id)
    if wants_json(args):
        _print_json(execution)
    else:
        print_fields(execution)
    return EXIT_OK


def cmd_events(api: Api, args: argparse.Namespace) -> int:
    events = api.events(args.execution_id)
    if wants_json(args):
        for event in events:
            _print_json(event, compact=True)
        return EXIT_OK
    rows = [
        [
            str(e.get("event_id")),
            str(e.get("created_at") or ""),
            str(e.get("event_type")),
            str(e.get("step") or ""),
            str(e.get("status") or ""),
        ]
        for e in events
    ]
    _table(rows, ["EVENT_ID", "CREATED_AT", "TYPE", "STEP", "STATUS"])
    return EXIT_OK


def cmd_replay(api: Api, args: argparse.Namespace) -> int:
    """Rebuild the state from the event log on the server; exit 0 when it equals the stored state."""
    report = api.request("GET", f"/api/executions/{args.execution_id}/replay")
    if wants_json(args):
        _print_json(report)
    else:
        print(
            f"execution {report['execution_id']} ({report['stored_status']}): {report['events']} events,"
            f" {report['outcomes']} outcomes replayed"
        )
        if not report["log_complete"]:
            print("note: the event log does not reach the stored state yet (projection lag); retry shortly")
        if report["matches"]:
            print("replayed state == stored state")
        for name, diff in report["differences"].items():
            print(f"differs: {name}\n  stored:   {json.dumps(diff['stored'])[:2000]}")
            print(f"  replayed: {json.dumps(diff['replayed'])[:2000]}")
    return EXIT_OK if report["matches"] else EXIT_REPLAY_DIFFERS


def cmd_cancel(api: Api, args: argparse.Namespace) -> int:
    """Running children are always cancelled with their parent (``--cascade`` is upstream's word)."""
    reply = api.cancel(args.execution_id, args.reason)
    _print_json({**_summary(reply), "cancelled_executions": reply.get("cancelled_executions", [])})
    return EXIT_OK


def cmd_plugin_publish(api: Api, args: argparse.Namespace) -> int:
    try:
        module = Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    reply = api.publish_plugin(args.path, module, args.version)
    state = "published" if reply.get("changed") else "unchanged"
    print(f"{state} {reply.get('path')} version {reply.get('version')} digest {reply.get('digest')}")
    return EXIT_OK


def cmd_plugin_list(api: Api, args: argparse.Namespace) -> int:
    plugins = api.plugins(args.path)
    rows = [
        [str(p.get("path")), str(p.get("version")), str(p.get("size")), str(p.get("digest"))[:16]]
        for p in plugins
    ]
    show(args, plugins, ["PATH", "VERSION", "BYTES", "DIGEST"], rows)
    return EXIT_OK


def _json_object(raw: str, what: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@file.json``."""
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as exc:
            raise CliError(f"cannot read {what} file {raw[1:]}: {exc.strerror or exc}") from None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object")
    return value


def cmd_credential_add(api: Api, args: argparse.Namespace) -> int:
    data = _json_object(args.data, "--data")
    _print_json(api.put_credential(args.name, args.type, data, args.description, args.allowed_paths))
    return EXIT_OK


def cmd_credential_list(api: Api, args: argparse.Namespace) -> int:
    found = api.credentials()
    rows = [[str(c.get("name")), str(c.get("credential_type")), str(c.get("updated_at"))] for c in found]
    show(args, found, ["NAME", "TYPE", "UPDATED_AT"], rows)
    return EXIT_OK


def cmd_credential_show(api: Api, args: argparse.Namespace) -> int:
    credential = api.credential(args.name)
    if wants_json(args):
        _print_json(credential)
    else:
        print_fields(credential)
    return EXIT_OK


def cmd_credential_delete(api: Api, args: argparse.Namespace) -> int:
    api.delete_credential(args.name)
    print(f"deleted {args.name}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="noetl", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"noetl {_version()}")
    parser.add_argument(
        "--server",
        default=os.environ.get("NOETL_SERVER_URL") or DEFAULT_SERVER,
        help=f"control-api base URL (env NOETL_SERVER_URL, default {DEFAULT_SERVER})",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="register and list playbooks")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    register = catalog_sub.add_parser(
        "register", help="register playbook files (or every *.yaml in a folder)"
    )
    register.add_argument("files", nargs="+", metavar="FILE")
    register.set_defaults(func=cmd_register)
    listing = catalog_sub.add_parser("list", help="latest version of every registered playbook")
    listing.add_argument("resource_type", metavar="TYPE", nargs="?", help="upstream's kind: Playbook (default)")
    add_output(listing)
    listing.set_defaults(func=cmd_list)

    execute = sub.add_parser("execute", help="run a playbook by catalog path (or a playbook file)")
    execute.add_argument("path", metavar="PATH")
    execute.add_argument("extra", nargs="?", metavar="ID", help=argparse.SUPPRESS)
    execute.add_argument("--payload", help="workload overrides: a JSON object, or @file.json")
    execute.add_argument("--version", type=int, help="catalog version (default: latest)")
    execute.add_argument("--wait", action="store_true", help="wait until the execution ends")
    execute.add_argument(
        "--watch",
        action="store_true",
        help="show steps as they start and finish (live on a terminal, plain lines otherwise); exit with the status",
    )
    execute.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to --wait/--watch (default 120)"
    )
    execute.set_defaults(func=cmd_execute)

    status = sub.add_parser("status", help="an execution's status, result and step results")
    status.add_argument("execution_id", metavar="ID")
    add_output(status, default="json")
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", help="an execution's recorded events")
    events.add_argument("execution_id", metavar="ID")
    add_output(events)  # -o json: one JSON object per line
    events.set_defaults(func=cmd_events)

    replay = sub.add_parser("replay", help="rebuild an execution's state from its events and compare")
    replay.add_argument("execution_id", metavar="ID")
    add_output(replay)
    replay.set_defaults(func=cmd_replay)

    cancel = sub.add_parser("cancel", help="cancel a running execution")
    cancel.add_argument("execution_id", metavar="ID")
    cancel.add_argument("-r", "--reason", help="why (recorded in the cancel event)")
    cancel.add_argument("--cascade", action="store_true", help="accepted: running children are always cancelled")
    cancel.add_argument("-j", "--json", action="store_true", help="accepted: the reply is JSON")
    cancel.set_defaults(func=cmd_cancel)

    plugin = sub.add_parser("plugin", help="WASM plug-in registry (publishing needs an admin token)")
    plugin_sub = plugin.add_subparsers(dest="plugin_command", required=True)
    publish = plugin_sub.add_parser("publish", help="publish a .wasm module as PATH (re-publish replaces)")
    publish.add_argument("path", metavar="PATH")
    publish.add_argument("file", metavar="FILE")
    publish.add_argument("--version", type=int, help="version to publish (default: the next one)")
    publish.set_defaults(func=cmd_plugin_publish)
    plugins = plugin_sub.add_parser("list", help="published plug-in versions")
    plugins.add_argument("--path", help="only this plug-in path")
    add_output(plugins)
    plugins.set_defaults(func=cmd_plugin_list)

    credential = sub.add_parser("credential", help="credentials for auth: (values are never shown)")
    credential_sub = credential.add_subparsers(dest="credential_command", required=True)
    add = credential_sub.add_parser("add", help="create or replace a credential")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--type", default="generic", help="credential_type, e.g. postgres, bearer (default generic)"
    )
    add.add_argument("--data", required=True, help="the secret data: a JSON object, or @file.json")
    add.add_argument("--description", help="free text")
    add.add_argument(
        "--allowed-path",
        action="append",
        dest="allowed_paths",
        metavar="PREFIX",
        help="a playbook path prefix that may use it (repeat; '*' = all; default: every path outside system/)",
    )
    add.set_defaults(func=cmd_credential_add)
    credentials = credential_sub.add_parser("list", help="names and types")
    add_output(credentials)
    credentials.set_defaults(func=cmd_credential_list)
    show = credential_sub.add_parser("show", help="one credential, its values redacted")
    show.add_argument("name", metavar="NAME")
    add_output(show, default="json")
    show.set_defaults(func=cmd_credential_show)
    remove = credential_sub.add_parser("delete", help="delete a credential")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=cmd_credential_delete)
    add_auth_commands(sub)
    add_dlq_commands(sub)
    add_execution_commands(sub)
    add_logs_commands(sub)
    add_rerun_commands(sub)
    add_upstream_commands(sub)
    add_list_commands(sub, cmd_list, cmd_credential_show)
    add_completion_command(sub, build_parser)
    return parser


def _version() -> str:
    try:
        return version("noetl-cli")
    except PackageNotFoundError:
        return "0.0.0"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "offline", False):  # no server at all (noetl completion)
            offline_code: int = args.func(args)
            return offline_code
        if getattr(args, "nats", False):  # straight on NATS, no control-api call (noetl dlq)
            nats_code: int = args.func(args)
            return nats_code
        with Api(args.server, token=token_for(args.server)) as api:
            code: int = args.func(api, args)
            return code
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `noetl ... | head`: the reader has gone, nothing left to say
        return quiet_broken_pipe()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
