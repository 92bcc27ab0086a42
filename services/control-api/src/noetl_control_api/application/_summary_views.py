"""The shape of ``GET /api/executions/{id}/summary``: what the run inspector draws, aggregated
on the server. Ids are strings (a Snowflake does not fit a JavaScript number)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class GraphStep(msgspec.Struct, kw_only=True):
    """A step of the playbook: its tool kinds, whether it loops, what it did in this run."""

    name: str
    tools: list[str]
    loop: bool
    status: str  # NOT_REACHED | RUNNING | COMPLETED | FAILED | SKIPPED | CANCELLED | REUSED
    runs: int
    attempts: int
    started_at: datetime | None = None
    ended_at: datetime | None = None
    loop_count: int | None = None
    failed_iterations: int = 0
    #: the step's args at its last entry and its tasks as issued (scrubbed)
    input: Any = None
    #: its stored result (scrubbed; only the first items of a large one: ``output_cut``)
    output: Any = None
    output_chars: int = 0
    output_cut: bool = False
    error: Any = None
    #: its outcome was taken from the execution this one restarts (``step.reused``)
    reused: bool = False


class Arc(msgspec.Struct, kw_only=True):
    source: str
    target: str
    when: str | None
    #: how many times a ``next.evaluated`` of ``source`` chose it
    fired: int
    #: chosen by the engine without being written in the playbook
    implicit: bool = False


class ChildRef(msgspec.Struct, kw_only=True):
    execution_id: str
    path: str
    status: str
    created_at: datetime


class Bar(msgspec.Struct, kw_only=True):
    """One Gantt row: one command attempt, or a whole loop run collapsed (``count`` iterations)."""

    step: str
    label: str
    status: str
    start: datetime | None
    end: datetime | None
    issued_at: datetime | None = None
    command_id: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    #: iterations of a collapsed loop row (None for a single command)
    count: int | None = None
    done: int = 0
    failed: int = 0
    attempts: int = 1
    children: list[ChildRef] = msgspec.field(default_factory=list)


class ErrorView(msgspec.Struct, kw_only=True):
    message: str
    step: str | None


class ExecutionSummary(msgspec.Struct, kw_only=True):
    execution_id: str
    path: str
    version: int
    status: str
    created_at: str | None
    updated_at: str | None
    parent_execution_id: str | None
    rerun_of: str | None
    #: the executions that restart this one from a step
    reruns: list[ChildRef]
    error: ErrorView | None
    steps: list[GraphStep]
    arcs: list[Arc]
    bars: list[Bar]
    children: list[ChildRef]
    events: int
    #: the log holds the execution's terminal event (a finished execution's events may still
    #: be on their way to the read model)
    complete: bool
    #: the summary read only the first NOETL_SUMMARY_MAX_EVENTS events
    events_cut: bool
    last_event_id: str | None
