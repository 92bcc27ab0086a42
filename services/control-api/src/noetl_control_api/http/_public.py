"""Public routes: catalog, executions, events, commands, worker pool (docs/contracts.md)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody
from noetl_common import (
    ClaimReply,
    ClaimRequest,
    Event,
    EventBatch,
    EventsReply,
    WorkerHeartbeat,
    WorkerRegistration,
    scrub_text,
)

from .._errors import ValidationFailed
from ..application import (
    CancelReply,
    CancelRequest,
    CatalogEntries,
    CatalogList,
    CatalogListRequest,
    CatalogService,
    ClaimService,
    CommandView,
    CompatService,
    EventIngest,
    ExecuteReply,
    ExecuteRequest,
    ExecutionEntry,
    ExecutionList,
    ExecutionService,
    ExecutionSummary,
    ExecutionView,
    Principal,
    RegisterReply,
    RegisterRequest,
    ReplayReply,
    ResourceReply,
    ResourceRequest,
    SummaryService,
    WorkerRef,
    WorkerRegisterReply,
    WorkerService,
    client_id,
    optional_id,
)
from ._auth import action
from ._body import BodyShape, decode_json, decode_typed


class EventList(msgspec.Struct, kw_only=True):
    events: list[Event]


class CatalogController(Controller):
    """Register, list and fetch playbooks."""

    path = "/api/catalog"
    tags = ["catalog"]

    @post("/register", status_code=201, opt=action("catalog.register"))
    async def register(
        self,
        request: Request[Any, Any, Any],
        catalog: NamedDependency[CatalogService],
        principal: NamedDependency[Principal],
    ) -> RegisterReply:
        """Body: ``{"content": "<yaml>"}`` as JSON, or the YAML text itself (any other content type)."""
        body = await request.body()
        if "json" in request.headers.get("content-type", ""):
            content = decode_json(body, RegisterRequest).content
        else:
            try:
                content = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationFailed("the playbook must be UTF-8 text") from None
        return await catalog.register(content, principal)

    @get("/list", opt=action("catalog.read"))
    async def list_entries(self, catalog: NamedDependency[CatalogService]) -> CatalogList:
        return await catalog.list_entries()

    @post("/list", status_code=200, opt=action("catalog.read"))
    async def list_filtered(
        self, request: Request[Any, Any, Any], compat: NamedDependency[CompatService]
    ) -> CatalogEntries:
        """Upstream's listing (docs/compatibility.md): body optional, ``{resource_type?, path?,
        agent_only?, capability?, capabilities?}``; every version, newest first, with content."""
        body = await request.body()
        filters = decode_json(body, CatalogListRequest) if body.strip() else CatalogListRequest()
        return await compat.catalog_list(filters)

    @post("/resource", status_code=200, opt=action("catalog.read"))
    async def resource(
        self, data: JSONBody[ResourceRequest], catalog: NamedDependency[CatalogService]
    ) -> ResourceReply:
        reply = await catalog.resource(data.path, data.version, data.catalog_id)
        reply.content = scrub_text(reply.content)
        return reply


class ExecutionController(Controller):
    """Start, inspect and cancel executions."""

    tags = ["executions"]

    @post("/api/execute", status_code=201, opt=action("execution.start", "execution.start_child"))
    async def execute(
        self,
        data: JSONBody[ExecuteRequest],
        compat: NamedDependency[CompatService],
        principal: NamedDependency[Principal],
    ) -> ExecuteReply:
        """``execution.start`` (a worker: ``execution.start_child``), asked again by the use case
        with the playbook's path once it is known. Upstream's ``workload`` and ``catalog_id``
        are taken too (docs/compatibility.md)."""
        return await compat.execute(data, principal)

    @get("/api/executions", opt=action("execution.read"))
    async def list_executions(
        self,
        executions: NamedDependency[ExecutionService],
        compat: NamedDependency[CompatService],
        limit: FromQuery[int] = 100,
        status: FromQuery[str | None] = None,
        path: FromQuery[str | None] = None,
        parent_execution_id: FromQuery[str | None] = None,
        since: FromQuery[str | None] = None,
        until: FromQuery[str | None] = None,
        before: FromQuery[str | None] = None,
        offset: FromQuery[int] = 0,
        page: FromQuery[int | None] = None,
        page_size: FromQuery[int | None] = None,
    ) -> ExecutionList | list[ExecutionEntry]:
        """Newest first; page on with ``before`` = the reply's ``next_cursor``, or ``offset``.
        Upstream's ``page``/``page_size`` answer upstream's shape: a list of entries."""
        if page is not None or page_size is not None:
            return await compat.executions_page(page=page or 1, page_size=page_size or 100, status=status, path=path)
        return await executions.list_recent(
            limit=limit,
            status=status,
            path=path,
            parent=optional_id(parent_execution_id, "parent_execution_id"),
            since=since,
            until=until,
            before=optional_id(before, "before"),
            offset=offset,
        )

    @get("/api/executions/{execution_id:str}", opt=action("execution.read"))
    async def get_execution(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        wait: FromQuery[float | None] = None,
    ) -> ExecutionView:
        """``?wait=S`` (0 < S <= 60): a RUNNING execution's reply is held until it ends or S
        seconds pass (then the RUNNING view; ask again)."""
        return await executions.get(client_id(execution_id, "execution_id"), wait)

    @get("/api/executions/{execution_id:str}/events", opt=action("event.read"))
    async def execution_events(
        self,
        execution_id: FromPath[str],
        executions: NamedDependency[ExecutionService],
        after: FromQuery[int] = 0,
        limit: FromQuery[int] = 1000,
        event_type: FromQuery[str | None] = None,
        step: FromQuery[str | None] = None,
    ) -> EventList:
        """``?event_type=`` a type or a prefix ending in ``.`` (``command.``), ``?step=`` a step."""
        eid = client_id(execution_id, "execution_id")
        events = await executions.events(eid, after=after, limit=limit, event_type=event_type, step=step)
        return EventList(events=events)

    @get("/api/executions/{execution_id:str}/summary", opt=action("execution.read"))
    async def summary(
        self, execution_id: FromPath[str], summaries: NamedDependency[SummaryService]
    ) -> ExecutionSummary:
        """Steps, command attempts (a loop run as one row with its count), arcs fired, child
        executions and the error, folded on the server (the run inspector's data)."""
        return await summaries.summary(client_id(execution_id, "execution_id"))

    @get("/api/executions/{execution_id:str}/replay", opt=action("event.read"))
    async def replay(
        self, execution_id: FromPath[str], executions: NamedDependency[ExecutionService]
    ) -> ReplayReply:
        """The state rebuilt from ``noetl.event`` alone and its differences with the stored state."""
        return await executions.replay(client_id(execution_id, "execution_id"))

    @post("/api/executions/{execution_id:str}/cancel", status_code=200, opt=action("execution.cancel"))
    async def cancel(
        self,
        execution_id: FromPath[str],
        request: Request[Any, Any, Any],
        executions: NamedDependency[ExecutionService],
        principal: NamedDependency[Principal],
    ) -> CancelReply:
        """Body optional: ``{"reason": "...", "cascade": true}``; running children are always
        cancelled with their parent."""
        body = await request.body()
        reason = decode_json(body, CancelRequest).reason if body.strip() else None
        return await executions.cancel(client_id(execution_id, "execution_id"), reason, principal)


class EventController(Controller):
    """Worker events."""

    tags = ["events"]

    @post("/api/events", status_code=200, opt=action("event.post"))
    async def post_events(
        self,
        request: Request[Any, Any, Any],
        ingest: NamedDependency[EventIngest],
        principal: NamedDependency[Principal],
    ) -> EventsReply:
        """Body: one ``Event`` or an ``EventBatch {events, eager?, logs?}`` (``logs``: step logs
        of the commands whose terminal events the batch carries)."""
        body = await request.body()
        shape = decode_typed(body, BodyShape)  # a scan of the keys, then one typed decode
        if shape.events and not shape.event_type:
            batch = decode_typed(body, EventBatch)
            return await ingest.ingest(batch.events, principal, batch.eager, batch.logs or ())
        return await ingest.ingest([decode_typed(body, Event)], principal)


class CommandController(Controller):
    """Command status and the claim lease."""

    path = "/api/commands"
    tags = ["commands"]

    @get("/{event_id:str}", opt=action("command.read"))
    async def get_command(
        self, event_id: FromPath[str], claims: NamedDependency[ClaimService]
    ) -> CommandView:
        return await claims.get(client_id(event_id, "event_id"))

    @post("/{event_id:str}/claim", status_code=200, opt=action("command.claim"))
    async def claim(
        self,
        event_id: FromPath[str],
        data: JSONBody[ClaimRequest],
        claims: NamedDependency[ClaimService],
        principal: NamedDependency[Principal],
    ) -> ClaimReply:
        return await claims.claim(client_id(event_id, "event_id"), data.worker_id, principal)


class WorkerPoolController(Controller):
    """The worker registry."""

    path = "/api/worker/pool"
    tags = ["workers"]

    @post("/register", status_code=200, opt=action("worker.presence"))
    async def register(
        self,
        data: JSONBody[WorkerRegistration],
        workers: NamedDependency[WorkerService],
        principal: NamedDependency[Principal],
    ) -> WorkerRegisterReply:
        """Record the worker; the reply carries the Snowflake node id leased to it."""
        return await workers.register(data, principal)

    @post("/heartbeat", status_code=204, opt=action("worker.presence"))
    async def heartbeat(
        self,
        data: JSONBody[WorkerHeartbeat],
        workers: NamedDependency[WorkerService],
        principal: NamedDependency[Principal],
    ) -> None:
        await workers.heartbeat(data, principal)

    @post("/deregister", status_code=204, opt=action("worker.presence"))
    async def deregister(
        self,
        data: JSONBody[WorkerRef],
        workers: NamedDependency[WorkerService],
        principal: NamedDependency[Principal],
    ) -> None:
        await workers.deregister(data.worker_id, principal)

    @delete("/deregister", status_code=204, opt=action("worker.presence"))
    async def deregister_delete(
        self,
        request: Request[Any, Any, Any],
        workers: NamedDependency[WorkerService],
        principal: NamedDependency[Principal],
    ) -> None:
        """DELETE takes the worker id as a JSON body or as ``?worker_id=``."""
        worker_id = request.query_params.get("worker_id")
        if worker_id is None:
            worker_id = decode_json(await request.body(), WorkerRef).worker_id
        await workers.deregister(worker_id, principal)
