"""The slice of the control-api the worker uses, as a protocol.

``noetl_common.ControlPlaneClient`` implements it; tests use an in-memory fake of the
same surface, so the loop is tested against our own contract without a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import structlog
from noetl_common import (
    ClaimReply,
    ControlPlaneClient,
    EagerRequest,
    Event,
    EventsReply,
    StepLogs,
    WorkerHeartbeat,
    WorkerRegistration,
    api_urls,
)


class ControlPlane(Protocol):
    """Calls a worker makes; each raises ``noetl_common.ApiError`` on a non-2xx reply."""

    async def claim_command(self, event_id: int, worker_id: str) -> ClaimReply:
        """Take the command's lease: 200 reply; 409 finished or cancelled; 429 ``lease_held`` (Retry-After: the lease end); 404 unknown; 403 another pool; 408/503 later."""
        ...

    async def post_events(
        self, events: list[Event], eager: EagerRequest | None = None, logs: list[StepLogs] | None = None
    ) -> EventsReply:
        """Record events in order; idempotent per event_id; 409 ``stale_attempt``. With ``eager``
        the reply may carry a next command already claimed for this worker; ``logs`` are the
        step logs of the commands whose terminal events these are."""
        ...

    async def fail_command(self, event_id: int, reason: str, worker_id: str) -> dict[str, Any]:
        """Fail a command whose notification is dead-lettered (internal route); idempotent."""
        ...

    async def register_worker(self, registration: WorkerRegistration) -> dict[str, Any] | None:
        """Announce the worker and its capacity; the reply may carry a leased ``node_id``."""
        ...

    async def heartbeat_worker(self, heartbeat: WorkerHeartbeat) -> None:
        """Refresh the worker's liveness."""
        ...

    async def deregister_worker(self, worker_id: str) -> None:
        """Remove the worker from its pool."""
        ...

    async def put_result(self, execution_id: int, data: bytes, media_type: str) -> dict[str, Any]:
        """Store a big result; returns the reference the event carries instead."""
        ...

    async def resolve_credentials(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Clear data of named credentials (internal route)."""
        ...

    async def resolve_keychain(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Clear keychain values (internal route)."""
        ...

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """The whole keychain resolve reply, with the token requests of ``oauth2`` entries."""
        ...

    async def store_keychain_token(
        self, name: str, value: dict[str, Any], *, event_id: int | None, worker_id: str | None
    ) -> dict[str, Any]:
        """Keep a fetched ``oauth2`` token with the execution (internal route)."""
        ...


#: The control-api to call for a notification's ``server_url`` (None: ``NOETL_SERVER_URL``).
ApiFor = Callable[[str | None], ControlPlane]


class ClientPool:
    """One ``ControlPlaneClient`` per control-api base URL.

    Notifications carry ``server_url`` and the worker sends that command's follow-up calls
    there (architecture.md §4), but only when the URL is ``NOETL_SERVER_URL`` itself or listed
    in ``WORKER_ALLOWED_SERVER_URLS``: a message on NATS must not be able to send the
    worker's results and bearer token to a host of its choosing. Any other URL falls back
    to ``NOETL_SERVER_URL`` (the same API under another name, e.g. its public address).
    ``NOETL_SERVER_URL`` may list several replicas of the API: a notification naming any one of
    them gets the client that fails over between all of them. Connections are reused across
    commands.
    """

    def __init__(
        self,
        default_url: str,
        *,
        allowed: tuple[str, ...] = (),
        token: str | None = None,
        factory: Callable[[str], ControlPlaneClient] | None = None,
    ) -> None:
        replicas = api_urls(default_url)
        self.default_url = ",".join(replicas)
        self._replicas = frozenset(replicas)
        self.allowed = frozenset(u.rstrip("/") for u in allowed) | {self.default_url}
        self._factory = factory or (lambda url: ControlPlaneClient(url, token=token))
        self._clients: dict[str, ControlPlaneClient] = {}
        self.refused: set[str] = set()

    def resolve(self, server_url: str | None) -> str:
        """The base URL to call for a notification's ``server_url``."""
        named = server_url if server_url and server_url.strip(" ,") else self.default_url
        url = ",".join(api_urls(named))
        if url in self._replicas:
            return self.default_url
        if url in self.allowed:
            return url
        if url not in self.refused:
            self.refused.add(url)
            structlog.get_logger(service="noetl-system-worker").warning(
                "server_url_refused",
                server_url=url,
                using=self.default_url,
                allowed_by="WORKER_ALLOWED_SERVER_URLS",
            )
        return self.default_url

    def get(self, server_url: str | None = None) -> ControlPlaneClient:
        """The client for ``server_url`` (the default client when it is empty or not allowed)."""
        url = self.resolve(server_url)
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = self._factory(url)
        return client

    async def aclose(self) -> None:
        """Close every client's connections."""
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
