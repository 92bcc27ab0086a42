"""Request and reply bodies of the control-api's own routes (docs/contracts.md).

The bodies shared with other services live in ``noetl_common``; these are the ones only
clients of the public API see.
"""

from __future__ import annotations

from typing import Any

import msgspec


class RegisterRequest(msgspec.Struct, kw_only=True):
    #: the playbook's YAML, as text or base64-encoded (what the upstream CLI sends)
    content: str
    #: upstream's resource kind; only playbooks live in this catalog
    resource_type: str = "Playbook"


class RegisterReply(msgspec.Struct, kw_only=True):
    path: str
    version: int
    name: str
    kind: str = "Playbook"
    catalog_id: str = ""
    status: str = "success"
    message: str = ""


class CatalogListEntry(msgspec.Struct, kw_only=True):
    path: str
    version: int
    name: str
    created_at: str | None
    catalog_id: str = ""


class CatalogList(msgspec.Struct, kw_only=True):
    entries: list[CatalogListEntry]


class ResourceRequest(msgspec.Struct, kw_only=True):
    """``path`` (and ``version``, a number or ``"latest"``), or ``catalog_id``."""

    path: str | None = None
    version: int | str | None = None
    catalog_id: int | str | None = None


class ResourceReply(msgspec.Struct, kw_only=True):
    path: str
    version: int
    name: str
    content: str
    created_at: str | None
    catalog_id: str = ""
    kind: str = "Playbook"


class ExecuteRequest(msgspec.Struct, kw_only=True):
    """``path`` (and ``version``), or ``catalog_id``; ``workload`` is upstream's name for
    ``payload``; ``resource_kind`` may only name a playbook."""

    path: str | None = None
    version: int | None = None
    payload: dict[str, Any] | None = None
    workload: dict[str, Any] | None = None
    catalog_id: int | str | None = None
    resource_kind: str | None = None
    parent_execution_id: int | str | None = None
    # pools follow the tool kinds and the catalog path; an override is only accepted when it
    # names the pool the playbook runs on anyway, and "system" never for a non-system playbook
    execution_pool: str | None = None


class ExecuteReply(msgspec.Struct, kw_only=True):
    execution_id: int
    status: str
    path: str
    version: int


class ExecutionView(msgspec.Struct, kw_only=True):
    execution_id: int
    path: str
    version: int
    status: str
    result: Any
    error: str | None
    ctx: dict[str, Any]
    results: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    parent_execution_id: int | None
    #: the execution this one restarts from a step, as a string (``POST .../rerun`` with ``from_step``)
    rerun_of: str | None = None


class ExecutionList(msgspec.Struct, kw_only=True):
    executions: list[ExecutionView]
    #: pass as ``before`` for the next page; None when this page is the last
    next_cursor: int | None = None


class CancelRequest(msgspec.Struct, kw_only=True):
    reason: str | None = None
    #: upstream's flag; running children are always cancelled with their parent
    cascade: bool = True


class CancelReply(ExecutionView, kw_only=True):
    """The execution after the cancel, and every execution the cancel ended (itself first)."""

    cancelled_executions: list[str]
    message: str


class CommandView(msgspec.Struct, kw_only=True):
    event_id: int
    command_id: int
    execution_id: int
    step: str
    status: str
    attempt: int
    worker_id: str | None
    pool: str
    tool_kind: str
    lease_expires_at: str | None
    started_at: str | None


class WorkerRef(msgspec.Struct, kw_only=True):
    worker_id: str


class PurgeRequest(msgspec.Struct, kw_only=True):
    """Retention settings of one sweep; an age left out skips that part. No age may be shorter
    than the server's retention policy; ``policy: true`` applies the policy's ages to all parts."""

    policy: bool = False
    outbox_published_older_than_seconds: float = 86_400.0
    #: terminal executions (and their events, commands, outbox rows, results) older than this
    executions_older_than_seconds: float | None = None
    #: read-model events of terminal executions older than this (the executions stay)
    events_older_than_seconds: float | None = None
    limit: int = 10_000


class PurgeReply(msgspec.Struct, kw_only=True):
    outbox_deleted: int
    executions_deleted: int = 0
    events_deleted: int = 0
    commands_deleted: int = 0
    results_deleted: int = 0
    #: keychain entries scoped to the purged executions
    keychain_deleted: int = 0
    #: objects the purged executions' plug-ins wrote (``executions/<execution_id>/...``)
    objects_deleted: int = 0
    step_logs_deleted: int = 0
