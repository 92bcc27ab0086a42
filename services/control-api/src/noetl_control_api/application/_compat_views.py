"""Bodies in the upstream NoETL API's shapes (docs/compatibility.md): what its CLI and UI
send and read. Ids are strings there, as in upstream's replies."""

from __future__ import annotations

from typing import Any

import msgspec


class CatalogListRequest(msgspec.Struct, kw_only=True):
    """``POST /api/catalog/list``: every filter upstream takes."""

    resource_type: str | None = None
    #: one path, all of its versions
    path: str | None = None
    agent_only: bool = False
    capability: str | None = None
    capabilities: list[str] | None = None


class CatalogEntryOut(msgspec.Struct, kw_only=True):
    catalog_id: str
    path: str
    version: int
    kind: str
    content: str | None
    layout: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    created_at: str | None


class CatalogEntries(msgspec.Struct, kw_only=True):
    entries: list[CatalogEntryOut]


class RegisterBatchItem(msgspec.Struct, kw_only=True):
    content: str
    resource_type: str = "Playbook"


class RegisterBatchRequest(msgspec.Struct, kw_only=True):
    items: list[RegisterBatchItem]


class RegisterBatchResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: str
    path: str | None = None
    version: int | None = None
    catalog_id: str | None = None
    error: str | None = None


class RegisterBatchReply(msgspec.Struct, kw_only=True):
    registered: int
    failed: int
    results: list[RegisterBatchResult]


class RerunRequest(msgspec.Struct, kw_only=True):
    """``POST /api/executions/{id}/rerun``: values laid over the first run's workload. With
    ``from_step``, a restart from that step reusing the outcomes of the steps before it
    (``dry_run``: only say which are reused and which run; ``failed_iterations_only``: a loop
    ``from_step`` runs only its iterations that did not complete)."""

    workload: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    resource_kind: str | None = None
    from_step: str | None = None
    dry_run: bool = False
    failed_iterations_only: bool = False


class ExecutionStatus(msgspec.Struct, kw_only=True):
    """``GET /api/executions/{id}/status``. Upstream's flags: a cancelled execution is
    ``completed`` and not ``failed``; ``status`` is the suite's own word for it."""

    execution_id: str
    status: str
    current_step: str | None
    completed_steps: list[str]
    failed: bool
    completed: bool
    completion_inferred: bool = False
    variables: dict[str, Any]
    start_time: str | None
    end_time: str | None
    duration_seconds: float | None
    duration_human: str | None
    error: str | None = None
    result: Any = None


class ExecutionEntry(msgspec.Struct, kw_only=True):
    """One row of ``GET /api/executions?page=&page_size=``."""

    execution_id: str
    catalog_id: str
    path: str
    version: int
    status: str
    start_time: str | None
    end_time: str | None
    duration_seconds: float | None
    duration_human: str | None
    progress: int
    result: Any
    error: str | None
    parent_execution_id: str | None
    #: the suite's own: the execution a rerun from a step restarted
    rerun_of: str | None = None


class WorkerPool(msgspec.Struct, kw_only=True):
    """A registered worker as upstream lists its runtimes: ``runtime`` names its pool."""

    name: str
    runtime: dict[str, Any]
    status: str
    capacity: int
    labels: dict[str, Any]
    heartbeat: str | None
    created_at: str | None
    updated_at: str | None


class WorkerPools(msgspec.Struct, kw_only=True):
    items: list[WorkerPool]
    count: int
    runtime: str | None = None
    status: str | None = None


class KeychainCatalogList(msgspec.Struct, kw_only=True):
    """``GET /api/keychain/catalog/{catalog_id}``: the global entries that playbook may use."""

    status: str
    catalog_id: str
    entries: list[dict[str, Any]]
    count: int
