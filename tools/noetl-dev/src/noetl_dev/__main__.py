"""``noetl-dev up|down|status|logs|kill|restart``: the whole suite on this machine, no Docker needed.

``up`` starts Postgres, nats-server, control-api, outbox-publisher, projector and two
workers (pools ``shared`` and ``system``) detached under the state dir (default
``.state/`` at the repository root), registers the playbooks in ``examples/``, runs
``examples/hello`` and prints where everything answers. ``up --cluster`` runs three
JetStream servers, two control-api replicas and two projector shards instead. ``down``
stops all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from noetl_cli import Api, CliError, store_token

from ._cluster import CLUSTER, SINGLE
from ._recorded import kill_recorded, read_state, recorded_processes, restart_recorded, running, stop_recorded
from ._services import DEFAULT_API_PORT, StackError
from ._stack import Stack


def repo_root(start: Path | None = None) -> Path:
    """The workspace root (the folder holding uv.lock), else the current directory."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "uv.lock").exists() and (folder / "pyproject.toml").exists():
            return folder
    return here


def default_state_dir() -> Path:
    configured = os.environ.get("NOETL_DEV_STATE_DIR")
    return Path(configured) if configured else repo_root() / ".state"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind: a port held only by TIME_WAIT connections is free to listen on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _all_running(state: dict[str, Any]) -> bool:
    entries = list(recorded_processes(state))
    return bool(entries) and all(running(entry) for _, entry in entries)


def _without_login(urls: str) -> str:
    """``urls`` (one, or a comma-separated list) with each password replaced by ``***``:
    terminals get copied into tickets."""
    return ",".join(_one_without_login(url) for url in urls.split(","))


