"""Internal routes (``/api/internal/*``): the service roles' calls (each names its action)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from noetl_common import (
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
    ProjectBody,
    ProjectReply,
)

from ..application import (
    CommandFailReply,
    CommandFailRequest,
    DeadLetterService,
    OutboxService,
    Principal,
    ProjectionService,
    PurgeReply,
    PurgeRequest,
    client_id,
)
from ._auth import action
from ._body import decode_typed


class InternalController(Controller):
    """The outbox relay's and the projector's calls."""

    path = "/api/internal"
    tags = ["internal"]

    @post("/outbox/claim", status_code=200, opt=action("outbox.claim"))
    async def outbox_claim(
        self, data: JSONBody[OutboxClaimRequest], outbox: NamedDependency[OutboxService]
    ) -> OutboxClaimReply:
        return await outbox.claim(data.limit, data.wait_ms, data.published)

    @post("/outbox/mark-published", status_code=200, opt=action("outbox.mark"))
    async def mark_published(
        self, data: JSONBody[MarkPublishedRequest], outbox: NamedDependency[OutboxService]
    ) -> MarkPublishedReply:
        return MarkPublishedReply(marked=await outbox.mark_published(data.outbox_ids))

    @post("/outbox/mark-failed", status_code=200, opt=action("outbox.mark"))
    async def mark_failed(
        self, data: JSONBody[MarkFailedRequest], outbox: NamedDependency[OutboxService]
    ) -> MarkFailedReply:
        return await outbox.mark_failed(data.outbox_id, data.error, data.attempts, data.max_delay_seconds)

    @post("/outbox/mark-dead", status_code=200, opt=action("outbox.mark"))
    async def mark_dead(
        self, data: JSONBody[MarkDeadRequest], outbox: NamedDependency[OutboxService]
    ) -> MarkDeadReply:
        """A row that will never be published: FAILED, and its execution failed with the cause
        (one already ended is left alone). Role: ``publisher``."""
        return await outbox.mark_dead(data.outbox_id, data.error)

    @get("/limits", opt=action("outbox.read", "event.project"))
    async def limits(self, outbox: NamedDependency[OutboxService]) -> LimitsReply:
        """``{nats_max_payload, max_event_bytes, event_shard_count}``: what the publisher checks
        its NATS server against, and the projector its shard count, at start. Roles:
        ``publisher``, ``projector``."""
        return outbox.limits()

    @get("/outbox/pending-count", opt=action("outbox.read"))
    async def pending_count(self, outbox: NamedDependency[OutboxService]) -> PendingCountReply:
        return PendingCountReply(pending=await outbox.pending_count())

    @post(["/cleanup/purge", "/cleanup/sweep"], status_code=200, opt=action("cleanup.purge"))
    async def purge(self, data: JSONBody[PurgeRequest], outbox: NamedDependency[OutboxService]) -> PurgeReply:
        """Retention: published outbox rows, terminal executions and old events past their ages."""
        return await outbox.purge(data)

    @post("/events/project", status_code=200, opt=action("event.project"))
    async def project(
        self, request: Request[Any, Any, Any], projection: NamedDependency[ProjectionService]
    ) -> ProjectReply:
        """Body: ``ProjectRequest {events}``, read as ``ProjectBody``: each event's context and
        meta go to the event log as the JSON text they came as."""
        return await projection.project(decode_typed(await request.body(), ProjectBody).events)

    @post("/commands/{event_id:str}/fail", status_code=200, opt=action("command.fail"))
    async def fail_command(
        self,
        event_id: FromPath[str],
        data: JSONBody[CommandFailRequest],
        deadletter: NamedDependency[DeadLetterService],
        principal: NamedDependency[Principal],
    ) -> CommandFailReply:
        """Fail a command whose notification was dead-lettered (past max_deliver, or undecodable)."""
        return await deadletter.fail(client_id(event_id, "event_id"), data, principal)
