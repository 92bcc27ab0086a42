"""Async client of the control-api, used by the publisher, projector, worker and CLI.

Every service reaches NoETL data only through this HTTP API. Internal routes send the
bearer token of the calling service. Transport errors and 502/503/504 are retried with capped exponential
backoff (``Retry-After`` honoured), and fail over between the API's replicas when it is given several
(``_failover.py``); other statuses raise ``ApiError`` at once, and no reply at all ``ApiUnreachable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from ._envelopes import (
    ClaimReply,
    ClaimRequest,
    EagerRequest,
    ErrorBody,
    Event,
    EventBatch,
    EventsReply,
    LimitsReply,
    MarkDeadReply,
    MarkDeadRequest,
    MarkFailedReply,
    MarkFailedRequest,
    MarkPublishedReply,
    MarkPublishedRequest,
    OutboxClaimReply,
    OutboxClaimRequest,
    OutboxRow,
    PendingCountReply,
    ProjectReply,
    ProjectRequest,
    StepLogs,
    WorkerHeartbeat,
    WorkerRegistration,
)
from ._failover import Replicas, Reply, retry_after

T = TypeVar("T")


class ApiError(Exception):
    """A non-2xx reply; ``retry_after`` is set when the server asked for a delay."""

    def __init__(self, status_code: int, body: ErrorBody | None, text: str, retry_after: float | None):
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        detail = body.detail if body else text[:300]
        super().__init__(f"HTTP {status_code}: {detail}")


def _api_error(response: Reply) -> ApiError:
    try:
        error = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.DecodeError:
        error = None
    return ApiError(response.status_code, error, response.text, retry_after(response))


@dataclass(frozen=True)
class PluginFetch:
    """A plug-in registry reply: ``data`` is None when the module was not modified (304)."""

    path: str
    version: int
    digest: str
    data: bytes | None


class _ClaimedRow(OutboxRow, kw_only=True):
    """A claimed row as the publisher reads it: its payload stays the JSON text it came as,
    to be sent on as it is (never decoded and encoded again)."""

    payload: msgspec.Raw


class _Claimed(msgspec.Struct, kw_only=True):
    rows: list[_ClaimedRow]
    claimed: int
    marked: int | msgspec.UnsetType = msgspec.UNSET


class ControlPlaneClient:
    """Thin typed wrapper over the control-api routes the other services use.

    ``base_url``: one URL, or several replicas of the same API (comma-separated, as
    ``NOETL_SERVER_URL`` may list them, or a sequence) to fail over between."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        max_backoff: float = 5.0,
    ) -> None:
        headers = {"content-type": "application/json"}
        if token:
            # the caller's own credential, on every route (docs/security.md)
            headers["authorization"] = f"Bearer {token}"
        self._replicas = Replicas(
            base_url, headers=headers, timeout=timeout, retries=retries, max_backoff=max_backoff
        )

    @property
    def base_urls(self) -> tuple[str, ...]:
        """Every replica's URL, in the order given."""
        return self._replicas.urls

    @property
    def base_url(self) -> str:
        """The URL calls go to now (the first of ``base_urls`` until it fails)."""
        return self._replicas.url

    async def aclose(self) -> None:
        await self._replicas.aclose()

    async def __aenter__(self) -> ControlPlaneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        reply_type: type[T] | None = None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> T | None:
        content = msgspec.json.encode(body) if body is not None else None
        return await self._send(method, path, content, reply_type, timeout=timeout, retries=retries)

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        reply_type: type[T] | None,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> T | None:
        response = await self._replicas.send(
            method, path, content=content, timeout=timeout, retries=retries, headers=headers
        )
        if response.status_code < 300:
            if reply_type is None or not response.content:
                return None
            return msgspec.json.decode(response.content, type=reply_type)
        raise _api_error(response)

    # -- outbox (publisher) ---------------------------------------------------------------
    async def outbox_claim(self, limit: int, wait_ms: int, published: Sequence[int] = ()) -> OutboxClaimReply:
        """Claim up to ``limit`` rows (long-polling up to ``wait_ms``), marking ``published`` first."""
        reply = await self.request(
            "POST",
            "/api/internal/outbox/claim",
            OutboxClaimRequest(limit=limit, wait_ms=wait_ms, published=list(published)),
            _Claimed,
            timeout=wait_ms / 1000 + 30,
        )
        assert reply is not None
        rows: list[OutboxRow] = [*reply.rows]
        return OutboxClaimReply(rows=rows, claimed=reply.claimed, marked=reply.marked)

    async def outbox_mark_published(self, outbox_ids: list[int]) -> int:
        reply = await self.request(
            "POST",
            "/api/internal/outbox/mark-published",
            MarkPublishedRequest(outbox_ids=outbox_ids),
            MarkPublishedReply,
        )
        assert reply is not None
        return reply.marked

    async def outbox_mark_failed(self, request: MarkFailedRequest) -> MarkFailedReply:
        reply = await self.request("POST", "/api/internal/outbox/mark-failed", request, MarkFailedReply)
        assert reply is not None
        return reply

    async def outbox_mark_dead(self, request: MarkDeadRequest) -> MarkDeadReply:
        """A row that will never be published: FAILED, and its execution failed with the cause."""
        reply = await self.request("POST", "/api/internal/outbox/mark-dead", request, MarkDeadReply)
        assert reply is not None
        return reply

    async def limits(self) -> LimitsReply:
        """The control-api's declared NATS max payload and largest event."""
        reply = await self.request("GET", "/api/internal/limits", None, LimitsReply)
        assert reply is not None
        return reply

    async def outbox_pending_count(self) -> int:
        reply = await self.request("GET", "/api/internal/outbox/pending-count", None, PendingCountReply)
        assert reply is not None
        return reply.pending

    # -- projection (projector) -----------------------------------------------------------
    async def project_events(self, events: list[Event]) -> ProjectReply:
        reply = await self.request(
            "POST", "/api/internal/events/project", ProjectRequest(events=events), ProjectReply
        )
        assert reply is not None
        return reply

    # -- commands and events (worker) -----------------------------------------------------
    async def claim_command(self, event_id: int, worker_id: str) -> ClaimReply:
        """Claim a command lease. Raises ApiError 409 (finished/cancelled), 429 ``lease_held`` (Retry-After), 404, 403, 408/503."""
        reply = await self.request(
            "POST",
            f"/api/commands/{event_id}/claim",
            ClaimRequest(worker_id=worker_id),
            ClaimReply,
            retries=0,
        )
        assert reply is not None
        return reply

    async def post_events(
        self, events: list[Event], eager: EagerRequest | None = None, logs: list[StepLogs] | None = None
    ) -> EventsReply:
        """Post worker events in order; idempotent per event_id. 409 means a stale attempt.

        With ``eager``, a command the batch causes for that pool may come back claimed. ``logs``:
        the output of the commands whose terminal events these are, stored in the same transaction.
        """
        body: Any = (
            events[0]
            if len(events) == 1 and eager is None and not logs
            else EventBatch(events=events, eager=eager, logs=logs or None)
        )
        reply = await self.request("POST", "/api/events", body, EventsReply)
        assert reply is not None
        return reply

    async def fail_command(self, event_id: int, reason: str, worker_id: str) -> dict[str, Any]:
        """Fail a dead-lettered command (internal route): ``{failed, status, command_id, ...}``;
        ``failed`` is False when the command had already finished."""
        reply = await self.request(
            "POST",
            f"/api/internal/commands/{event_id}/fail",
            {"reason": reason, "worker_id": worker_id},
            dict,
        )
        assert reply is not None
        return dict(reply)

    async def register_worker(self, registration: WorkerRegistration) -> dict[str, Any] | None:
        """Register; the reply ``{worker_id, node_id, node_lease_seconds}`` carries the Snowflake
        node id leased to the worker (None from an API that answers 204)."""
        reply = await self.request("POST", "/api/worker/pool/register", registration, dict)
        return None if reply is None else dict(reply)

    async def heartbeat_worker(self, heartbeat: WorkerHeartbeat) -> None:
        await self.request("POST", "/api/worker/pool/heartbeat", heartbeat, retries=0)

    async def deregister_worker(self, worker_id: str) -> None:
        await self.request("POST", "/api/worker/pool/deregister", {"worker_id": worker_id}, retries=1)

    # -- result store and credentials (worker) --------------------------------------------
    async def put_result(self, execution_id: int, data: bytes, media_type: str) -> dict[str, Any]:
        """Store a result; returns its reference ``{"$ref": {store, key, size, media_type}}``."""
        reply = await self._send(
            "PUT", f"/api/result/{execution_id}", data, dict, headers={"content-type": media_type}
        )
        assert reply is not None
        return reply

    async def resolve_credentials(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Clear data of named credentials (internal route): ``{name: {credential_type, data}}``.

        ``event_id`` and ``worker_id`` name the command whose lease the caller holds: the API
        resolves credentials only for it (docs/security.md)."""
        reply = await self.request(
            "POST",
            "/api/internal/credentials/resolve",
            {"names": names, "execution_id": execution_id, "event_id": event_id, "worker_id": worker_id},
            dict,
        )
        assert reply is not None
        return dict(reply.get("credentials") or {})

    async def resolve_keychain(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """Clear values of keychain entries (internal route); the execution's entry wins."""
        reply = await self.keychain_entries(names, execution_id, event_id=event_id, worker_id=worker_id)
        return dict(reply.get("values") or {})

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """The whole keychain resolve reply: ``{values, fetch?, sensitive_only?}`` (``fetch``: the
        token requests of the playbook's ``oauth2`` entries that need a new token)."""
        reply = await self.request(
            "POST",
            "/api/internal/keychain/resolve",
            {"names": names, "execution_id": execution_id, "event_id": event_id, "worker_id": worker_id},
            dict,
        )
        assert reply is not None
        return dict(reply)

    async def store_keychain_token(
        self, name: str, value: dict[str, Any], *, event_id: int | None, worker_id: str | None
    ) -> dict[str, Any]:
        """Keep a fetched ``oauth2`` token with the execution (internal route); ``{name, expires_at}``."""
        reply = await self.request(
            "POST",
            "/api/internal/keychain/token",
            {"name": name, "value": value, "event_id": event_id, "worker_id": worker_id},
            dict,
        )
        assert reply is not None
        return dict(reply)

    # -- plug-in registry and object store (WASM host) -------------------------------------
    async def _raise_for(self, response: Reply) -> None:
        if response.status_code < 300 or response.status_code == 304:
            return
        raise _api_error(response)

    async def get_plugin(self, path: str, version: int | None = None, etag: str | None = None) -> PluginFetch:
        """``GET /api/internal/plugins/{path}``; with ``etag`` an unchanged module answers 304."""
        headers = {"if-none-match": f'"{etag}"'} if etag else {}
        params = {"version": str(version)} if version is not None else {}
        response = await self._replicas.send(
            "GET", f"/api/internal/plugins/{quote(path, safe='/')}", params=params, headers=headers, retries=0
        )
        await self._raise_for(response)
        digest = response.headers.get("etag", "").strip('"') or (etag or "")
        found = int(response.headers.get("x-plugin-version") or (version or 0))
        data = None if response.status_code == 304 else response.content
        return PluginFetch(path=path, version=found, digest=digest, data=data)

    async def put_object(self, key: str, data: bytes, media_type: str = "application/octet-stream") -> None:
        """``PUT /api/internal/objects/{key}`` (create or replace)."""
        response = await self._replicas.send(
            "PUT",
            f"/api/internal/objects/{quote(key, safe='/')}",
            content=data,
            headers={"content-type": media_type},
            retries=0,
        )
        await self._raise_for(response)
