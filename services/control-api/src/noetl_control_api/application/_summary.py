"""An execution's summary for the run inspector: its steps, command attempts (a loop collapsed
into one row per run), the arcs that fired, its children and its error, folded from narrow
event rows on the server so a page never downloads thousands of raw events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from noetl_common import scrub
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound
from ._playbooks import PlaybookCache
from ._summary_views import Arc, Bar, ChildRef, ErrorView, ExecutionSummary, GraphStep

#: most events one summary folds (a 1,000-item loop records ~5,000); past it ``events_cut``
MAX_SUMMARY_EVENTS = 200_000
#: most child executions listed
MAX_CHILDREN = 1000
#: most restarts of an execution listed
MAX_RERUNS = 100
#: a step result up to this many JSON characters is shown whole, a larger one by its head
WHOLE_RESULT_CHARS = 16_384
HEAD_ITEMS = 20

_TERMINAL_EVENTS = ("playbook.completed", "playbook.failed", "playbook.cancelled")
_END_TYPES = {"command.completed": "COMPLETED", "command.failed": "FAILED", "command.cancelled": "CANCELLED"}


@dataclass
class _Attempt:
    step: str
    command_id: int
    attempt: int
    iteration: int | None
    issued_at: datetime | None
    start: datetime | None = None
    end: datetime | None = None
    status: str = "PENDING"
    worker_id: str | None = None


@dataclass
class _Step:
    status: str = "NOT_REACHED"
    runs: int = 0
    started_at: datetime | None = None
    ended_at: datetime | None = None
    loop_count: int | None = None
    args: Any = None
    error: Any = None
    reused: bool = False
    commands: list[int] = field(default_factory=list)


def _ref(child: store.summary.Child) -> ChildRef:
    return ChildRef(
        execution_id=str(child.execution_id), path=child.path, status=child.status, created_at=child.created_at
    )


class _Fold:
    """Walks the events once, in id order."""

    def __init__(self) -> None:
        self.steps: dict[str, _Step] = {}
        self.attempts: dict[tuple[int, int], _Attempt] = {}
        self.issued: dict[int, tuple[str, int | None, datetime]] = {}
        self.fired: dict[tuple[str, str], int] = {}
        self.error: ErrorView | None = None

    def step(self, name: str) -> _Step:
        return self.steps.setdefault(name, _Step())

    def add(self, e: store.summary.StepEvent) -> None:
        name = e.step
        if e.event_type == "playbook.failed" or e.event_type == "playbook.cancelled":
            message = e.error if isinstance(e.error, str) else str(e.error or e.event_type)
            self.error = ErrorView(message=message, step=name)
        if name is None:
            return
        step = self.step(name)
        if e.event_type == "step.enter":
            step.runs += 1
            step.args = e.args
            step.status = "SKIPPED" if e.status == "SKIPPED" else "RUNNING"
            step.started_at = step.started_at or e.at
            step.ended_at = e.at if e.status == "SKIPPED" else step.ended_at
        elif e.event_type == "step.reused":  # a restart took this outcome from the earlier run
            step.reused = True
            step.started_at = step.started_at or e.at
            step.ended_at = e.at
            if step.status in ("NOT_REACHED", "RUNNING"):
                step.status = "REUSED"
        elif e.event_type == "loop.started":
            step.loop_count = (step.loop_count or 0) + (e.count or 0)
        elif e.event_type == "command.issued" and e.command_id is not None:
            self.issued[e.command_id] = (name, e.iteration, e.at)
            step.commands.append(e.command_id)
        elif e.command_id is not None and e.event_type in ("command.claimed", "command.started"):
            self._attempt(e, name).start = self._attempt(e, name).start or e.at
            self._attempt(e, name).status = "RUNNING"
            self._attempt(e, name).worker_id = e.worker_id
        elif e.command_id is not None and e.event_type in _END_TYPES:
            attempt = self._attempt(e, name)
            attempt.end, attempt.status = e.at, _END_TYPES[e.event_type]
            step.ended_at = e.at
            if e.event_type == "command.failed":
                step.error = e.error
        elif e.event_type == "next.evaluated":
            for target in e.fired or ():
                self.fired[(name, target)] = self.fired.get((name, target), 0) + 1
            step.ended_at = step.ended_at or e.at
            if step.status == "RUNNING":
                step.status = "COMPLETED"
        elif e.event_type == "playbook.failed" and step.status == "RUNNING":
            step.status = "FAILED"

    def _attempt(self, e: store.summary.StepEvent, name: str) -> _Attempt:
        assert e.command_id is not None
        key = (e.command_id, e.attempt or 1)
        found = self.attempts.get(key)
        if found is None:
            _, iteration, issued_at = self.issued.get(e.command_id, (name, None, None))
            found = _Attempt(name, e.command_id, e.attempt or 1, iteration, issued_at)
            self.attempts[key] = found
        return found


def _when(attempt: _Attempt) -> tuple[float, int, int]:
    at = attempt.issued_at or attempt.start
    return (at.timestamp() if at is not None else float("inf"), attempt.command_id, attempt.attempt)


def _finals(fold: _Fold, name: str) -> dict[int, str]:
    """command id → the status of its last attempt, for the commands of step ``name``."""
    finals: dict[int, tuple[int, str]] = {}
    for a in fold.attempts.values():
        if a.step == name and a.attempt >= finals.get(a.command_id, (0, ""))[0]:
            finals[a.command_id] = (a.attempt, a.status)
    return {k: v[1] for k, v in finals.items()}


def _bars(fold: _Fold, loops: set[str], children: list[store.summary.Child]) -> list[Bar]:
    bars: list[Bar] = []
    loop_rows: dict[str, Bar] = {}
    for attempt in sorted(fold.attempts.values(), key=_when):
        if attempt.step in loops:
            row = loop_rows.get(attempt.step)
            if row is None:
                row = Bar(step=attempt.step, label=attempt.step, status="RUNNING", start=attempt.start,
                          end=attempt.end, issued_at=attempt.issued_at, count=0, attempts=0)
                loop_rows[attempt.step] = row
                bars.append(row)
            row.attempts += 1
            row.start = min((t for t in (row.start, attempt.start) if t), default=None)
            row.end = max((t for t in (row.end, attempt.end) if t), default=None)
            continue
        label = attempt.step if attempt.attempt == 1 else f"{attempt.step} (attempt {attempt.attempt})"
        bars.append(Bar(step=attempt.step, label=label, status=attempt.status, start=attempt.start,
                        end=attempt.end, issued_at=attempt.issued_at, command_id=str(attempt.command_id),
                        attempt=attempt.attempt, worker_id=attempt.worker_id))
    for name, row in loop_rows.items():
        finals = _finals(fold, name)
        row.count = fold.steps[name].loop_count or len(finals)
        row.done = sum(1 for s in finals.values() if s == "COMPLETED")
        row.failed = sum(1 for s in finals.values() if s == "FAILED")
        row.status = "FAILED" if row.failed else ("COMPLETED" if row.done >= (row.count or 0) else "RUNNING")
        row.label = f"{name} x{row.count}"
    for bar in bars:  # a child execution belongs to the attempt during which it was created
        bar.children = [
            _ref(c) for c in children
            if bar.start is not None and bar.start <= c.created_at and (bar.end is None or c.created_at <= bar.end)
        ][:50]
    return bars


class SummaryService:
    """``GET /api/executions/{id}/summary``."""

    def __init__(self, pool: AsyncConnectionPool, playbooks: PlaybookCache) -> None:
        self._pool = pool
        self._playbooks = playbooks

    async def summary(self, execution_id: int) -> ExecutionSummary:
        return await summarize(self._pool, self._playbooks, execution_id)


async def summarize(pool: AsyncConnectionPool, playbooks: PlaybookCache, execution_id: int) -> ExecutionSummary:
    """Read the execution's narrow events, fold them, and join them with its playbook."""
    async with pool.connection() as conn:
        row = await store.executions.get_view(conn, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        events = await store.summary.step_events(conn, execution_id, MAX_SUMMARY_EVENTS)
        previews = await store.summary.result_previews(conn, execution_id, WHOLE_RESULT_CHARS, HEAD_ITEMS)
        kids = await store.summary.children(conn, execution_id, MAX_CHILDREN)
        restarts = await store.summary.reruns(conn, execution_id, MAX_RERUNS)
        entry = await store.catalog.get(conn, row.path, row.version)
        fold = _Fold()
        for event in events:
            fold.add(event)
        last_commands = [s.commands[-1] for s in fold.steps.values() if s.commands]
        tasks = await store.summary.command_tasks(conn, last_commands)
    playbook = playbooks.get(entry.path, entry.version, entry.content) if entry is not None else None
    order = [s.name for s in playbook.steps] if playbook is not None else []
    order += [name for name in fold.steps if name not in order]
    defined = {s.name: s for s in playbook.steps} if playbook is not None else {}
    loops = {name for name, s in defined.items() if s.loop is not None}
    steps: list[GraphStep] = []
    for name in order:
        seen = fold.steps.get(name, _Step())
        attempts = [a for a in fold.attempts.values() if a.step == name]
        finals = _finals(fold, name)
        status = seen.status
        if "FAILED" in finals.values():
            status = "FAILED"
        elif status == "RUNNING" and row.status != "RUNNING":
            status = "CANCELLED"
        preview, chars = previews.get(name, (None, 0))
        spec = defined.get(name)
        steps.append(GraphStep(
            name=name,
            tools=[t.kind for t in spec.tasks] if spec is not None else [],
            loop=name in loops,
            status=status,
            runs=seen.runs,
            attempts=len(attempts),
            started_at=seen.started_at,
            ended_at=seen.ended_at,
            loop_count=seen.loop_count,
            failed_iterations=sum(1 for v in finals.values() if v == "FAILED") if name in loops else 0,
            input=scrub({"args": seen.args, "tasks": tasks.get(seen.commands[-1]) if seen.commands else None}),
            output=_bounded(scrub(preview)),
            output_chars=chars,
            output_cut=chars > WHOLE_RESULT_CHARS,
            error=scrub(seen.error),
            reused=seen.reused,
        ))
    arcs: list[Arc] = []
    for spec in defined.values():
        for arc in spec.next.arcs if spec.next is not None else ():
            arcs.append(Arc(source=spec.name, target=arc.step, when=arc.when,
                            fired=fold.fired.get((spec.name, arc.step), 0)))
    written = {(a.source, a.target) for a in arcs}
    arcs += [Arc(source=s, target=t, when=None, fired=n, implicit=True)
             for (s, t), n in fold.fired.items() if (s, t) not in written]
    error = fold.error
    if error is None and row.error is not None:
        error = ErrorView(message=row.error, step=None)
    return ExecutionSummary(
        execution_id=str(row.execution_id),
        path=row.path,
        version=row.version,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        parent_execution_id=None if row.parent_execution_id is None else str(row.parent_execution_id),
        rerun_of=None if row.rerun_of is None else str(row.rerun_of),
        reruns=[_ref(r) for r in restarts],
        error=None if error is None else ErrorView(message=scrub(error.message), step=error.step),
        steps=steps,
        arcs=arcs,
        bars=_bars(fold, loops, kids),
        children=[_ref(c) for c in kids],
        events=len(events),
        complete=any(e.event_type in _TERMINAL_EVENTS for e in events),
        events_cut=len(events) >= MAX_SUMMARY_EVENTS,
        last_event_id=str(events[-1].event_id) if events else None,
    )


def _bounded(value: Any) -> Any:
    """A scrubbed preview, cut to text when its head is still large (wide items)."""
    text = msgspec.json.encode(value)
    return value if len(text) <= 2 * WHOLE_RESULT_CHARS else text[: 2 * WHOLE_RESULT_CHARS].decode(errors="ignore")
