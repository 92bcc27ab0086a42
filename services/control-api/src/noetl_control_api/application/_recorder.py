"""Writes what the orchestrator decided: events, commands and their outbox rows.

Every event becomes one outbox row on the execution's events subject (payload: the
scrubbed ``Event``). Every command becomes a ``command`` row (PENDING), a
``command.issued`` event, and one outbox row on its pool's command subject carrying a
``CommandNotification``. The caller owns the transaction, so all of it commits together
with the execution's new state.

The command notification's outbox row is keyed by ``command_id``: the outbox is unique
on (execution_id, event_id) and the ``command.issued`` event row already uses the
issued event id; the notification's payload still carries that ``event_id`` (the claim
key), which is what workers read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from noetl_common import (
    CommandNotification,
    Event,
    Snowflake,
    command_subject,
    event_subject,
    scrub,
    utc_now_iso,
)
from psycopg import AsyncConnection

from .. import store
from ..orchestrator import Decision, EventDraft, state_encode
from ..store._commands import NewCommand
from ..store._outbox import OutboxInsert

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


class ExecutionRef(msgspec.Struct, kw_only=True):
    """What every event of an execution carries besides its own fields."""

    execution_id: int
    catalog_path: str
    parent_execution_id: int | None = None


class Recorder:
    """Mints ids and turns events and decisions into rows; one per app."""

    def __init__(self, ids: Snowflake, *, shard_count: int, server_url: str) -> None:
        self.ids = ids
        self.shard_count = shard_count
        self.server_url = server_url

    def new_event(
        self,
        ref: ExecutionRef,
        event_type: str,
        *,
        step: str | None = None,
        status: str | None = None,
        context: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        worker_id: str | None = None,
    ) -> Event:
        """A server event with a fresh id and timestamp."""
        return Event(
            execution_id=ref.execution_id,
            event_type=event_type,
            event_id=self.ids.next_id(),
            step=step,
            status=status,
            created_at=utc_now_iso(),
            context=context,
            meta=meta,
            worker_id=worker_id,
            parent_execution_id=ref.parent_execution_id,
            catalog_path=ref.catalog_path,
        )

    def from_draft(self, ref: ExecutionRef, draft: EventDraft) -> Event:
        return self.new_event(
            ref,
            draft.event_type,
            step=draft.step,
            status=draft.status,
            context=draft.context,
            meta=draft.meta,
        )

    def event_row(self, event: Event) -> OutboxInsert:
        """The outbox row of an event; the payload is scrubbed here, once, for every event."""
        assert event.event_id is not None
        return (
            event.execution_id,
            event.event_id,
            event_subject(event.execution_id, self.shard_count),
            scrub(msgspec.to_builtins(event)),
        )

    async def write_events(self, conn: AsyncConnection[Any], events: Sequence[Event]) -> set[tuple[int, int]]:
        """Write events to the outbox; returns the (execution_id, event_id) keys that were new."""
        return await store.outbox.insert_outbox(conn, [self.event_row(e) for e in events])

    async def write_decision(
        self,
        conn: AsyncConnection[Any],
        ref: ExecutionRef,
        decision: Decision,
        *,
        leading: Sequence[Event] = (),
        insert_execution: dict[str, Any] | None = None,
    ) -> None:
        """Persist a decision: the execution row, events, commands and all outbox rows.

        ``insert_execution`` (path, version, payload) creates the execution row instead of
        updating it. ``leading`` events are recorded before the decision's own.
        """
        events = list(leading) + [self.from_draft(ref, d) for d in decision.events]
        commands: list[NewCommand] = []
        notifications: list[OutboxInsert] = []
        for draft in decision.commands:
            command_id = self.ids.next_id()
            issued = self.new_event(
                ref,
                "command.issued",
                step=draft.step,
                status="PENDING",
                meta={
                    "command_id": command_id,
                    "pool": draft.pool,
                    "tool_kind": draft.tool_kind,
                    # the orchestrator meta (seq, iteration): what a replay feeds back
                    "command_meta": draft.meta,
                },
            )
            assert issued.event_id is not None
            events.append(issued)
            commands.append(
                NewCommand(
                    command_id=command_id,
                    event_id=issued.event_id,
                    execution_id=ref.execution_id,
                    step=draft.step,
                    pool=draft.pool,
                    tool_kind=draft.tool_kind,
                    spec=msgspec.to_builtins(draft.spec),
                    meta=draft.meta,
                )
            )
            notification = CommandNotification(
                execution_id=ref.execution_id,
                event_id=issued.event_id,
                command_id=command_id,
                step=draft.step,
                server_url=self.server_url,
                execution_pool=draft.pool,
            )
            notifications.append(
                (
                    ref.execution_id,
                    command_id,
                    command_subject(draft.pool, ref.execution_id),
                    msgspec.to_builtins(notification),
                )
            )
        # JSON text straight from the structs: no dict tree to build and dump again
        state = state_encode(decision.state)
        if insert_execution is not None:
            await store.executions.insert(
                conn,
                execution_id=ref.execution_id,
                path=ref.catalog_path,
                version=insert_execution["version"],
                status=decision.status,
                payload=insert_execution["payload"],
                state=state,
                result=decision.result,
                error=decision.error,
                parent_execution_id=ref.parent_execution_id,
            )
        else:
            await store.executions.update(
                conn,
                ref.execution_id,
                status=decision.status,
                state=state,
                result=decision.result,
                error=decision.error,
            )
        await store.commands.insert_many(conn, commands)
        # event rows first, then notifications: a publisher claiming in outbox_id order
        # ships command.issued before the worker can post command.started
        await store.outbox.insert_outbox(conn, [self.event_row(e) for e in events] + notifications)
        if decision.status in TERMINAL_STATUSES:
            await store.commands.cancel_open(conn, ref.execution_id)
