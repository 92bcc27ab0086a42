"""The pure orchestrator: playbook + execution state + event → decision. No I/O."""

from ._engine import apply_outcome, cancel_execution, fail_execution, start_execution
from ._replay import ImposedFailure, replay
from ._rerun import STEP_REUSED, RecordedOutcome, RerunPlan, plan_rerun, rerun_steps, run_key
from ._state import Decision, ExecutionState, state_decode, state_encode, state_from_json, state_to_json
from ._types import CommandDraft, CommandOutcome, EventDraft, ExecutionStatus

__all__ = [
    "STEP_REUSED",
    "CommandDraft",
    "CommandOutcome",
    "Decision",
    "EventDraft",
    "ExecutionState",
    "ExecutionStatus",
    "ImposedFailure",
    "RecordedOutcome",
    "RerunPlan",
    "apply_outcome",
    "cancel_execution",
    "fail_execution",
    "plan_rerun",
    "replay",
    "rerun_steps",
    "run_key",
    "start_execution",
    "state_decode",
    "state_encode",
    "state_from_json",
    "state_to_json",
]
