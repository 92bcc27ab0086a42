"""The pure orchestrator: (playbook, state, incoming event) → new state, events, commands.

No I/O. Each public call copies the state it is given, so a caller that discards the
decision (a rolled-back transaction) still holds the old state untouched.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
from noetl_common import CommandSpec, pool_for
from noetl_common.templating import DEFAULT_LIMITS, TemplateError, TemplateLimits, evaluate, render

from ..dsl import Arc, Playbook, Step
from ._graph import graph_of, out_arcs
from ._state import Decision, ExecutionState, InFlight, Join, LoopRun
from ._types import CommandDraft, CommandOutcome, EventDraft

START = "start"
# Route-through steps (no tool) can form a cycle that never issues a command; stop it.
_MAX_ENTRIES_PER_DECISION = 10_000


class _StepFailure(Exception):
    """Ends the current decision: the step failed, and with it the playbook."""

    def __init__(self, step: str | None, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class _Run:
    """One orchestrator call: a working copy of the state plus what the call emits."""

    def __init__(self, playbook: Playbook, state: ExecutionState, limits: TemplateLimits) -> None:
        self.playbook = playbook
        self.state = state
        self.limits = limits
        self.graph = graph_of(playbook)
        self.events: list[EventDraft] = []
        self.commands: list[CommandDraft] = []
        self._queue: deque[tuple[str, str, dict[str, Any]]] = deque()
        self._entries = 0

    # -- results -------------------------------------------------------------------------

    def decision(self) -> Decision:
        state = self.state
        return Decision(
            state=state,
            events=self.events,
            commands=self.commands,
            status=state.status,
            result=state.result,
            error=state.error,
        )

    def emit(
        self, event_type: str, step: str | None = None, *, status: str | None = None, **context: Any
    ) -> None:
        self.events.append(
            EventDraft(event_type=event_type, step=step, status=status, context=context or None)
        )

    # -- template context ---------------------------------------------------------------

    def context(
        self, args: dict[str, Any], *, iterator: str | None = None, item: Any = None, index: int | None = None
    ) -> dict[str, Any]:
        """Every name a template may use; reserved names win over bare workload keys."""
        state = self.state
        names: dict[str, Any] = dict(state.workload)
        for step in self.playbook.steps:
            names[step.name] = state.results.get(step.name)
        names.update(
            workload=state.workload,
            ctx=state.ctx,
            vars=state.vars,
            execution_id=state.execution_id,
            args=args,
            input=args,
            iter={},
        )
        if iterator is not None:
            names["iter"] = {iterator: item, "index": index}
            names[iterator] = item
        return names

    def _render(self, step: str, what: str, value: Any, context: dict[str, Any]) -> Any:
        """Render one field of a step; a failure (a template over its budget too) fails the step."""
        try:
            return render(value, context, self.limits)
        except TemplateError as exc:
            raise _StepFailure(step, f"step {step!r}: {exc.at(what)}: {exc.message}") from exc

    def _holds(self, step: str, what: str, condition: str | None, context: dict[str, Any]) -> bool:
        if condition is None:
            return True
        try:
            return evaluate(condition, context, self.limits)
        except TemplateError as exc:
            raise _StepFailure(step, f"step {step!r}: {what}: {exc.message}") from exc

    # -- ctx / vars patches ---------------------------------------------------------------

    def patch(self, step: str, scoped: dict[str, Any] | None, source: str) -> None:
        """Apply ``{"ctx.k": v, "vars.k": v}`` writes and record them as one ``ctx.patched``."""
        if not scoped:
            return
        applied: dict[str, Any] = {}
        for key, value in scoped.items():
            scope, _, path = key.partition(".")
            if scope not in ("ctx", "vars") or not path:
                continue  # iter.* writes live and die inside one command's pipeline
            # Copy on write: commands issued earlier in this decision keep the ctx they saw.
            root = node = dict(getattr(self.state, scope))
            *parents, leaf = path.split(".")
            for part in parents:
                child = node.get(part)
                child = dict(child) if isinstance(child, dict) else {}
                node[part] = child
                node = child
            node[leaf] = value
            setattr(self.state, scope, root)
            applied[key] = value
        if applied:
            self.emit("ctx.patched", step, set=applied, source=source)

    # -- token flow -----------------------------------------------------------------------

    def enqueue(self, step: str, args: dict[str, Any], source: str = "") -> None:
        self._queue.append((step, source, args))

    def deliver(self, target: str, source: str, args: dict[str, Any]) -> None:
        if self.graph.is_join(target):
            self._hold(target, source, args)
        else:
            self.enqueue(target, args, source)

    def _hold(self, target: str, source: str, args: dict[str, Any]) -> None:
        join = self.state.joins.setdefault(target, Join())
        join.arrivals[source] = {**join.arrivals.get(source, {}), **args}

    def drain(self) -> None:
        """Run every runnable token, releasing barriers whose live upstream is done."""
        while True:
            while self._queue:
                step, source, args = self._queue.popleft()
                if step in self.state.loops:
                    # A loop still iterating cannot take a second token yet; it waits like a join.
                    self._hold(step, source, args)
                else:
                    self.enter(step, args)
            released = self._release_ready_joins()
            if not released and self.state.joins and not self.busy():
                # Two barriers waiting on each other: nothing else can move, so let the earliest go.
                self._release(min(self.state.joins, key=self.graph.order.__getitem__))
                released = True
            if not released:
                return

    def busy(self) -> bool:
        """Whether any command (a step's or a loop iteration's) is issued and unreported."""
        return bool(self.state.in_flight) or any(run.pending for run in self.state.loops.values())

    def _release_ready_joins(self) -> bool:
        live = _live_steps(self.state) | set(self.state.joins)
        for target in sorted(self.state.joins, key=self.graph.order.__getitem__):
            if target in self.state.loops:
                continue
            if not any(source != target and self.graph.reaches(source, target) for source in live):
                self._release(target)
                return True
        return False

    def _release(self, target: str) -> None:
        join = self.state.joins.pop(target)
        merged: dict[str, Any] = {}
        for source in sorted(join.arrivals, key=lambda s: self.graph.order.get(s, -1)):
            merged.update(join.arrivals[source])
        self.enqueue(target, merged)

    # -- steps ----------------------------------------------------------------------------

    def enter(self, name: str, args: dict[str, Any]) -> None:
        self._entries += 1
        if self._entries > _MAX_ENTRIES_PER_DECISION:
            raise _StepFailure(name, f"step {name!r}: routing loops without running any tool")
        step = self.playbook.step(name)
        state = self.state
        state.runs[name] = state.runs.get(name, 0) + 1
        if not self._holds(name, "when", step.when, self.context(args)):
            self.emit(
                "step.enter", name, status="SKIPPED", args=args, run=state.runs[name], reason="when is false"
            )
            return
        self.emit("step.enter", name, status="RUNNING", args=args, run=state.runs[name])
        if step.loop is not None and step.has_tool:
            self.start_loop(step, args)
        elif step.has_tool:
            self.issue(step, args)
        else:
            self.complete(step, args, None, ran=False)

    def issue(self, step: Step, args: dict[str, Any], *, iteration: int | None = None) -> None:
        binding: dict[str, Any] = {}
        if step.loop is not None and iteration is not None:
            item = self.state.loops[step.name].items[iteration]
            binding = {"iterator": step.loop.iterator, "item": item, "index": iteration}
        inputs = self._render(step.name, "args", step.args, self.context(args, **binding))
        spec_args = {**args, **inputs}
        state = self.state
        state.seq += 1
        meta: dict[str, Any] = {"seq": state.seq, "step": step.name, "run": state.runs.get(step.name, 1)}
        if iteration is not None:
            meta["iteration"] = iteration
        kinds = [task.kind for task in step.tasks]
        self.commands.append(
            CommandDraft(
                step=step.name,
                pool=pool_for(kinds, state.catalog_path),
                tool_kind=kinds[0],
                spec=CommandSpec(
                    tasks=step.tasks,
                    args=spec_args,
                    context=self.context(spec_args, **binding),
                    timeout_seconds=step.timeout,
                ),
                meta=meta,
            )
        )
        if iteration is not None:
            state.loops[step.name].pending[str(state.seq)] = iteration
        else:
            state.in_flight[str(state.seq)] = InFlight(step=step.name, args=args)

    def start_loop(self, step: Step, args: dict[str, Any]) -> None:
        assert step.loop is not None
        items = self._render(step.name, "loop.in", step.loop.items, self.context(args))
        if items is None:
            items = []
        if not isinstance(items, list):
            raise _StepFailure(
                step.name, f"step {step.name!r}: loop.in must render to a list, got {type(items).__name__}"
            )
        self.state.loops[step.name] = LoopRun(items=items, args=args, results=[None] * len(items))
        self.emit(
            "loop.started", step.name, count=len(items), iterator=step.loop.iterator, mode=step.loop.mode
        )
        self.fill_loop(step)

    def fill_loop(self, step: Step) -> None:
        assert step.loop is not None
        run = self.state.loops[step.name]
        if run.done == len(run.items):
            del self.state.loops[step.name]
            self.emit("loop.done", step.name, count=len(run.items))
            self.complete(step, run.args, {"results": run.results}, ran=True)
            return
        limit = 1 if step.loop.mode == "sequential" else (step.loop.max_in_flight or len(run.items))
        while run.next_index < len(run.items) and run.next_index - run.done < limit:
            self.issue(step, run.args, iteration=run.next_index)
            run.next_index += 1

    def complete(self, step: Step, args: dict[str, Any], result: Any, *, ran: bool) -> None:
        """A step run finished: record its result, apply its ``set``, then route."""
        if ran:
            self.state.results[step.name] = result
            self.state.last_step = step.name
        if step.set:
            values = self._render(step.name, "set", step.set, self.context(args))
            self.patch(step.name, values, "step.set")
        self.route(step, args)

    def route(self, step: Step, args: dict[str, Any]) -> None:
        arcs = out_arcs(self.playbook, step)
        mode = step.next.mode if step.next is not None else "exclusive"
        context = self.context(args)
        fired: list[tuple[int, Arc]] = []
        for i, arc in enumerate(arcs):
            if self._holds(step.name, f"next[{i}].when", arc.when, context):
                fired.append((i, arc))
                if mode == "exclusive":
                    break
        # Every fired arc reads the same snapshot, so an earlier arc's `set` cannot steer a later one.
        deliveries = [
            (arc, self._render(step.name, f"next[{i}]", {"args": arc.args, "set": arc.set}, context))
            for i, arc in fired
        ]
        self.emit(
            "next.evaluated",
            step.name,
            mode=mode,
            fired=[arc.step for _, arc in fired],
            implicit=step.next is None and bool(arcs),
        )
        for arc, rendered in deliveries:
            self.patch(step.name, rendered["set"], f"arc:{step.name}->{arc.step}")
            self.deliver(arc.step, step.name, rendered["args"])

    # -- outcomes ---------------------------------------------------------------------------

    def on_outcome(self, outcome: CommandOutcome) -> None:
        key = str(outcome.meta.get("seq"))
        if "seq" not in outcome.meta:
            # A report without our meta: match the oldest command of that step (and iteration).
            key = next(
                (
                    k
                    for k, f in self.state.in_flight.items()
                    if f.step == outcome.step and f.iteration == outcome.meta.get("iteration")
                ),
                key,
            )
        flight = self.state.in_flight.pop(key, None)
        if flight is None:
            flight = self._pending_iteration(outcome, key)
        if flight is None:
            return  # a duplicate or unknown report; the command already counted
        step = self.playbook.step(flight.step)
        if outcome.status != "completed":
            raise _StepFailure(step.name, _failure_message(step.name, flight.iteration, outcome.error))
        self.patch(step.name, outcome.set, "rules")
        if flight.iteration is None:
            self.complete(step, flight.args, outcome.result, ran=True)
            return
        run = self.state.loops[step.name]
        run.results[flight.iteration] = outcome.result
        run.done += 1
        self.fill_loop(step)

    def _pending_iteration(self, outcome: CommandOutcome, key: str) -> InFlight | None:
        """The loop iteration an outcome reports, taken off its loop's ``pending``."""
        run = self.state.loops.get(outcome.step)
        if run is None:
            return None
        if "seq" not in outcome.meta:
            iteration = outcome.meta.get("iteration")
            key = next((k for k, i in run.pending.items() if i == iteration), key)
        index = run.pending.pop(key, None)
        return None if index is None else InFlight(step=outcome.step, args=run.args, iteration=index)

    def finish_if_idle(self) -> None:
        state = self.state
        if state.status == "RUNNING" and not state.in_flight and not state.joins and not state.loops:
            state.status = "COMPLETED"
            state.result = state.results.get(state.last_step) if state.last_step else None
            self.emit(
                "playbook.completed", status="COMPLETED", result=state.result, last_step=state.last_step
            )

    def fail(self, step: str | None, message: str) -> None:
        state = self.state
        issued = {str(command.meta["seq"]) for command in self.commands}
        self.commands = []  # a failed decision issues nothing, not even what it drafted before failing
        state.in_flight = {k: v for k, v in state.in_flight.items() if k not in issued}
        for run in state.loops.values():
            run.pending = {k: v for k, v in run.pending.items() if k not in issued}
        abandoned = sorted(_live_steps(state))
        state.status = "FAILED"
        state.error = message
        state.in_flight, state.joins, state.loops = {}, {}, {}
        self.events.append(
            EventDraft(
                event_type="playbook.failed",
                step=step,
                status="FAILED",
                context={"error": message, "abandoned_steps": abandoned},
            )
        )


