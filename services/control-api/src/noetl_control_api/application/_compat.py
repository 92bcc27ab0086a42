"""The upstream NoETL API's routes, as adapters onto the suite's own use cases.

Clients of upstream (its ``noetl`` CLI, scripts, its UI) send other paths, names and shapes
(docs/compatibility.md). Nothing here owns state or a transaction of its own: every call
ends in the services the suite's own routes call, so there is one model underneath.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from noetl_common import scrub, scrub_text
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import DomainError, NotFound, ValidationFailed
from ._catalog import CatalogService
from ._compat_views import (
    CatalogEntries,
    CatalogEntryOut,
    CatalogListRequest,
    ExecutionEntry,
    ExecutionStatus,
    KeychainCatalogList,
    RegisterBatchReply,
    RegisterBatchRequest,
    RegisterBatchResult,
    RerunRequest,
    WorkerPool,
    WorkerPools,
)
from ._executions import ExecutionService
from ._ids import client_id
from ._keychain import KeychainService
from ._policy import Principal
from ._recorder import TERMINAL_STATUSES
from ._rerun import RerunReply, RerunService
from ._secrets import path_allowed
from ._views import ExecuteReply, ExecuteRequest, ExecutionView

#: the only kind this catalog holds (upstream also has agents, MCP servers, credentials ...)
PLAYBOOK = "playbook"
#: most rows of one ``page_size`` (upstream caps its pages too)
MAX_PAGE_SIZE = 1000
#: most items of one ``POST /api/catalog/register/batch``
MAX_BATCH = 1000
# upstream's worker states, from the registry's
_WORKER_STATUS = {"ACTIVE": "ready", "DEREGISTERED": "offline"}


def _kind(resource_kind: str | None, field: str) -> None:
    if resource_kind is not None and resource_kind.strip().lower() != PLAYBOOK:
        raise ValidationFailed(
            f"{field} {resource_kind[:40]!r} is not served here: the catalog holds playbooks only",
            {"field": field},
        )


class CompatService:
    """Upstream's routes, each one call (or a loop of calls) into the suite's services."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        catalog: CatalogService,
        executions: ExecutionService,
        keychain: KeychainService,
        reruns: RerunService,
        *,
        page_max_bytes: int,
    ) -> None:
        self._pool = pool
        self._reruns = reruns
        self._catalog = catalog
        self._executions = executions
        self._keychain = keychain
        self._page_max = page_max_bytes

    async def catalog_list(self, req: CatalogListRequest) -> CatalogEntries:
        """Entries newest first, content included (scrubbed). Only playbooks are stored, so a
        filter for another kind, for agents or for capabilities finds nothing."""
        wants_playbooks = req.resource_type is None or req.resource_type.strip().lower() == PLAYBOOK
        if not wants_playbooks or req.agent_only or req.capability or req.capabilities:
            return CatalogEntries(entries=[])
        async with self._pool.connection() as conn:
            rows = await store.catalog.list_versions(
                conn, req.path, limit=MAX_PAGE_SIZE, max_bytes=self._page_max
            )
        return CatalogEntries(
            entries=[
                CatalogEntryOut(
                    catalog_id=str(e.catalog_id),
                    path=e.path,
                    version=e.version,
                    kind="Playbook",
                    content=scrub_text(e.content),
                    meta={"name": e.name},
                    created_at=e.created_at,
                )
                for e in rows
            ]
        )

    async def register_batch(self, req: RegisterBatchRequest, principal: Principal) -> RegisterBatchReply:
        """Each item registered on its own (one failing leaves the others registered)."""
        if len(req.items) > MAX_BATCH:
            raise ValidationFailed(
                f"at most {MAX_BATCH} items a batch, got {len(req.items)}", {"field": "items"}
            )
        results: list[RegisterBatchResult] = []
        for index, item in enumerate(req.items):
            try:
                _kind(item.resource_type, "resource_type")
                reply = await self._catalog.register(item.content, principal)
            except DomainError as error:
                results.append(RegisterBatchResult(index=index, status="failed", error=error.detail))
                continue
            results.append(
                RegisterBatchResult(
                    index=index,
                    status="registered",
                    path=reply.path,
                    version=reply.version,
                    catalog_id=reply.catalog_id,
                )
            )
        registered = sum(r.status == "registered" for r in results)
        return RegisterBatchReply(registered=registered, failed=len(results) - registered, results=results)

    async def execute(self, req: ExecuteRequest, principal: Principal) -> ExecuteReply:
        """``POST /api/execute`` in both dialects: ``workload`` for ``payload``, ``catalog_id``
        for ``path`` and ``version``."""
        _kind(req.resource_kind, "resource_kind")
        if req.payload is not None and req.workload is not None and req.payload != req.workload:
            raise ValidationFailed("send payload or workload, not both", {"field": "workload"})
        path, version = req.path, req.version
        if req.catalog_id is not None:
            entry = await self._catalog.entry(req.path, req.version, req.catalog_id)
            path, version = entry.path, entry.version
        if path is None:
            raise ValidationFailed(
                "name the playbook with path (and version) or catalog_id", {"field": "path"}
            )
        return await self._executions.execute(
            path,
            version,
            req.payload if req.payload is not None else req.workload,
            req.parent_execution_id,
            req.execution_pool,
            principal=principal,
        )

    async def rerun(
        self, execution_id: int, req: RerunRequest, principal: Principal
    ) -> ExecuteReply | RerunReply:
        """A new execution of the same playbook version, its workload the first run's with
        ``workload`` laid over it; with ``from_step``, a restart from that step (:class:`RerunService`)."""
        _kind(req.resource_kind, "resource_kind")
        if req.from_step is not None:
            return await self._reruns.rerun_from(
                execution_id,
                req.from_step,
                {**(req.workload or {}), **(req.payload or {})},
                dry_run=req.dry_run,
                failed_iterations_only=req.failed_iterations_only,
                principal=principal,
            )
        if req.dry_run or req.failed_iterations_only:
            raise ValidationFailed(
                "dry_run and failed_iterations_only need from_step", {"field": "from_step"}
            )
        async with self._pool.connection() as conn:
            row = await store.executions.get(conn, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        payload = {**(row.payload or {}), **(req.workload or {}), **(req.payload or {})}
        return await self._executions.execute(row.path, row.version, payload, None, principal=principal)

    async def status(self, execution_id: int) -> ExecutionStatus:
        async with self._pool.connection() as conn:
            row = await store.executions.get(conn, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        state: dict[str, Any] = row.state or {}
        in_flight = [f.get("step") for f in (state.get("in_flight") or {}).values() if isinstance(f, dict)]
        start, end, seconds = _times(row.created_at, row.updated_at, row.status)
        return ExecutionStatus(
            execution_id=str(row.execution_id),
            status=row.status,
            current_step=in_flight[0] if in_flight else state.get("last_step"),
            completed_steps=list(state.get("results") or {}),
            failed=row.status == "FAILED",
            completed=row.status in ("COMPLETED", "CANCELLED"),
            variables=scrub(state.get("ctx") or {}),
            start_time=start,
            end_time=end,
            duration_seconds=seconds,
            duration_human=_human(seconds),
            error=None if row.error is None else scrub(row.error),
            result=scrub(row.result),
        )

    async def executions_page(
        self, *, page: int, page_size: int, status: str | None, path: str | None
    ) -> list[ExecutionEntry]:
        """Upstream's pages: ``page`` from 1, ``page_size`` rows, newest first."""
        if not 1 <= page_size <= MAX_PAGE_SIZE or page < 1:
            raise ValidationFailed(
                f"page must be at least 1 and page_size within 1..{MAX_PAGE_SIZE}", {"field": "page_size"}
            )
        listing = await self._executions.list_recent(
            limit=page_size, status=status, path=path, offset=(page - 1) * page_size
        )
        pairs = {(e.path, e.version) for e in listing.executions}
        async with self._pool.connection() as conn:
            ids = await store.catalog.ids_of(conn, pairs)
        return [_entry(e, ids.get((e.path, e.version), 0)) for e in listing.executions]

    async def worker_pools(self, runtime: str | None, status: str | None) -> WorkerPools:
        """Registered workers; ``runtime`` filters by pool, ``status`` by upstream's word
        (``ready`` for an active worker, ``offline`` for a deregistered one)."""
        async with self._pool.connection() as conn:
            rows = await store.workers.list_workers(conn, pool=runtime, status=None)
        items = [
            WorkerPool(
                name=r.worker_id,
                runtime={"type": "python", "pool": r.pool, "hostname": r.hostname, "version": r.version},
                status=_WORKER_STATUS.get(r.status, r.status.lower()),
                capacity=r.capacity,
                labels={"pool": r.pool, "in_flight": r.in_flight},
                heartbeat=r.heartbeat_at,
                created_at=r.registered_at,
                updated_at=r.heartbeat_at,
            )
            for r in rows
        ]
        if status is not None:
            items = [i for i in items if i.status == status.strip().lower()]
        return WorkerPools(items=items, count=len(items), runtime=runtime, status=status)

    async def keychain_for_catalog(self, catalog_id: str) -> KeychainCatalogList:
        """Upstream scopes keychain entries to a catalog entry; here an entry is global or of one
        execution, and ``allowed_paths`` says which playbooks may use it: the global entries the
        entry's path may use are its keychain (values never shown)."""
        entry = await self._catalog.entry(None, None, client_id(catalog_id, "catalog_id"))
        listing = await self._keychain.list_all(0)
        entries = [
            {**msgspec.to_builtins(v), "scope_type": "global", "catalog_id": str(entry.catalog_id)}
            for v in listing.entries
            if path_allowed(entry.path, v.allowed_paths)
        ]
        return KeychainCatalogList(
            status="success", catalog_id=str(entry.catalog_id), entries=entries, count=len(entries)
        )


def _times(
    created: str | None, updated: str | None, status: str
) -> tuple[str | None, str | None, float | None]:
    """Start, end (once ended) and seconds between them (until now while running)."""
    end = updated if status in TERMINAL_STATUSES else None
    if created is None:
        return None, end, None
    started = datetime.fromisoformat(created)
    until = datetime.fromisoformat(end) if end else datetime.now(started.tzinfo)
    return created, end, round(max(0.0, (until - started).total_seconds()), 3)


def _human(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h {minutes}m {secs:.0f}s"
    return f"{minutes}m {secs:.1f}s" if minutes else f"{secs:.2f}s"


def _entry(view: ExecutionView, catalog_id: int) -> ExecutionEntry:
    start, end, seconds = _times(view.created_at, view.updated_at, view.status)
    return ExecutionEntry(
        execution_id=str(view.execution_id),
        catalog_id=str(catalog_id),
        path=view.path,
        version=view.version,
        status=view.status,
        start_time=start,
        end_time=end,
        duration_seconds=seconds,
        duration_human=_human(seconds),
        progress=100 if view.status in TERMINAL_STATUSES else 0,
        result=view.result,
        error=view.error,
        parent_execution_id=None if view.parent_execution_id is None else str(view.parent_execution_id),
        rerun_of=view.rerun_of,
    )
