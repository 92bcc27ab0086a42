"""The summary's fold of narrow event rows: attempts, retries, a loop collapsed into one row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from noetl_control_api.application._summary import _bars, _Fold
from noetl_control_api.store import summary

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _event(n: int, event_type: str, step: str | None, **fields: Any) -> summary.StepEvent:
    base: dict[str, Any] = {
        "status": None, "command_id": None, "attempt": None, "iteration": None, "worker_id": None,
        "fired": None, "count": None, "error": None, "args": None,
    }
    return summary.StepEvent(event_id=n, event_type=event_type, step=step, at=T0 + timedelta(seconds=n),
                             **{**base, **fields})


def _command(n: int, step: str, command_id: int, outcome: str, attempt: int = 1, **fields: Any) -> list[summary.StepEvent]:
    events = [] if attempt > 1 else [_event(n, "command.issued", step, command_id=command_id, **fields)]
    return [
        *events,
        _event(n + 1, "command.started", step, command_id=command_id, attempt=attempt, worker_id="w1"),
        _event(n + 2, outcome, step, command_id=command_id, attempt=attempt,
               error={"message": "boom"} if outcome == "command.failed" else None),
    ]


def test_a_retried_step_has_a_bar_per_attempt_and_a_loop_one_row() -> None:
    events = [
        _event(1, "step.enter", "a", status="RUNNING", args={"x": 1}),
        *_command(2, "a", 100, "command.failed"),
        *_command(10, "a", 100, "command.completed", attempt=2),
        _event(20, "next.evaluated", "a", fired=["each"]),
        _event(21, "step.enter", "each", status="RUNNING"),
        _event(22, "loop.started", "each", count=3),
        *_command(30, "each", 201, "command.completed", iteration=0),
        *_command(40, "each", 202, "command.failed", iteration=1),
        *_command(50, "each", 203, "command.completed", iteration=2),
        *_command(60, "each", 202, "command.completed", attempt=2),
        _event(70, "next.evaluated", "each", fired=["end"]),
        _event(71, "step.enter", "end", status="RUNNING"),
        _event(72, "next.evaluated", "end", fired=[]),
    ]
    fold = _Fold()
    for event in events:
        fold.add(event)
    bars = _bars(fold, {"each"}, [])
    assert [(b.label, b.status, b.attempt) for b in bars[:2]] == [("a", "FAILED", 1), ("a (attempt 2)", "COMPLETED", 2)]
    (loop,) = bars[2:]
    assert (loop.label, loop.count, loop.done, loop.failed, loop.attempts) == ("each x3", 3, 3, 0, 4)
    assert loop.status == "COMPLETED" and loop.start == T0 + timedelta(seconds=31)
    assert loop.end == T0 + timedelta(seconds=62)
    assert fold.fired == {("a", "each"): 1, ("each", "end"): 1}
    assert fold.steps["a"].args == {"x": 1} and fold.steps["end"].status == "COMPLETED"
    assert fold.error is None


def test_a_failed_iteration_fails_the_loop_row_and_the_error_names_its_step() -> None:
    events = [
        _event(1, "step.enter", "each", status="RUNNING"),
        _event(2, "loop.started", "each", count=2),
        *_command(3, "each", 301, "command.completed", iteration=0),
        *_command(10, "each", 302, "command.failed", iteration=1),
        _event(20, "playbook.failed", "each", error="step 'each' failed: boom"),
    ]
    fold = _Fold()
    for event in events:
        fold.add(event)
    (loop,) = _bars(fold, {"each"}, [])
    assert (loop.status, loop.done, loop.failed, loop.count) == ("FAILED", 1, 1, 2)
    assert fold.error is not None and (fold.error.step, fold.error.message) == ("each", "step 'each' failed: boom")
    assert fold.steps["each"].error == {"message": "boom"}
