"""The pure orchestrator: playbook + execution state + event → decision. No I/O."""

from ._engine import apply_outcome, cancel_execution, fail_execution, start_execution
from ._replay import ImposedFailure, replay
from ._state import Decision, ExecutionState, state_decode, state_encode, state_from_json, state_to_json
from ._types import CommandDraft, CommandOutcome, EventDraft, ExecutionStatus

__all__ = [
    "CommandDraft",
    "CommandOutcome",
    "Decision",
    "EventDraft",
    "ExecutionState",
    "ExecutionStatus",
    "ImposedFailure",
    "apply_outcome",
    "cancel_execution",
    "fail_execution",
    "replay",
    "start_execution",
    "state_decode",
    "state_encode",
    "state_from_json",
    "state_to_json",
]
