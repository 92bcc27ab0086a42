"""The whole suite on loopback: Postgres, nats-server, control-api, publisher, projector, workers.

``Stack`` is what ``noetl-dev up`` and the end-to-end tests run. Every process gets a
free port, its own session (so a detached stack survives the shell that started it and
can be stopped by process group), and a log file under ``<state>/logs/``. The stack is
ready when every service's ``/readyz`` answers 200. ``<state>/stack.json`` records pids,
ports, URLs and the admin token so ``noetl-dev down|status`` can act on a stack from
another process.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from ._pgroup import group_members, is_running, start_time, stop_group, stop_groups
from ._procs import Proc, create_database, free_port, start_nats, start_postgres, world_searchable

STATE_FILE = "stack.json"
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
        # Only the control-api opens a database connection (ARCHITECTURE §1).
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


def _parent_death_signal() -> None:
    """Child-side hook: get SIGTERM if the parent dies (attached stacks, e.g. tests)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a lock file left by a Postgres that was killed (power cut, SIGKILL).

    Postgres removes it itself when the recorded pid is gone, but a killed server whose
    zombie nobody reaps (PID 1 in some containers does not) still answers ``kill(pid, 0)``
    and would block every later start. Only a pid that is gone or a zombie is stale.
    """
    lock = pgdata / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return
    if not is_running(pid):
        lock.unlink(missing_ok=True)


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


@dataclass
class Stack:
    """Start, inspect and stop the whole suite under ``state_dir``.

    ``database_url`` / ``nats_url``: use these servers instead of starting embedded
    ones (the database must exist; migrations are applied to it). ``detach``: children
    outlive this process (``noetl-dev up``); otherwise they get SIGTERM if it dies.
    ``extra_env`` goes to every service, ``service_overrides[name]`` to one. Only one
    projector runs, so ``shard_count`` other than 1 needs more replicas than this starts.
    ``shared_workers``: how many workers of the shared pool (the 2nd and later are named
    ``worker-shared-2`` ..., with ``worker-shared``'s environment and their own id and port).
    """

    state_dir: Path
    database_url: str | None = None
    nats_url: str | None = None
    api_port: int | None = None
    detach: bool = False
    ready_timeout: float = 90.0
    shard_count: int = 1
    shared_workers: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    service_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=new_tokens)
    services: dict[str, Service] = field(default_factory=dict, init=False)
    postgres: Proc | None = field(default=None, init=False)
    nats: Proc | None = field(default=None, init=False)
    #: the login of the nats-server this stack started (None for one it was given)
    nats_auth: tuple[str, str] | None = field(default=None, init=False)
    admin_url: str | None = field(default=None, init=False)
    _started_pg: int | None = field(default=None, init=False)
    _started_nats: int | None = field(default=None, init=False)

    # -- paths and URLs ---------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The bootstrap admin token (what ``make up`` gives the CLI)."""
        return self.tokens["NOETL_ADMIN_TOKEN"]

    def auth(self, variable: str = "NOETL_ADMIN_TOKEN") -> dict[str, str]:
        """The Authorization header of one of the stack's tokens (the admin's by default)."""
        return {"authorization": f"Bearer {self.tokens[variable]}"}

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def api_url(self) -> str:
        return self.services["control-api"].url

    @property
    def pg_dir(self) -> Path:
        """Postgres data and socket folder: in the state dir when the server's user can reach it.

        As root, Postgres runs as ``nobody``; a state dir under a folder only root may enter
        (a checkout in /root) gets its database in a world-searchable temporary folder instead.
        """
        if os.geteuid() != 0 or world_searchable(self.state_dir.parent):
            return self.state_dir / "pg"
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        outside = Path(tempfile.gettempdir()) / f"noetl-dev-{digest}"
        outside.mkdir(mode=0o755, exist_ok=True)
        outside.chmod(0o755)
        return outside / "pg"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Stack:
        """Bring everything up and wait until every service is ready; tears down on failure."""
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # Postgres runs as `nobody` when we are root; it must reach its data dir.
            self.state_dir.chmod(0o755)
        try:
            self._start_infrastructure()
            self.write_state()
            self._migrate()
            self._plan_services()
            for name in self.services:
                self.start_service(name, wait=False)
            self.wait_ready(list(self.services))
            self.write_state()
        except BaseException:
            self.stop(grace=5.0)
            raise
        return self

    def _start_infrastructure(self) -> None:
        if self.database_url is None:
            _clear_stale_postmaster_pid(self.pg_dir / "pgdata")
            try:
                proc, admin_url = start_postgres(
                    self.pg_dir,
                    log_path=self.log_path("postgres"),
                    new_session=True,
                )
            except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                log_path = self.log_path("postgres")
                raise StackError(
                    f"postgres did not start ({exc}); last lines of {log_path}:\n{tail(log_path)}"
                ) from None
            self.postgres = proc
            self._started_pg = start_time(proc.pid)
            self.admin_url = admin_url
            self.database_url = create_database(admin_url, "noetl")
            self._release_log(proc)
        if self.nats_url is None:
            # a login, so that nothing else on the machine (a playbook's python task among
            # them) can publish into the suite's streams
            self.nats_auth = ("noetl", secrets.token_urlsafe(24))
            proc, self.nats_url = start_nats(
                self.state_dir / "nats",
                log_path=self.log_path("nats"),
                new_session=True,
                auth=self.nats_auth,
            )
            self.nats = proc
            self._started_nats = start_time(proc.pid)
            self._release_log(proc)

    def _release_log(self, proc: Proc) -> None:
        # The child holds its own copy of the log descriptor; ours is not needed.
        if proc.log is not None:
            proc.log.close()
            proc.log = None

    def _base_env(self) -> dict[str, str]:
        """The inherited environment plus what every suite process shares."""
        assert self.database_url is not None and self.nats_url is not None
        self.api_port = self.api_port or free_port()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(
            common_env(
                server_url=f"http://127.0.0.1:{self.api_port}",
                nats_url=self.nats_url,
                shard_count=self.shard_count,
            )
        )
        return env

    def _migrate(self) -> None:
        assert self.database_url is not None
        env = {**self._base_env(), "NOETL_DATABASE_URL": self.database_url, **self.extra_env}
        log_path = self.log_path("migrate")
        with open(log_path, "ab") as log:
            result = subprocess.run(
                script_argv("noetl-control-api", ["migrate"]),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                f"noetl-control-api migrate exited with {result.returncode}; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )

    def _plan_services(self) -> None:
        base = self._base_env()
        assert self.api_port is not None and self.database_url is not None
        for name, (script, args) in SERVICES.items():
            port = self.api_port if name == "control-api" else free_port()
            env = {
                **base,
                **service_env(name, port=port, database_url=self.database_url, tokens=self.tokens),
                **self.extra_env,
                **self.service_overrides.get(name, {}),
            }
            self.services[name] = Service(
                name=name,
                argv=script_argv(script, args),
                env=env,
                port=port,
                log_path=self.log_path(name),
            )
        shared = self.services["worker-shared"]
        for i in range(2, self.shared_workers + 1):
            name, port = f"worker-shared-{i}", free_port()
            env = {
                **shared.env,
                "WORKER_ID": f"dev-shared-{i}",
                BIND_VARIABLES["worker-shared"]: f"127.0.0.1:{port}",
            }
            self.services[name] = Service(
                name=name, argv=shared.argv, env=env, port=port, log_path=self.log_path(name)
            )

    def start_service(self, name: str, *, wait: bool = True) -> Service:
        """(Re)start one service with its original ports and environment."""
        service = self.services[name]
        if service.alive():
            raise StackError(f"{name} is already running (pid {service.pid})")
        log = open(service.log_path, "ab")
        popen = subprocess.Popen(
            service.argv,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=None if self.detach else _parent_death_signal,
        )
        service.proc = Proc(name=name, popen=popen, log=None)
        log.close()
        service.started = start_time(popen.pid)
        self.write_state()
        if wait:
            self.wait_ready([name])
        return service

    def stop_service(self, name: str, *, grace: float = 15.0) -> int | None:
        """SIGTERM one service's process group (SIGKILL after ``grace``); returns its exit code."""
        service = self.services[name]
        if service.proc is None:
            return None
        stop_group(service.proc.pid, signal.SIGTERM, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.popen.wait(5)
        return service.proc.popen.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one service's whole process group at once (a crash, for chaos tests)."""
        service = self.services[name]
        if service.proc is None:
            return
        stop_group(service.proc.pid, signal.SIGKILL, 5.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.popen.wait(5)

    def restart(self, name: str, *, hard: bool = False) -> Service:
        """Stop (or with ``hard`` kill) one service and start it again; waits until ready."""
        if hard:
            self.kill(name)
        else:
            self.stop_service(name)
        return self.start_service(name)

    def wait_ready(self, names: list[str], timeout: float | None = None) -> None:
        """Poll each service's /readyz until 200; raise naming the service and its log tail."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        pending = list(names)
        last: dict[str, str] = dict.fromkeys(names, "no answer yet")
        with httpx.Client(timeout=5.0) as http:
            while pending:
                for name in list(pending):
                    service = self.services[name]
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
                    log_path = self.services[name].log_path
                    raise StackError(
                        f"{name} not ready on {self.services[name].url}/readyz after "
                        f"{timeout or self.ready_timeout:.0f}s ({last[name]}); "
                        f"last lines of {log_path}:\n{tail(log_path)}"
                    )
                time.sleep(0.1)

    def stop(self, grace: float = 15.0) -> list[str]:
        """Stop every service, then NATS and Postgres; returns names of anything left alive."""
        procs: dict[str, tuple[Proc, int]] = {
            name: (service.proc, signal.SIGTERM) for name, service in self.services.items() if service.proc
        }
        if self.nats is not None:
            procs["nats"] = (self.nats, signal.SIGTERM)
        if self.postgres is not None:
            procs["postgres"] = (self.postgres, self.postgres.stop_signal)
        leftovers: list[str] = []
        known = {name for wave in STOP_WAVES for name in wave}
        extra = tuple(name for name in procs if name not in known)  # e.g. worker-shared-2
        for wave in ((*extra, *STOP_WAVES[0]), *STOP_WAVES[1:]):
            names = [name for name in wave if name in procs]
            left = stop_groups([(procs[n][0].pid, procs[n][1]) for n in names], grace)
            leftovers += [n for n in names if procs[n][0].pid in left or group_members(procs[n][0].pid)]
            for name in names:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    procs[name][0].popen.wait(5)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()
        return leftovers

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- state file -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What ``stack.json`` holds: enough for another process to find and stop everything."""
        procs: dict[str, Any] = {}
        if self.postgres is not None:
            procs["postgres"] = {
                "pid": self.postgres.pid,
                "started": self._started_pg,
                "signal": int(self.postgres.stop_signal),
                "log": str(self.log_path("postgres")),
            }
        if self.nats is not None:
            procs["nats"] = {
                "pid": self.nats.pid,
                "started": self._started_nats,
                "signal": int(signal.SIGTERM),
                "log": str(self.log_path("nats")),
            }
        for name, service in self.services.items():
            procs[name] = {
                "pid": service.pid,
                "started": service.started,
                "signal": int(signal.SIGTERM),
                "port": service.port,
                "url": service.url,
                "ready_url": f"{service.url}/readyz",
                "log": str(service.log_path),
                "argv": service.argv,
                "env": service.own_env,
            }
        return {
            "state_dir": str(self.state_dir),
            "pg_dir": str(self.pg_dir) if self.postgres is not None else None,
            "api_url": f"http://127.0.0.1:{self.api_port}" if self.api_port else None,
            "database_url": self.database_url,
            "admin_url": self.admin_url,
            "nats_url": self.nats_url,
            "admin_token": self.token,
            "processes": procs,
        }

    def write_state(self) -> Path:
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        tmp.chmod(0o600)  # holds the admin token and every service's environment
        tmp.replace(path)
        return path


# -- acting on a recorded stack from another process -------------------------------------------
def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return data


def recorded_processes(state: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from state.get("processes", {}).items()


def running(entry: Mapping[str, Any]) -> bool:
    pid = entry.get("pid")
    return pid is not None and is_running(int(pid), entry.get("started"))


def stop_recorded(state_dir: Path, grace: float = 15.0) -> tuple[list[str], list[str]]:
    """Stop what ``stack.json`` lists (services first, Postgres last).

    Returns (stopped names, names still alive). Pids whose start time no longer matches
    are someone else's now and are left alone.
    """
    state = read_state(state_dir)
    if state is None:
        return [], []
    entries = dict(recorded_processes(state))
    known = {name for wave in STOP_WAVES for name in wave}
    others = tuple(name for name in entries if name not in known)
    stopped: list[str] = []
    leftovers: list[str] = []
    for wave in (others, *STOP_WAVES):
        names = [name for name in wave if name in entries and running(entries[name])]
        stop_groups(
            [(int(entries[n]["pid"]), int(entries[n].get("signal", signal.SIGTERM))) for n in names], grace
        )
        for name in names:
            (leftovers if group_members(int(entries[name]["pid"])) else stopped).append(name)
    if not leftovers:
        (state_dir / STATE_FILE).unlink()
    return stopped, leftovers


def _write_recorded(state_dir: Path, state: Mapping[str, Any]) -> None:
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def _recorded_service(state_dir: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    state = read_state(state_dir)
    if state is None:
        raise StackError(f"no stack recorded in {state_dir / STATE_FILE}")
    entry = state.get("processes", {}).get(name)
    if entry is None or "argv" not in entry:
        services = [n for n, e in state.get("processes", {}).items() if "argv" in e]
        raise StackError(f"unknown service {name!r}; one of: {', '.join(services)}")
    return state, entry


def kill_recorded(state_dir: Path, name: str) -> bool:
    """SIGKILL one recorded service's process group (a crash). False if it was not running."""
    _, entry = _recorded_service(state_dir, name)
    if not running(entry):
        return False
    stop_group(int(entry["pid"]), signal.SIGKILL, 5.0)
    return True


def restart_recorded(
    state_dir: Path, name: str, *, hard: bool = False, grace: float = 15.0, ready_timeout: float = 90.0
) -> int:
    """Stop (SIGTERM, or SIGKILL with ``hard``) and start one recorded service with its
    recorded argv and variables; wait for its /readyz. Returns the new pid."""
    state, entry = _recorded_service(state_dir, name)
    if running(entry):
        stop_group(int(entry["pid"]), signal.SIGKILL if hard else signal.SIGTERM, grace)
    log_path = Path(entry["log"])
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            entry["argv"],
            env={**os.environ, **entry["env"]},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    entry["pid"] = popen.pid
    entry["started"] = start_time(popen.pid)
    _write_recorded(state_dir, state)
    deadline = time.monotonic() + ready_timeout
    with httpx.Client(timeout=5.0) as http:
        while True:
            if popen.poll() is not None:
                raise StackError(
                    f"{name} exited with code {popen.returncode} before it was ready; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(entry["ready_url"]).status_code == 200:
                    return popen.pid
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{name} not ready on {entry['ready_url']} after {ready_timeout:.0f}s; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.1)
