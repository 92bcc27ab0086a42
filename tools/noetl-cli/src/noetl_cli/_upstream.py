"""The verbs NoETL users type with the upstream ``noetl`` CLI, on this CLI
(docs/compatibility.md): ``run REF -r distributed --set K=V``, ``register playbook|credential
--file|--directory``, ``list TYPE``, ``get credential NAME``. ``catalog list Playbook`` and
``execute status ID`` are parsed by the commands of the same name."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ._api import Api, CliError, WaitTimeout
from ._output import add_output, print_json

STATUS_EXIT = {"COMPLETED": 0, "FAILED": 3, "CANCELLED": 4}
EXIT_USAGE = 2
EXIT_TIMEOUT = 5
CATALOG_SCHEME = "catalog://"


def set_value(raw: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--set``: the value as JSON when it is JSON (``3``, ``true``,
    ``[1]``), else the text, as the upstream CLI reads it."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--set takes KEY=VALUE, got {raw!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{what} {path} is not valid JSON: {exc}") from None


def run_payload(args: argparse.Namespace) -> dict[str, Any]:
    """``--input`` file, then ``--payload``, then each ``--set``: later ones win."""
    payload: dict[str, Any] = {}
    if args.input:
        given = _json_file(Path(args.input), "--input file")
        if not isinstance(given, dict):
            raise CliError("the --input file must hold a JSON object")
        payload.update(given)
    if args.payload is not None:
        try:
            given = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise CliError(f"--payload is not valid JSON: {exc}") from None
        if not isinstance(given, dict):
            raise CliError("--payload must be a JSON object")
        payload.update(given)
    payload.update(set_value(raw) for raw in args.set)
    return payload


def _target(api: Api, ref: str, version: int | None) -> tuple[str, int | None]:
    """A playbook file (registered first), ``catalog://PATH[@VERSION]`` or a catalog path."""
    if ref.startswith(CATALOG_SCHEME):
        path, _, pinned = ref[len(CATALOG_SCHEME) :].partition("@")
        return path, int(pinned) if pinned.isdigit() else version
    if Path(ref).is_file():
        return str(api.register_file(Path(ref))["path"]), None
    return ref, version


def cmd_run(api: Api, args: argparse.Namespace) -> int:
    if args.runtime == "local":
        print(
            "error: this suite runs playbooks on its workers only: use -r distributed (or leave -r out)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    payload = run_payload(args)
    path, version = _target(api, args.ref, args.version)
    started = api.execute(path, payload=payload, version=version)
    if not args.wait:
        print_json(started)
        return 0
    try:
        final = api.wait(started["execution_id"], timeout=args.timeout)
    except WaitTimeout as exc:
        print_json(exc.last)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    print_json({k: final.get(k) for k in ("execution_id", "path", "version", "status", "result", "error")})
    return STATUS_EXIT.get(str(final.get("status")), 1)


def _files(args: argparse.Namespace, patterns: tuple[str, ...]) -> list[Path]:
    if args.file:
        return [Path(args.file)]
    folder = Path(args.directory)
    if not folder.is_dir():
        raise CliError(f"{folder} is not a directory")
    return sorted(f for pattern in patterns for f in folder.rglob(pattern))


def cmd_register_playbook(api: Api, args: argparse.Namespace) -> int:
    for file in _files(args, ("*.yaml", "*.yml")):
        reply = api.register_file(file)
        print(f"registered {reply.get('path')} version {reply.get('version')} ({file})")
    return 0


def cmd_register_credential(api: Api, args: argparse.Namespace) -> int:
    """Upstream's credential files: ``{name, type, data, description?}`` (``credential_type``
    is taken too)."""
    for file in _files(args, ("*.json",)):
        body = _json_file(file, "credential file")
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict) or not body.get("name"):
            raise CliError(f"{file}: a credential file holds {{name, type, data, description?}}")
        kind = str(body.get("type") or body.get("credential_type") or "generic")
        api.put_credential(
            body["name"], kind, body["data"], body.get("description"), body.get("allowed_paths")
        )
        print(f"registered credential {body['name']} ({file})")
    return 0


def add_upstream_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``run`` and ``register``; ``list`` and ``get`` are added with the commands they reuse."""
    run = sub.add_parser(
        "run", help="upstream's verb: run a playbook (a file, catalog://PATH@V or a catalog path)"
    )
    run.add_argument("ref", metavar="REF")
    run.add_argument(
        "-r",
        "--runtime",
        choices=("auto", "distributed", "local"),
        default="auto",
        help="distributed (auto means the same here; local is refused: playbooks run on the workers)",
    )
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a workload value (repeat)"
    )
    run.add_argument("--payload", help="workload values as a JSON object")
    run.add_argument("-i", "--input", help="a JSON file of workload values")
    run.add_argument("-V", "--version", type=int, help="catalog version (default: latest)")
    run.add_argument(
        "--wait", action="store_true", help="wait until the execution ends; exit with its status"
    )
    run.add_argument("--timeout", type=float, default=120.0, help="seconds to --wait (default 120)")
    run.set_defaults(func=cmd_run)

    register = sub.add_parser(
        "register", help="upstream's verb: register playbooks or credentials from files"
    )
    register_sub = register.add_subparsers(dest="register_command", required=True)
    for name, func, what in (
        ("playbook", cmd_register_playbook, "playbook YAML"),
        ("credential", cmd_register_credential, "credential JSON ({name, type, data})"),
    ):
        parser = register_sub.add_parser(name, help=f"register {what} files")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("-f", "--file", help=f"one {what} file")
        source.add_argument("-d", "--directory", help=f"every {what} file under this folder")
        parser.set_defaults(func=func)


def add_list_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    list_catalog: Any,
    show_credential: Any,
) -> None:
    """Upstream's ``list TYPE`` and ``get credential NAME``, onto the commands that do the same."""
    listing = sub.add_parser("list", help="upstream's verb: list Playbook (or Credential) resources")
    listing.add_argument("resource_type", metavar="TYPE", nargs="?", default="Playbook")
    add_output(listing)
    listing.set_defaults(func=list_catalog)
    get = sub.add_parser("get", help="upstream's verb: get credential NAME (values redacted)")
    get_sub = get.add_subparsers(dest="get_command", required=True)
    credential = get_sub.add_parser("credential", help="one credential, its values redacted")
    credential.add_argument("name", metavar="NAME")
    credential.add_argument("--include-data", action="store_true", help="accepted; data is never shown")
    add_output(credential, default="json")
    credential.set_defaults(func=show_credential)
