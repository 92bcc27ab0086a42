"""Async client of the control-api, used by the publisher, projector, worker and CLI.

Every service reaches NoETL data only through this HTTP API. Internal routes send the
bearer token. Transport errors and 502/503/504 are retried with capped exponential
backoff (``Retry-After`` honoured); other statuses raise ``ApiError`` at once.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, TypeVar

import httpx
import msgspec

from ._envelopes import (
    ClaimReply,
    ClaimRequest,
    ErrorBody,
    Event,
    EventBatch,
    EventsReply,
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


class ControlPlaneClient:
    """Thin typed wrapper over the control-api routes the other services use."""

    def __init__(
        self,
        base_url: str,
        *,
        internal_token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        max_backoff: float = 5.0,
    ) -> None:
        headers = {"content-type": "application/json"}
        if internal_token:
            headers["authorization"] = f"Bearer {internal_token}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.max_backoff = max_backoff
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

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
        attempts = self.retries if retries is None else retries
        delay = 0.1
        for attempt in range(attempts + 1):
            try:
                response = await self._http.request(
                    method,
                    path,
                    content=content,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError:
                if attempt >= attempts:
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(self.max_backoff, delay * 2)
                continue
            if response.status_code < 300:
                if reply_type is None or not response.content:
                    return None
                return msgspec.json.decode(response.content, type=reply_type)
            retry_after = _retry_after(response)
            if response.status_code in _RETRYABLE and attempt < attempts:
                await asyncio.sleep(retry_after if retry_after is not None else delay)
                delay = min(self.max_backoff, delay * 2)
                continue
            try:
                error = msgspec.json.decode(response.content, type=ErrorBody)
            except msgspec.DecodeError:
                error = None
            raise ApiError(response.status_code, error, response.text, retry_after)
        raise AssertionError("unreachable")

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
        """Claim a command lease. Raises ApiError 409 (terminal/held), 404, 408/429/503."""
        reply = await self.request(
            "POST",
            f"/api/commands/{event_id}/claim",
            ClaimRequest(worker_id=worker_id),
            ClaimReply,
            retries=0,
        )
        assert reply is not None
        return reply

    async def post_events(self, events: list[Event]) -> EventsReply:
        """Post worker events in order; idempotent per event_id. 409 means a stale attempt."""
        body: Any = events[0] if len(events) == 1 else EventBatch(events=events)
        reply = await self.request("POST", "/api/events", body, EventsReply)
        assert reply is not None
        return reply

    async def register_worker(self, registration: WorkerRegistration) -> None:
        await self.request("POST", "/api/worker/pool/register", registration)

    async def heartbeat_worker(self, heartbeat: WorkerHeartbeat) -> None:
        await self.request("POST", "/api/worker/pool/heartbeat", heartbeat, retries=0)

    async def deregister_worker(self, worker_id: str) -> None:
        await self.request("POST", "/api/worker/pool/deregister", {"worker_id": worker_id}, retries=1)