def _one_without_login(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def _print_urls(state: dict[str, Any]) -> None:
    procs = state["processes"]
    print(f"control-api      {state['api_url']}   (OpenAPI: {state['api_url']}/schema)")
    print(f"run inspector    {state['api_url']}/ui   (sign in with a token: noetl token create)")
    for url in state.get("api_urls", [])[1:]:
        print(f"                 {url}   (replica)")
    for name, entry in procs.items():
        if name.startswith(("outbox-publisher", "projector", "worker-")):
            print(f"{name:<16} {entry['url']}/metrics  /readyz")
    print(f"nats             {_without_login(state['nats_url'])}")
    if state.get("database_url"):
        print(f"postgres         {_without_login(state['database_url'])}   (login in stack.json)")
    print(f"logs             {Path(state['state_dir']) / 'logs'}   (noetl-dev logs)")
    print(f"state            {Path(state['state_dir']) / 'stack.json'}")


def _run_examples(api_url: str, token: str, examples: Path, timeout: float) -> int:
    """Register every playbook under ``examples``, run examples/hello, print the outcome."""
    with Api(api_url, token=token) as api:
        for file in sorted(examples.glob("*.yaml")):
            reply = api.register_file(file)
            print(f"registered {reply.get('path')} v{reply.get('version')}")
        if not (examples / "hello.yaml").exists():
            return 0
        started = api.execute("examples/hello")
        final = api.wait(started["execution_id"], timeout=timeout)
    print(f"examples/hello: execution {final.get('execution_id')} {final.get('status')}")
    print(f"  result: {json.dumps(final.get('result'))}")
    if final.get("error"):
        print(f"  error: {final.get('error')}")
    return 0 if final.get("status") == "COMPLETED" else 1


def cmd_up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    state = read_state(state_dir)
    if state is not None:
        if _all_running(state):
            if ("nats-1" in state["processes"]) != args.cluster:
                running_now = "single-node" if args.cluster else "clustered"
                print(f"error: a {running_now} stack is up; `noetl-dev down` it first", file=sys.stderr)
                return 1
            print(f"the stack is already up (state in {state_dir})")
            _print_urls(state)
            return 0
        if any(running(entry) for _, entry in recorded_processes(state)):
            print("a previous stack is partly running; stopping what is left of it")
        else:
            print("the previous stack is gone (no recorded process is running); starting afresh")
        stop_recorded(state_dir, grace=args.grace)
    if not _port_free(args.api_port):
        print(
            f"error: port {args.api_port} is in use; stop what holds it or pass --api-port "
            "(then set NOETL_SERVER_URL for the noetl CLI)",
            file=sys.stderr,
        )
        return 1
    stack = Stack(
        state_dir,
        database_url=os.environ.get("NOETL_DATABASE_URL") or None,
        nats_url=os.environ.get("NATS_URL") or None,
        api_port=args.api_port,
        detach=True,
        ready_timeout=args.ready_timeout,
        **(CLUSTER if args.cluster else SINGLE),
    )
    clustered = " (clustered: 3 NATS servers, 2 control-api replicas, 2 projector shards)" if args.cluster else ""
    print(f"starting the stack under {state_dir}{clustered} ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("all services ready")
    # the bootstrap admin token, where the noetl CLI looks for this server's token
    stored = store_token(stack.api_url, stack.token)
    if stack.api_url == "http://127.0.0.1:8082":
        store_token("http://localhost:8082", stack.token)
    print(f"admin token stored for {stack.api_url} in {stored} (the noetl CLI reads it)")
    code = 0
    if not args.no_examples:
        try:
            code = _run_examples(stack.api_url, stack.token, args.examples, args.hello_timeout)
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
    described = stack.describe()
    _print_urls(described)
    print("\nnext: noetl execute examples/hello --wait    (then: make down)")
    if stack.api_url != "http://127.0.0.1:8082":
        print(f"      export NOETL_SERVER_URL={stack.api_url}")
    return code


def cmd_down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if read_state(state_dir) is None:
        print(f"nothing to stop (no {state_dir / 'stack.json'})")
        return 0
    stopped, leftovers = stop_recorded(state_dir, grace=args.grace)
    for name in stopped:
        print(f"stopped {name}")
    if leftovers:
        print(f"error: still running after SIGKILL: {', '.join(leftovers)}", file=sys.stderr)
        return 1
    print("the stack is down")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"not running (no {args.state_dir / 'stack.json'})")
        return 1
    healthy = True
    with httpx.Client(timeout=5.0) as http:
        for name, entry in recorded_processes(state):
            alive = running(entry)
            ready = ""
            if alive and entry.get("ready_url"):
                try:
                    ready = f"readyz {http.get(entry['ready_url']).status_code}"
                except httpx.HTTPError as exc:
                    ready = f"readyz {type(exc).__name__}"
                healthy = healthy and ready == "readyz 200"
            healthy = healthy and alive
            print(f"{name:<17} pid {entry.get('pid')!s:<8} {'running' if alive else 'STOPPED':<8} {ready}")
    if healthy:
        print()
        _print_urls(state)
    return 0 if healthy else 1


def cmd_kill(args: argparse.Namespace) -> int:
    try:
        killed = kill_recorded(args.state_dir, args.name)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"killed {args.name}" if killed else f"{args.name} was not running")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    try:
        pid = restart_recorded(args.state_dir, args.name, hard=args.hard, grace=args.grace)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} restarted (pid {pid}) and ready")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    logs = args.state_dir / "logs"
    names: list[str] = args.names
    files = (
        [str(logs / f"{name}.log") for name in names] if names else sorted(str(p) for p in logs.glob("*.log"))
    )
    if not files:
        print(f"no logs under {logs}", file=sys.stderr)
        return 1
    argv = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), *files]
    os.execvp("tail", argv)
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="noetl-dev", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where data, logs and stack.json live (env NOETL_DEV_STATE_DIR; default <repo>/.state)",
    )
    parser.add_argument("--grace", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start everything detached, run examples/hello, print the URLs")
    up.add_argument("--api-port", type=int, default=int(os.environ.get("NOETL_API_PORT", DEFAULT_API_PORT)))
    up.add_argument("--examples", type=Path, default=repo_root() / "examples")
    up.add_argument("--no-examples", action="store_true", help="skip registering and running the examples")
    up.add_argument(
        "--cluster",
        action="store_true",
        help="three JetStream servers (streams at 3 replicas), two control-api replicas and two "
        "projector shards (make up CLUSTER=1)",
    )
    up.add_argument("--ready-timeout", type=float, default=90.0)
    up.add_argument("--hello-timeout", type=float, default=60.0)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop everything `up` started (Postgres and NATS included)")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="pids, liveness and readiness of every process")
    status.set_defaults(func=cmd_status)

    kill = sub.add_parser("kill", help="SIGKILL one service (a crash); `restart` brings it back")
    kill.add_argument("name", metavar="NAME")
    kill.set_defaults(func=cmd_kill)

    restart = sub.add_parser("restart", help="stop and start one service with its recorded settings")
    restart.add_argument("name", metavar="NAME")
    restart.add_argument("--hard", action="store_true", help="SIGKILL instead of SIGTERM")
    restart.set_defaults(func=cmd_restart)

    logs = sub.add_parser("logs", help="tail the logs (all, or the named services)")
    logs.add_argument("names", nargs="*", metavar="NAME")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--no-follow", dest="follow", action="store_false", help="print and exit")
    logs.set_defaults(func=cmd_logs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
