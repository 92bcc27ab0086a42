"""The suite's services as the dev stack runs them: what each runs, what it is told, in which
order they start and stop, and how one is seen to be ready."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._procs import Proc

#: plugins/wasm of this checkout (noetl-dev runs from the workspace)
BUILTIN_PLUGINS = Path(__file__).resolve().parents[4] / "plugins" / "wasm"
DEFAULT_API_PORT = 8082

#: Service name -> (console script, extra argv). Order is start order; stop is the reverse.
SERVICES: dict[str, tuple[str, list[str]]] = {
    "control-api": ("noetl-control-api", ["serve"]),
    "outbox-publisher": ("noetl-outbox-publisher", []),
    "projector": ("noetl-projector", []),
    "worker-shared": ("noetl-system-worker", []),
    "worker-system": ("noetl-system-worker", []),
}


#: The variable each service reads its listening address from.
BIND_VARIABLES = {
    "control-api": "NOETL_API_BIND",
    "outbox-publisher": "PUBLISHER_METRICS_BIND",
    "projector": "PROJECTOR_METRICS_BIND",
    "worker-shared": "WORKER_METRICS_BIND",
    "worker-system": "WORKER_METRICS_BIND",
}


#: The tokens the control-api is configured with: one per role, and one per pool the stack runs
#: (docs/security.md); compose.yaml configures the same.
TOKEN_VARIABLES = (
    "NOETL_ADMIN_TOKEN",
    "NOETL_PUBLISHER_TOKEN",
    "NOETL_PROJECTOR_TOKEN",
    "NOETL_WORKER_TOKEN_SHARED",
    "NOETL_WORKER_TOKEN_SYSTEM",
)


def new_tokens() -> dict[str, str]:
    """A fresh token for every role (the control-api's own format: ``noetl_`` + 43 characters)."""
    return {variable: "noetl_" + secrets.token_urlsafe(32) for variable in TOKEN_VARIABLES}


def token_variable(name: str) -> str:
    """The configured token variable whose value service ``name`` sends as ``NOETL_API_TOKEN``."""
    if name == "outbox-publisher":
        return "NOETL_PUBLISHER_TOKEN"
    if name == "projector":
        return "NOETL_PROJECTOR_TOKEN"
    if name.startswith("worker-"):
        return f"NOETL_WORKER_TOKEN_{name.removeprefix('worker-').split('-')[0].upper()}"
    raise KeyError(name)


def common_env(*, server_url: str, nats_url: str, shard_count: int) -> dict[str, str]:
    """What every suite service is told: where the API and NATS are, the shard count."""
    return {
        "NOETL_SERVER_URL": server_url,
        "NATS_URL": nats_url,
        # control-api writes event subjects with it; the projector consumes them with it.
        "NOETL_EVENT_SHARD_COUNT": str(shard_count),
    }


def service_env(name: str, *, port: int, database_url: str, tokens: Mapping[str, str]) -> dict[str, str]:
    """The variables specific to one service of the dev stack (compose.yaml sets the same).

    The control-api gets every role's token; each other service only its own, as
    ``NOETL_API_TOKEN`` (a worker never holds the admin's or another pool's token)."""
    env = {BIND_VARIABLES[name]: f"127.0.0.1:{port}"}
    if name == "control-api":
        # Only the control-api opens a database connection (architecture.md §1).
        env["NOETL_DATABASE_URL"] = database_url
        env.update(tokens)
        if BUILTIN_PLUGINS.is_dir():
            # the built-in WASM plug-ins (system/echo ...), as the image seeds them
            env["NOETL_PLUGIN_SEED_DIR"] = str(BUILTIN_PLUGINS)
        # A throw-away Fernet key (32 random bytes, url-safe base64) so credentials work in dev.
        env["NOETL_CREDENTIALS_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    else:
        env["NOETL_API_TOKEN"] = tokens[token_variable(name)]
    if name == "projector":
        # One replica consumes every shard; never let a HOSTNAME ordinal pick another.
        env["PROJECTOR_SHARD"] = "0"
    if name.startswith("worker-"):
        pool = name.removeprefix("worker-")
        env["WORKER_ID"] = f"dev-{pool}-1"
        env["WORKER_POOL_NAME"] = pool
        # the stack and the tests' servers listen on loopback; link-local stays refused
        env["WORKER_HTTP_ALLOW_CIDRS"] = "127.0.0.0/8,::1"
    return env


#: Stop order: what consumes first (in parallel), then the API, then NATS, then Postgres.
STOP_WAVES: tuple[tuple[str, ...], ...] = (
    ("worker-shared", "worker-system", "projector", "outbox-publisher"),
    ("control-api",),
    ("nats",),
    ("postgres",),
)


class StackError(RuntimeError):
    """The stack could not start or stop; the message names the service."""


def script_argv(script: str, args: list[str]) -> list[str]:
    """argv of a suite console script, preferring the one beside this interpreter."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(script, path=folder)
        if found:
            return [found, *args]
    found = shutil.which(script)
    if found:
        return [found, *args]
    raise StackError(f"{script} is not installed in this environment; run `uv sync` first")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class Service:
    """One suite process: how to start it and where it answers."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    proc: Proc | None = None
    started: int | None = None

    @property
    def own_env(self) -> dict[str, str]:
        """The variables the stack set or changed (what a restart from another shell needs)."""
        return {key: value for key, value in self.env.items() if os.environ.get(key) != value}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def record(self) -> dict[str, Any]:
        """Its entry in ``stack.json``: enough for another process to stop or restart it."""
        return {
            "pid": self.pid,
            "started": self.started,
            "signal": int(signal.SIGTERM),
            "port": self.port,
            "url": self.url,
            "ready_url": f"{self.url}/readyz",
            "log": str(self.log_path),
            "argv": self.argv,
            "env": self.own_env,
        }


def wait_ready(services: Mapping[str, Service], names: list[str], timeout: float) -> None:
    """Poll each named service's /readyz until 200; raise naming the service and its log tail."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    last: dict[str, str] = dict.fromkeys(names, "no answer yet")
    with httpx.Client(timeout=5.0) as http:
        while pending:
            for name in list(pending):
                service = services[name]
                if not service.alive():
                    code = service.proc.popen.returncode if service.proc else None
                    raise StackError(
                        f"{name} exited with code {code} before it was ready; "
                        f"last lines of {service.log_path}:\n{tail(service.log_path)}"
                    )
                try:
                    reply = http.get(f"{service.url}/readyz")
                except httpx.HTTPError as exc:
                    last[name] = f"{type(exc).__name__}: {exc}"
                    continue
                if reply.status_code == 200:
                    pending.remove(name)
                else:
                    last[name] = f"HTTP {reply.status_code} {reply.text[:200]}"
            if not pending:
                return
            if time.monotonic() >= deadline:
                name = pending[0]
                log_path = services[name].log_path
                raise StackError(
                    f"{name} not ready on {services[name].url}/readyz after "
                    f"{timeout:.0f}s ({last[name]}); "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.1)