def _live_steps(state: ExecutionState) -> set[str]:
    """Steps with a command issued and unreported (loop iterations included)."""
    live = {flight.step for flight in state.in_flight.values()}
    live.update(name for name, run in state.loops.items() if run.pending)
    return live


def _failure_message(step: str, iteration: int | None, error: dict[str, Any] | None) -> str:
    error = error or {}
    where = f"step {step!r}" + (f" iteration {iteration}" if iteration is not None else "")
    task = f" (task {error['task']!r})" if error.get("task") else ""
    kind = f"{error['type']}: " if error.get("type") else ""
    return f"{where} failed{task}: {kind}{error.get('message', 'no error message')}"


def _copy(state: ExecutionState) -> ExecutionState:
    """A deep copy through JSON (the state's own format), far faster than copy.deepcopy."""
    return msgspec.json.decode(msgspec.json.encode(state), type=ExecutionState)


def _working_copy(playbook: Playbook, state: ExecutionState, limits: TemplateLimits) -> _Run | Decision:
    """A run over a copy of ``state``, or a FAILED decision if the state cannot be copied."""
    try:
        return _Run(playbook, _copy(state), limits)
    except Exception as exc:
        failed = msgspec.structs.replace(
            state, status="FAILED", error=f"orchestrator error: state is not JSON data: {exc}"
        )
        event = EventDraft(event_type="playbook.failed", status="FAILED", context={"error": failed.error})
        return Decision(state=failed, events=[event], commands=[], status="FAILED", error=failed.error)


