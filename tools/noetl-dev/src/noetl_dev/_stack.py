"""The whole suite on loopback: Postgres, nats-server, control-api, publisher, projector, workers.

``Stack`` is what ``noetl-dev up`` and the end-to-end tests run. Every process gets a
free port, its own session (so a detached stack survives the shell that started it and
can be stopped by process group), and a log file under ``<state>/logs/``. The stack is
ready when every service's ``/readyz`` answers 200. ``<state>/stack.json`` records pids,
ports, URLs and the admin token so ``noetl-dev down|status`` can act on a stack from
another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._cluster import NatsCluster, api_ports, replica_services, start_cluster, stop_order
from ._pgroup import group_members, parent_death_signal, start_time, stop_group, stop_groups
from ._procs import (
    Proc,
    clear_stale_postmaster_pid,
    create_database,
    free_port,
    start_nats,
    start_postgres,
    world_searchable,
)
from ._recorded import STATE_FILE, write_state_file
from ._services import (
    BIND_VARIABLES,
    SERVICES,
    STOP_WAVES,
    Service,
    StackError,
    common_env,
    new_tokens,
    script_argv,
    service_env,
    tail,
    wait_ready,
)


@dataclass
class Stack:
    """Start, inspect and stop the whole suite under ``state_dir``.

    ``database_url`` / ``nats_url``: use these servers instead of starting embedded
    ones (the database must exist; migrations are applied to it). ``detach``: children
    outlive this process (``noetl-dev up``); otherwise they get SIGTERM if it dies.
    ``extra_env`` goes to every service, ``service_overrides[name]`` to one.
    ``shared_workers``: how many workers of the shared pool (the 2nd and later are named
    ``worker-shared-2`` ..., with ``worker-shared``'s environment and their own id and port).
    ``shard_count`` projectors (``projector-2`` ...), ``api_replicas`` control-apis, and with
    ``nats_nodes`` > 1 a JetStream cluster (``nats-1`` ...): ``Stack(dir, **CLUSTER)`` (_cluster.py).
    """

    state_dir: Path
    database_url: str | None = None
    nats_url: str | None = None
    api_port: int | None = None
    detach: bool = False
    ready_timeout: float = 90.0
    shard_count: int = 1
    shared_workers: int = 1
    nats_nodes: int = 1
    api_replicas: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    service_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=new_tokens)
    services: dict[str, Service] = field(default_factory=dict, init=False)
    postgres: Proc | None = field(default=None, init=False)
    nats: Proc | None = field(default=None, init=False)
    #: the login of the nats-server this stack started (None for one it was given)
    nats_auth: tuple[str, str] | None = field(default=None, init=False)
    admin_url: str | None = field(default=None, init=False)
    #: the JetStream cluster this stack started (``nats_nodes`` > 1)
    nats_cluster: NatsCluster | None = field(default=None, init=False)
    #: every control-api replica's port, the first being ``api_port``
    api_ports: list[int] = field(default_factory=list, init=False)
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
    def api_urls(self) -> list[str]:
        """Every control-api replica's URL (what the services get as ``NOETL_SERVER_URL``)."""
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

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
            clear_stale_postmaster_pid(self.pg_dir / "pgdata")
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
        if self.nats_url is None and self.nats_nodes > 1:
            self.nats_cluster = start_cluster(self.state_dir, self.log_path, self.nats_nodes, self.ready_timeout)
            self.nats_url, self.nats_auth = self.nats_cluster.url, self.nats_cluster.auth
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
        self.api_ports = self.api_ports or api_ports(self.api_port, self.api_replicas)
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(
            common_env(
                server_url=",".join(self.api_urls),
                nats_url=self.nats_url,
                shard_count=self.shard_count,
            )
        )
        if self.nats_cluster is not None:
            env["NOETL_STREAM_REPLICAS"] = str(self.nats_cluster.stream_replicas)
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
        self.services.update(
            replica_services(
                self.services,
                api_ports=self.api_ports,
                shard_count=self.shard_count,
                overrides=self.service_overrides,
                log_path=self.log_path,
            )
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
            preexec_fn=None if self.detach else parent_death_signal,
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
        wait_ready(self.services, names, timeout or self.ready_timeout)

    def stop(self, grace: float = 15.0) -> list[str]:
        """Stop every service, then NATS and Postgres; returns names of anything left alive."""
        procs: dict[str, tuple[Proc, int]] = {
            name: (service.proc, signal.SIGTERM) for name, service in self.services.items() if service.proc
        }
        if self.nats is not None:
            procs["nats"] = (self.nats, signal.SIGTERM)
        if self.nats_cluster is not None:
            procs.update(self.nats_cluster.stoppable())
        if self.postgres is not None:
            procs["postgres"] = (self.postgres, self.postgres.stop_signal)
        leftovers: list[str] = []
        for wave in stop_order(procs, STOP_WAVES):  # worker-shared-2 with the workers, nats-2 with nats
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
        if self.nats_cluster is not None:
            procs.update(self.nats_cluster.records())
        for name, service in self.services.items():
            procs[name] = service.record()
        return {
            "state_dir": str(self.state_dir),
            "pg_dir": str(self.pg_dir) if self.postgres is not None else None,
            "api_url": f"http://127.0.0.1:{self.api_port}" if self.api_port else None,
            "api_urls": self.api_urls,
            "database_url": self.database_url,
            "admin_url": self.admin_url,
            "nats_url": self.nats_url,
            "admin_token": self.token,
            "processes": procs,
        }

    def write_state(self) -> Path:
        return write_state_file(self.state_dir, self.describe())
