"""One orchestrator call: a working copy of the state plus the events and commands it emits.

Tokens flow from step to step through a queue; a step more than one step routes to (a
join) holds its tokens until no live step can still reach it, then runs once with their
args merged. A loop step issues one command per item (all at once, up to
``max_in_flight``, or one after the other) and completes when every item has reported.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from noetl_common import CommandSpec, TaskError, pool_for
from noetl_common.templating import TemplateLimits

from ..dsl import Arc, Playbook, Step
from ._failure import StepFailure, failure_message
from ._graph import graph_of, out_arcs
from ._state import Decision, ExecutionState, InFlight, Join, LoopRun, RoutedFailure
from ._templates import (
    command_context,
    condition_holds,
    done_scope,
    error_scope,
    loop_limit,
    render_field,
    template_names,
)
from ._types import CommandDraft, CommandOutcome, EventDraft

# Route-through steps (no tool) can form a cycle that never issues a command; stop it.
_MAX_ENTRIES_PER_DECISION = 10_000


class Run:
    """The working state of one call; :meth:`decision` is what the call returns."""

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

    # -- templates ------------------------------------------------------------------------

    def names(
        self, args: dict[str, Any], *, iterator: str | None = None, item: Any = None, index: int | None = None
    ) -> dict[str, Any]:
        return template_names(self.playbook, self.state, args, iterator=iterator, item=item, index=index)

    def _render(self, step: str, what: str, value: Any, names: dict[str, Any]) -> Any:
        return render_field(step, what, value, names, self.limits)

    def _holds(self, step: str, what: str, condition: str | None, names: dict[str, Any]) -> bool:
        return condition_holds(step, what, condition, names, self.limits)

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
        live = live_steps(self.state) | set(self.state.joins)
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
            raise StepFailure(name, f"step {name!r}: routing loops without running any tool")
        step = self.playbook.step(name)
        state = self.state
        state.runs[name] = state.runs.get(name, 0) + 1
        if not self._holds(name, "when", step.when, self.names(args)):
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
        inputs = self._render(step.name, "args", step.args, self.names(args, **binding))
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
                    context=command_context(self.playbook, step, self.names(spec_args, **binding)),
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
        items = self._render(step.name, "loop.in", step.loop.items, self.names(args))
        if items is None:
            items = []
        if not isinstance(items, list):
            raise StepFailure(
                step.name, f"step {step.name!r}: loop.in must render to a list, got {type(items).__name__}"
            )
        limit = loop_limit(step.name, step.loop.max_in_flight, self.names(args), self.limits)
        self.state.loops[step.name] = LoopRun(
            items=items, args=args, results=[None] * len(items), limit=limit
        )
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
            self.complete(step, run.args, {"results": run.results}, ran=True, event="loop.done")
            return
        limit = 1 if step.loop.mode == "sequential" else (run.limit or len(run.items))
        while run.next_index < len(run.items) and run.next_index - run.done < limit:
            self.issue(step, run.args, iteration=run.next_index)
            run.next_index += 1

    def complete(
        self, step: Step, args: dict[str, Any], result: Any, *, ran: bool, event: str = "call.done"
    ) -> None:
        """A step run finished: record its result, apply its ``set``, then route."""
        previous = self.state.last_step
        if ran:
            self.state.results[step.name] = result
            self.state.last_step = step.name
        if step.set:
            values = self._render(step.name, "set", step.set, self.names(args))
            self.patch(step.name, values, "step.set")
        fired = self.route(step, args, done_scope(step.name, event if ran else "step.exit", result))
        if not fired and step.next is not None and step.next.on_no_match == "quiet":
            self.state.last_step = previous  # a quiet dead end is not the run's end

    def recover(self, step: Step, args: dict[str, Any], outcome: CommandOutcome, message: str) -> None:
        """A failed call of a step whose arcs route errors: fire the arcs that hold with
        ``event`` (``call.error``), ``output`` and ``error`` in scope. None holds: the step fails
        the execution as before. Some do: the step's result is ``{status: error, error}``, the
        execution goes on along them and ends FAILED with this error once they are done."""
        scope = error_scope(step.name, (outcome.error or TaskError()).scope())
        if not self.route(step, args, scope, failed=True):
            raise StepFailure(step.name, message)
        self.state.results[step.name] = scope[step.name]
        self.state.last_step = step.name
        if self.state.failure is None:
            self.state.failure = RoutedFailure(step=step.name, error=message)

    def route(
        self, step: Step, args: dict[str, Any], scope: dict[str, Any], *, failed: bool = False
    ) -> list[str]:
        """Fire the arcs that hold over the step's names plus ``scope`` (``event``, ``output``
        ...); returns the steps routed to (none fired after a failure delivers nothing)."""
        arcs = out_arcs(self.playbook, step)
        mode = step.next.mode if step.next is not None else "exclusive"
        names = {**self.names(args), **scope}
        fired: list[tuple[int, Arc]] = []
        for i, arc in enumerate(arcs):
            if self._holds(step.name, f"next[{i}].when", arc.when, names):
                fired.append((i, arc))
                if mode == "exclusive":
                    break
        # Every fired arc reads the same snapshot, so an earlier arc's `set` cannot steer a later one.
        deliveries = [
            (arc, self._render(step.name, f"next[{i}]", {"args": arc.args, "set": arc.set}, names))
            for i, arc in fired
        ]
        targets = [arc.step for _, arc in fired]
        if failed and not fired:
            return targets  # the caller fails the step, as a step without such arcs does
        after = {"after": "call.error"} if failed else {}
        implicit = not failed and step.next is None and bool(arcs)
        self.emit("next.evaluated", step.name, mode=mode, fired=targets, implicit=implicit, **after)
        for arc, rendered in deliveries:
            self.patch(step.name, rendered["set"], f"arc:{step.name}->{arc.step}")
            self.deliver(arc.step, step.name, rendered["args"])
        return targets

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
            message = failure_message(step.name, flight.iteration, outcome.error)
            # only a call's own error routes (a worker's, which says its kind), as upstream routes
            # on call.error; a failure the control plane imposes (dead letter, sweeper) ends the run
            called = outcome.error is not None and outcome.error.category is not None
            if called and flight.iteration is None and step.next is not None and step.next.after_error:
                self.recover(step, flight.args, outcome, message)
                return
            raise StepFailure(step.name, message)
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
        """Complete the execution once nothing is left to run, after entering its final step."""
        state = self.state
        if state.status == "RUNNING" and not state.in_flight and not state.joins and not state.loops:
            if state.failure is not None:
                # a routed error still fails the run, once it is idle; no final step after it
                self.fail(state.failure.step, state.failure.error)
                return
            final = self.playbook.final_step
            if final is not None and not state.runs.get(final):
                self.enqueue(final, {})
                self.drain()
                self.finish_if_idle()
                return
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
        abandoned = sorted(live_steps(state))
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


def live_steps(state: ExecutionState) -> set[str]:
    """Steps with a command issued and unreported (loop iterations included)."""
    live = {flight.step for flight in state.in_flight.values()}
    live.update(name for name, run in state.loops.items() if run.pending)
    return live
