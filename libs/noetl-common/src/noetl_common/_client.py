"""Async client of the control-api, used by the publisher, projector, worker and CLI.

Every service reaches NoETL data only through this HTTP API. Internal routes send the
bearer token of the calling service. Transport errors and 502/503/504 are retried with capped exponential
backoff (``Retry-After`` honoured); other statuses raise ``ApiError`` at once.

The client may be given several control-api replicas (``NOETL_SERVER_URL`` as a comma-separated
list): a transport error or a 502/503/504 moves it to the next URL, which then serves every later
call too. A retry goes to the next URL at once; the backoff pause comes once every URL has failed
since the last one. A request that never reached a server (connection refused or timed out) does
not count as an attempt while some URL is still untried, so even a call made without retries
(a claim) survives a dead replica.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
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
    PendingCountReply,
    ProjectReply,
    ProjectRequest,
    WorkerHeartbeat,
    WorkerRegistration,
)

T = TypeVar("T")
_RETRYABLE = frozenset({502, 503, 504})
#: Transport errors raised before the request left this process: safe to send to another replica.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def api_urls(value: str | Sequence[str]) -> tuple[str, ...]:
    """The control-api base URLs in ``value`` (a comma-separated list, as ``NOETL_SERVER_URL``
    holds, or a sequence), in order, without trailing slashes; ``ValueError`` if there is none."""
    parts = value.split(",") if isinstance(value, str) else value
    urls = tuple(part.strip().rstrip("/") for part in parts if part.strip())
    if not urls:
        raise ValueError("no control-api URL given")
    return urls


class ApiError(Exception):
    """A non-2xx reply; ``retry_after`` is set when the server asked for a delay."""

    def __init__(self, status_code: int, body: ErrorBody | None, text: str, retry_after: float | None):
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after
        detail = body.detail if body else text[:300]
        super().__init__(f"HTTP {status_code}: {detail}")


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _api_error(response: httpx.Response) -> ApiError:
    try:
        error = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.DecodeError:
        error = None
    return ApiError(response.status_code, error, response.text, _retry_after(response))


@dataclass(frozen=True)
class PluginFetch:
    """A plug-in registry reply: ``data`` is None when the module was not modified (304)."""

    path: str
    version: int
    digest: str
    data: bytes | None


class ControlPlaneClient:
    """Thin typed wrapper over the control-api routes the other services use.

    ``base_url``: one URL, or several replicas of the same API (comma-separated or a sequence)
    to fail over between (module docstring)."""

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
        self.base_urls = api_urls(base_url)
        self._current = 0
        self.retries = retries
        self.max_backoff = max_backoff
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    @property
    def base_url(self) -> str:
        """The URL calls go to now (the first of ``base_urls`` until it fails)."""
        return self.base_urls[self._current]

    async def aclose(self) -> None:
        await self._http.aclose()

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
        response = await self._exchange(
            method, path, content=content, timeout=timeout, retries=retries, headers=headers
        )
        if response.status_code < 300:
            if reply_type is None or not response.content:
                return None
            return msgspec.json.decode(response.content, type=reply_type)
        raise _api_error(response)

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send with failover and retries; returns the last response (a 502/503/504 only once
        the attempts are spent) or raises the last transport error."""
        attempts = self.retries if retries is None else retries
        attempt = 0
        delay = 0.1
        untried = len(self.base_urls)  # URLs not tried since the last pause
        while True:
            index = self._current
            untried -= 1
            pause = delay * (1 + random.random())
            try:
                response = await self._http.request(
                    method,
                    self.base_urls[index] + path,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                self._fail_over(index)
                if isinstance(exc, _NOT_SENT) and untried > 0:
                    continue  # nothing reached a server: the next replica takes it, no attempt spent
                if attempt >= attempts:
                    raise
            else:
                if response.status_code not in _RETRYABLE:
                    return response
                self._fail_over(index)
                if attempt >= attempts:
                    return response
                retry_after = _retry_after(response)
                pause = retry_after if retry_after is not None else delay
            attempt += 1
            if untried <= 0:
                await asyncio.sleep(pause)
                delay = min(self.max_backoff, delay * 2)
                untried = len(self.base_urls)

    def _fail_over(self, index: int) -> None:
        """Move to the URL after ``index``, unless a concurrent call already moved on from it."""
        if self._current == index:
            self._current = (index + 1) % len(self.base_urls)

    # -- outbox (publisher) ---------------------------------------------------------------
    async def outbox_claim(self, limit: int, wait_ms: int) -> OutboxClaimReply:
        reply = await self.request(
            "POST",
            "/api/internal/outbox/claim",
            OutboxClaimRequest(limit=limit, wait_ms=wait_ms),
            OutboxClaimReply,
            timeout=wait_ms / 1000 + 30,
        )
        assert reply is not None
        return reply

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

    async def post_events(self, events: list[Event], eager: EagerRequest | None = None) -> EventsReply:
        """Post worker events in order; idempotent per event_id. 409 means a stale attempt.

        With ``eager``, a command the batch causes for that pool may come back claimed.
        """
        body: Any = (
            events[0] if len(events) == 1 and eager is None else EventBatch(events=events, eager=eager)
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
        self, names: list[str], execution_id: int | None, *, event_id: int | None = None, worker_id: str | None = None
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
        self, names: list[str], execution_id: int | None, *, event_id: int | None = None, worker_id: str | None = None
    ) -> dict[str, Any]:
        """Clear values of keychain entries (internal route); the execution's entry wins."""
        reply = await self.request(
            "POST",
            "/api/internal/keychain/resolve",
            {"names": names, "execution_id": execution_id, "event_id": event_id, "worker_id": worker_id},
            dict,
        )
        assert reply is not None
        return dict(reply.get("values") or {})

    # -- plug-in registry and object store (WASM host) -------------------------------------
    async def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 300 or response.status_code == 304:
            return
        raise _api_error(response)

    async def get_plugin(self, path: str, version: int | None = None, etag: str | None = None) -> PluginFetch:
        """``GET /api/internal/plugins/{path}``; with ``etag`` an unchanged module answers 304."""
        headers = {"if-none-match": f'"{etag}"'} if etag else {}
        params = {"version": str(version)} if version is not None else {}
        response = await self._exchange(
            "GET", f"/api/internal/plugins/{quote(path, safe='/')}", params=params, headers=headers, retries=0
        )
        await self._raise_for(response)
        digest = response.headers.get("etag", "").strip('"') or (etag or "")
        found = int(response.headers.get("x-plugin-version") or (version or 0))
        data = None if response.status_code == 304 else response.content
        return PluginFetch(path=path, version=found, digest=digest, data=data)

    async def put_object(self, key: str, data: bytes, media_type: str = "application/octet-stream") -> None:
        """``PUT /api/internal/objects/{key}`` (create or replace)."""
        response = await self._exchange(
            "PUT",
            f"/api/internal/objects/{quote(key, safe='/')}",
            content=data,
            headers={"content-type": media_type},
            retries=0,
        )
        await self._raise_for(response)
