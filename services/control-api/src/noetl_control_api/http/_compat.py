"""Routes of the upstream NoETL API that the suite's own routes do not already answer
(docs/compatibility.md): each parses, calls :class:`CompatService`, returns."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from ..application import (
    CompatService,
    ExecuteReply,
    ExecutionStatus,
    KeychainCatalogList,
    Principal,
    RegisterBatchReply,
    RegisterBatchRequest,
    RerunReply,
    RerunRequest,
    WorkerPools,
    client_id,
)
from ._auth import action
from ._body import decode_json


class CompatController(Controller):
    """Upstream's bulk registration, execution status and rerun, the worker pools, and a
    catalog entry's keychain. (``POST /api/catalog/list`` sits with ``GET`` of the same path
    on the catalog's controller: Litestar serves one path from one controller.)"""

    tags = ["compatibility"]

    @post("/api/catalog/register/batch", status_code=200, opt=action("catalog.register"))
    async def register_batch(
        self,
        data: JSONBody[RegisterBatchRequest],
        compat: NamedDependency[CompatService],
        principal: NamedDependency[Principal],
    ) -> RegisterBatchReply:
        """``{items: [{content, resource_type?}]}``: each registered on its own; the reply says which failed."""
        return await compat.register_batch(data, principal)

    @get("/api/executions/{execution_id:str}/status", opt=action("execution.read"))
    async def status(
        self, execution_id: FromPath[str], compat: NamedDependency[CompatService]
    ) -> ExecutionStatus:
        return await compat.status(client_id(execution_id, "execution_id"))

    @post("/api/executions/{execution_id:str}/rerun", status_code=201, opt=action("execution.start"))
    async def rerun(
        self,
        execution_id: FromPath[str],
        request: Request[Any, Any, Any],
        compat: NamedDependency[CompatService],
        principal: NamedDependency[Principal],
    ) -> Response[ExecuteReply | RerunReply]:
        """Body optional: ``{workload?}``, laid over the first run's workload; with
        ``{from_step, dry_run?, failed_iterations_only?}`` a restart from that step (200 for a
        dry run, which starts nothing)."""
        body = await request.body()
        rerun = decode_json(body, RerunRequest) if body.strip() else RerunRequest()
        reply = await compat.rerun(client_id(execution_id, "execution_id"), rerun, principal)
        return Response(reply, status_code=200 if rerun.dry_run else 201)

    @get("/api/worker/pools", opt=action("worker.read"))
    async def worker_pools(
        self,
        compat: NamedDependency[CompatService],
        runtime: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
    ) -> WorkerPools:
        """``?runtime=`` a pool, ``?status=ready|offline``."""
        return await compat.worker_pools(runtime, status)

    @get("/api/keychain/catalog/{catalog_id:str}", opt=action("keychain.read"))
    async def keychain_for_catalog(
        self, catalog_id: FromPath[str], compat: NamedDependency[CompatService]
    ) -> KeychainCatalogList:
        return await compat.keychain_for_catalog(catalog_id)
