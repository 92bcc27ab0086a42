"""The orchestrator's per-execution state and its decisions; plain data, JSON round-trippable."""

from __future__ import annotations

from typing import Any

import msgspec

from ._types import CommandDraft, EventDraft, ExecutionStatus


class InFlight(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """A command issued and not yet reported; ``args`` are the step run's incoming args.

    Not tracked by the garbage collector (it cannot be part of a cycle): a loop keeps a
    thousand of these, and decoding them each outcome otherwise triggers collections
    that cost more than the decoding itself."""

    step: str
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    iteration: int | None = None


class Join(msgspec.Struct, kw_only=True):
    """Tokens held at a fan-in barrier: the args each source step's arc delivered."""

    arrivals: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class LoopRun(msgspec.Struct, kw_only=True):
    """A loop step in progress: its items, the next index to issue and results in input order.

    ``pending`` maps the ``meta.seq`` of each issued, unreported iteration to its index: an
    iteration in flight costs a few bytes here instead of an ``InFlight`` entry (the state
    is read and written once per outcome, so its size is paid a thousand times).
    """

    items: list[Any]
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    next_index: int = 0
    done: int = 0
    results: list[Any] = msgspec.field(default_factory=list)
    pending: dict[str, int] = msgspec.field(default_factory=dict)
    #: iterations in flight at most (``max_in_flight``, rendered when the loop started)
    limit: int | None = None


class RoutedFailure(msgspec.Struct, kw_only=True):
    """A step whose call failed and whose arcs took the execution on: its error message."""

    step: str
    error: str


class ExecutionState(msgspec.Struct, kw_only=True):
    """Everything the orchestrator knows about one execution between two events.

    ``ctx`` and ``results`` (step name → latest result) are what the API shows.
    ``in_flight`` is keyed by the command's ``meta.seq`` (as a string, for JSON); a loop's
    iterations in flight are in its ``LoopRun.pending`` instead.
    """

    execution_id: int
    catalog_path: str
    status: ExecutionStatus = "RUNNING"
    workload: dict[str, Any] = msgspec.field(default_factory=dict)
    ctx: dict[str, Any] = msgspec.field(default_factory=dict)
    vars: dict[str, Any] = msgspec.field(default_factory=dict)
    results: dict[str, Any] = msgspec.field(default_factory=dict)
    runs: dict[str, int] = msgspec.field(default_factory=dict)
    in_flight: dict[str, InFlight] = msgspec.field(default_factory=dict)
    joins: dict[str, Join] = msgspec.field(default_factory=dict)
    loops: dict[str, LoopRun] = msgspec.field(default_factory=dict)
    seq: int = 0
    last_step: str | None = None
    result: Any = None
    error: str | None = None
    #: the first failed call whose arcs routed on (a recovery): the execution goes on along
    #: them and ends FAILED with its error, as upstream's does
    failure: RoutedFailure | None = None


class Decision(msgspec.Struct, kw_only=True):
    """What the store must write after one orchestrator call, in one transaction."""

    state: ExecutionState
    events: list[EventDraft]
    commands: list[CommandDraft]
    status: ExecutionStatus
    result: Any = None
    error: str | None = None


def state_to_json(state: ExecutionState) -> dict[str, Any]:
    """The state as JSON-ready builtins (what the store keeps in ``execution.state``)."""
    data: dict[str, Any] = msgspec.to_builtins(state)
    return data


def state_from_json(data: dict[str, Any]) -> ExecutionState:
    """Rebuild a state written by :func:`state_to_json`."""
    return msgspec.convert(data, ExecutionState)


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(ExecutionState)


def state_encode(state: ExecutionState) -> bytes:
    """The state as JSON text, straight from the structs (no builtins in between)."""
    return _ENCODER.encode(state)


def state_decode(raw: bytes | str) -> ExecutionState:
    """Rebuild a state from JSON text (``execution.state::text``), straight into the structs."""
    return _DECODER.decode(raw)