def _guarded(run: _Run, action: Any) -> Decision:
    try:
        action()
        run.drain()
        run.finish_if_idle()
    except _StepFailure as exc:
        run.fail(exc.step, exc.message)
    except Exception as exc:  # the store must always get a decision, never a traceback
        run.fail(None, f"orchestrator error: {type(exc).__name__}: {exc}")
    return run.decision()


def start_execution(
    playbook: Playbook,
    *,
    execution_id: int,
    payload: dict[str, Any],
    catalog_path: str,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> Decision:
    """Begin an execution: merge ``payload`` over the workload and enter ``start``.

    ``limits``: the budget of each template the decision renders (each field of a step).
    """
    if not isinstance(payload, dict):
        payload = {}
        error = "the execute payload must be a JSON object"
    else:
        error = None
    workload = {**playbook.workload, **payload}
    state = ExecutionState(execution_id=execution_id, catalog_path=catalog_path, workload=workload)
    run = _Run(playbook, state, limits)
    if error is not None:
        run.fail(None, error)
        return run.decision()
    run.emit(
        "playbook.started", status="RUNNING", name=playbook.name, catalog_path=catalog_path, workload=workload
    )
    return _guarded(run, lambda: run.enqueue(START, {}))


def apply_outcome(
    playbook: Playbook,
    state: ExecutionState,
    outcome: CommandOutcome,
    *,
    owned: bool = False,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> Decision:
    """Advance on a command's terminal report; duplicates and reports after the end are no-ops.

    ``owned``: the caller hands over a state nobody else holds (just decoded from the store,
    or a replay's previous step), so it is worked on in place instead of copied first; a
    large loop's state is copied 1,000 times otherwise.
    """
    run = _Run(playbook, state, limits) if owned else _working_copy(playbook, state, limits)
    if isinstance(run, Decision) or run.state.status != "RUNNING":
        return run if isinstance(run, Decision) else run.decision()
    return _guarded(run, lambda: run.on_outcome(outcome))


def cancel_execution(playbook: Playbook, state: ExecutionState, reason: str) -> Decision:
    """Cancel on request: no new commands; in-flight ones are abandoned (the store cancels them)."""
    run = _working_copy(playbook, state, DEFAULT_LIMITS)  # renders nothing
    if isinstance(run, Decision):
        return run
    current = run.state
    if current.status != "RUNNING":
        return run.decision()
    abandoned = sorted(_live_steps(current))
    current.status = "CANCELLED"
    current.error = reason
    current.in_flight, current.joins, current.loops = {}, {}, {}
    run.emit("playbook.cancelled", status="CANCELLED", reason=reason, abandoned_steps=abandoned)
    return run.decision()


def fail_execution(state: ExecutionState, error: str, *, cause: str, step: str | None = None) -> Decision:
    """Fail on the control plane's word, not a step's: a decision whose events are too large
    to record, an event that can never be published. Applies whatever status ``state``
    reached (the caller decides whether the execution may still be failed): the decision
    that led there is dropped, so its result goes too. ``playbook.failed`` carries ``cause``,
    which tells a replay to apply the same failure (the orchestrator alone cannot reach it).
    """
    abandoned = sorted(_live_steps(state))
    # fields are replaced, never changed in place: a shallow copy leaves ``state`` intact
    current = msgspec.structs.replace(
        state, status="FAILED", error=error, result=None, in_flight={}, joins={}, loops={}
    )
    event = EventDraft(
        event_type="playbook.failed",
        step=step,
        status="FAILED",
        context={"error": error, "abandoned_steps": abandoned, "cause": cause},
    )
    return Decision(state=current, events=[event], commands=[], status="FAILED", error=error)


class ImposedFailure(msgspec.Struct, kw_only=True):
    """A failure the control plane recorded (``playbook.failed`` with a ``cause``), for replay."""

    error: str
    cause: str
    step: str | None = None


def replay(
    playbook: Playbook,
    *,
    execution_id: int,
    payload: dict[str, Any],
    catalog_path: str,
    outcomes: Iterable[CommandOutcome],
    cancel_reason: str | None = None,
    failure: ImposedFailure | None = None,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> ExecutionState:
    """Rebuild an execution's state from its recorded inputs, in the order they were applied.

    The orchestrator is deterministic, so folding the same outcomes (their ``meta`` as
    issued) over ``start_execution`` gives the stored state back; a difference means the
    event log and the state tables disagree. The one exception is a template refused for
    time alone (``limits.max_seconds``): on a faster or slower machine it may not be.
    """
    state = start_execution(
        playbook, execution_id=execution_id, payload=payload, catalog_path=catalog_path, limits=limits
    ).state
    for outcome in outcomes:
        state = apply_outcome(playbook, state, outcome, owned=True, limits=limits).state
    if cancel_reason is not None:
        state = cancel_execution(playbook, state, cancel_reason).state
    elif failure is not None:
        state = fail_execution(state, failure.error, cause=failure.cause, step=failure.step).state
    return state
