"""JetStream subjects, consumer names and pool routing (architecture.md §4)."""

from __future__ import annotations

from collections.abc import Iterable

POOLS = ("shared", "python", "system")
COMMANDS_STREAM = "NOETL_COMMANDS"
EVENTS_STREAM = "NOETL_EVENTS"
DLQ_STREAM = "NOETL_DLQ"
COMMAND_SUBJECT_PREFIX = "noetl.commands"
EVENT_SUBJECT_PREFIX = "noetl.events"
DLQ_SUBJECT_PREFIX = "noetl.dlq"

#: Filter subject of each pool's durable consumer; the filters never overlap.
POOL_FILTER_MAP: dict[str, str] = {pool: f"{COMMAND_SUBJECT_PREFIX}.{pool}.>" for pool in POOLS}


def pool_for(tool_kinds: Iterable[str], catalog_path: str) -> str:
    """Route a command to a pool: `agent` → python, `system_*` or `system/` paths → system."""
    kinds = list(tool_kinds)
    if catalog_path.startswith("system/") or any(k.startswith("system_") for k in kinds):
        return "system"
    if "agent" in kinds:
        return "python"
    return "shared"


def command_subject(pool: str, execution_id: int) -> str:
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}")
    return f"{COMMAND_SUBJECT_PREFIX}.{pool}.{execution_id}"


def consumer_name(pool: str) -> str:
    return f"noetl_worker_pool_{pool}"


def event_shard(execution_id: int, shard_count: int) -> int:
    return execution_id % max(1, shard_count)


def event_subject(execution_id: int, shard_count: int, tenant: str = "default", org: str = "default") -> str:
    return f"{EVENT_SUBJECT_PREFIX}.{tenant}.{org}.{execution_id}.{event_shard(execution_id, shard_count)}"


def event_shard_filter(shard: int) -> str:
    """Filter subject for projector replica `shard`."""
    return f"{EVENT_SUBJECT_PREFIX}.*.*.*.{shard}"


def dlq_subject(original_subject: str) -> str:
    return f"{DLQ_SUBJECT_PREFIX}.{original_subject}"


def outbox_dlq_subject(execution_id: int) -> str:
    """Where the publisher parks an outbox row that cannot be published."""
    return f"{DLQ_SUBJECT_PREFIX}.outbox.{execution_id}"
