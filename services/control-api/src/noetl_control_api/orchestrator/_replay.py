"""Replay: an execution's state rebuilt from its recorded inputs alone."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits

from ..dsl import Playbook
from ._engine import apply_outcome, cancel_execution, fail_execution, start_execution
from ._state import ExecutionState
from ._types import CommandOutcome


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
