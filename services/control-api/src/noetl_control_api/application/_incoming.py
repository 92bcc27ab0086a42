"""Checks of worker events: each event on its own before anything is locked, then against
the command it names once that row is locked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from noetl_common import MAX_BATCH_EVENTS, Event

from .. import store
from .._errors import Conflict, Forbidden, NotFound, PayloadTooLarge, StaleAttempt, ValidationFailed
from ..store import CommandRow
from ._ids import client_id
from ._policy import Principal

MAX_BATCH = MAX_BATCH_EVENTS
#: Largest ``meta`` of a client's event, as JSON: ids and counters, not data.
MAX_META_BYTES = 16 * 1024
COMMAND_EVENTS = frozenset({"command.started", "command.heartbeat", "command.completed", "command.failed"})
#: A command's terminal events, with the status each leaves it in.
TERMINAL_EVENTS = {"command.completed": "COMPLETED", "command.failed": "FAILED"}
# written only by the server: accepting them from clients would let the event log disagree
# with the state tables it must be able to rebuild
SERVER_EVENTS = frozenset(
    {
        "playbook.execution_requested",
        "playbook.started",
        "playbook.completed",
        "playbook.failed",
        "playbook.cancelled",
        "step.enter",
        "step.reused",
        "command.issued",
        "command.claimed",
        "command.reissued",
        "command.republished",
        "next.evaluated",
        "ctx.patched",
        "loop.started",
        "loop.done",
    }
)


@dataclass
class Incoming:
    """A worker event as checked: the command it names and the attempt it comes from."""

    event: Event
    command_id: int | None
    attempt: int | None


def _attempt(meta: dict[str, Any]) -> int | None:
    raw = meta.get("attempt")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValidationFailed(f"meta.attempt must be an integer, got {raw!r:.40}")
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"meta.attempt must be an integer, got {raw!r:.40}") from None
    if not 0 <= value < 2**31:
        raise ValidationFailed(f"meta.attempt out of range: {value}")
    return value


def check_batch(events: Sequence[Event], context_max: int) -> list[Incoming]:
    """The batch's events, each checked on its own (ids, sizes, which event types a client may
    send, ``meta``); a ValidationFailed or PayloadTooLarge names the first bad one."""
    if not events:
        raise ValidationFailed("events must not be empty")
    if len(events) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} events per batch, got {len(events)}")
    incoming: list[Incoming] = []
    for i, event in enumerate(events):
        client_id(event.execution_id, f"events[{i}].execution_id")
        if event.event_id is not None:
            client_id(event.event_id, f"events[{i}].event_id")
        if not event.event_type or len(event.event_type) > 200:
            raise ValidationFailed(f"events[{i}].event_type must be a non-empty name")
        if event.event_type in SERVER_EVENTS:
            raise ValidationFailed(f"events[{i}]: {event.event_type} is recorded by the server only")
        if event.context is not None:
            size = len(msgspec.json.encode(event.context))
            if size > context_max:
                raise PayloadTooLarge(
                    f"events[{i}].context is {size} bytes, over NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES="
                    f"{context_max}; store the result with PUT /api/result and send a reference",
                )
        meta = event.meta or {}
        if meta and len(msgspec.json.encode(meta)) > MAX_META_BYTES:
            raise PayloadTooLarge(f"events[{i}].meta is over {MAX_META_BYTES} bytes of JSON")
        raw_command = meta.get("command_id")
        command_id = None if raw_command is None else client_id(raw_command, f"events[{i}].meta.command_id")
        attempt = _attempt(meta)
        if event.event_type in COMMAND_EVENTS and (command_id is None or attempt is None):
            raise ValidationFailed(f"events[{i}]: {event.event_type} needs meta.command_id and meta.attempt")
        incoming.append(Incoming(event, command_id, attempt))
    return incoming


def check_command(
    item: Incoming, commands: dict[int, CommandRow], execution_id: int, principal: Principal
) -> CommandRow | None:
    """The event's command, or an error when the event may not be recorded for it."""
    if item.command_id is None:
        return None
    command = commands.get(item.command_id)
    if command is None:
        raise NotFound(f"command {item.command_id} not found")
    if command.execution_id != execution_id:
        raise ValidationFailed(
            f"command {command.command_id} belongs to execution {command.execution_id}, not {execution_id}"
        )
    if command.status == "CANCELLED" and item.event.event_type not in TERMINAL_EVENTS:
        # a heartbeat or progress event of a cancelled execution: the worker stops the task
        raise Conflict(
            f"command {command.command_id} was cancelled with its execution; stop the task",
            {"command_id": command.command_id, "status": command.status},
        )
    if command.status in store.commands.TERMINAL:
        return command
    if command.status == "PENDING":
        raise Conflict(
            f"command {command.command_id} has not been claimed; claim it first",
            {"status": command.status, "attempt": command.attempt},
        )
    if item.attempt is not None and item.attempt != command.attempt:
        raise StaleAttempt(
            f"command {command.command_id} is at attempt {command.attempt};"
            f" event from attempt {item.attempt} rejected",
            {"command_id": command.command_id, "attempt": command.attempt},
        )
    if principal.is_worker and (
        command.claimed_by != principal.name
        or (item.event.worker_id is not None and item.event.worker_id != command.worker_id)
    ):
        raise Forbidden(
            f"command {command.command_id}'s lease is not held by {principal.describe()}"
            f" as worker {item.event.worker_id!r}",
            {"command_id": command.command_id},
        )
    return command
