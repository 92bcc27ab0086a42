"""Writes what the orchestrator decided: events, commands and their outbox rows.

Every event becomes one outbox row on the execution's events subject (payload: the
scrubbed ``Event``). Every command becomes a ``command`` row (PENDING), a
``command.issued`` event, and one outbox row on its pool's command subject carrying a
``CommandNotification``. The caller owns the transaction, so all of it commits together
with the execution's new state.

The command notification's outbox row is keyed by ``command_id``: the outbox is unique
on (execution_id, event_id) and the ``command.issued`` event row already uses the
issued event id; the notification's payload still carries that ``event_id`` (the claim
key), which is what workers read. An eagerly claimed command's notification is due only at
its lease's end (``stage_claim``): its terminal event deletes it unpublished.

The last guard on sizes: no outbox row is written whose payload is over ``max_event_bytes``
(what the NATS max payload leaves after headers), or the publisher could never ship it. A
decision of the orchestrator that would write one (a huge ctx patch, arc args, result)
is replaced by the failure the orchestrator decides for it (``fail_execution``), naming the
step and the size; a row of the caller's own (a client's event) is refused with 413.
"""

from __future__ import annotations

import re
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
from psycopg import AsyncConnection, AsyncCursor

from .. import store
from .._errors import PayloadTooLarge, ValidationFailed
from ..orchestrator import Decision, EventDraft, fail_execution, state_encode
from ..store import LogInsert, NewCommand, OutboxInsert

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: ``cause`` of the failure of an execution whose decision was too large to record.
EVENT_TOO_LARGE = "event_too_large"
_ENCODER = msgspec.json.Encoder()
#: a NUL escape in a JSON string: ``\\u0000`` after an even number of backslashes
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NUL_REFUSED = "a string holds a NUL character (\\u0000), which the event log cannot store"


class EventTooLarge(PayloadTooLarge):
    """An outbox payload over the largest the publisher can ship."""

    def __init__(self, event_type: str, step: str | None, size: int, limit: int) -> None:
        where = f"step {step!r}: " if step else ""
        super().__init__(
            f"{where}its {event_type} event is {size} bytes, over the largest event of {limit} bytes"
            " (NOETL_NATS_MAX_PAYLOAD_BYTES less a margin for headers)",
            {"event_type": event_type, "step": step, "size": size, "limit": limit},
        )
        self.event_type = event_type
        self.step = step
        self.size = size


class Staged(msgspec.Struct, kw_only=True):
    """What :meth:`Recorder.stage_decision` staged: the decision (the one given, or the
    failure that replaced it) and its new commands."""

    decision: Decision
    commands: list[NewCommand]


class ExecutionRef(msgspec.Struct, kw_only=True):
    """What every event of an execution carries besides its own fields."""

    execution_id: int
    catalog_path: str
    parent_execution_id: int | None = None


class Recorder:
    """Mints ids and turns events and decisions into rows; one per app."""

    def __init__(self, ids: Snowflake, *, shard_count: int, server_url: str, max_event_bytes: int) -> None:
        self.ids = ids
        self.shard_count = shard_count
        self.server_url = server_url
        self.max_event_bytes = max_event_bytes

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
        """The outbox row of an event; the payload is scrubbed here, once, for every event, and
        encoded here (the store writes the JSON text as is): :class:`EventTooLarge` when it is
        over ``max_event_bytes``."""
        assert event.event_id is not None
        payload = self._checked(_ENCODER.encode(scrub(msgspec.to_builtins(event))), event.event_type, event.step)
        return (
            event.execution_id,
            event.event_id,
            event_subject(event.execution_id, self.shard_count),
            payload,
        )

    def _checked(self, data: bytes, kind: str, step: str | None) -> bytes:
        if len(data) > self.max_event_bytes:
            raise EventTooLarge(kind, step, len(data), self.max_event_bytes)
        if b"u0000" in data and _NUL.search(data):  # the outbox (json) would take it, the log (jsonb) not
            raise ValidationFailed(f"event {kind[:80]!r} of step {(step or '')[:80]!r}: {_NUL_REFUSED}")
        return data

    def notification_row(
        self,
        execution_id: int,
        *,
        event_id: int,
        command_id: int,
        step: str,
        pool: str,
        notice_id: int | None = None,
    ) -> OutboxInsert:
        """The outbox row of a command's notification, keyed by ``notice_id`` (the command id for
        the one issued with the command; a fresh id for each one the sweeper writes again, so
        JetStream does not drop it as a duplicate). The payload is the same every time: its
        ``event_id`` is the claim key."""
        notification = CommandNotification(
            execution_id=execution_id,
            event_id=event_id,
            command_id=command_id,
            step=step,
            server_url=self.server_url,
            execution_pool=pool,
        )
        return (
            execution_id,
            command_id if notice_id is None else notice_id,
            command_subject(pool, execution_id),
            self._checked(_ENCODER.encode(notification), "command notification", step),
        )

    async def send_new_events(self, conn: AsyncConnection[Any], events: Sequence[Event]) -> None:
        """Write events minted here (new ids) to the outbox, sent and not read: the insert rides
        with the COMMIT (pipeline mode); a key already taken fails the transaction."""
        await store.outbox.send_outbox(conn, [self.event_row(e) for e in events], new_only=True)

    async def write_decision(
        self,
        conn: AsyncConnection[Any],
        ref: ExecutionRef,
        decision: Decision,
        *,
        leading: Sequence[Event] = (),
        insert_execution: dict[str, Any] | None = None,
    ) -> Decision:
        """Persist one decision now (see :meth:`stage_decision`); returns the decision written."""
        writes = Writes()
        staged = self.stage_decision(
            writes, ref, decision, leading=leading, insert_execution=insert_execution
        )
        await writes.flush(conn)
        return staged.decision

    def stage_decision(
        self,
        writes: Writes,
        ref: ExecutionRef,
        decision: Decision,
        *,
        leading: Sequence[Event] = (),
        insert_execution: dict[str, Any] | None = None,
    ) -> Staged:
        """Add a decision to ``writes``: the execution row, events, commands and all outbox
        rows; returns what was staged (the new commands still PENDING, for :meth:`stage_claim`).

        ``insert_execution`` (version, payload, timeout) creates the execution row instead of
        updating it. ``leading`` events are recorded before the decision's own; one of them
        too large raises :class:`EventTooLarge`. One of the decision's own too large: the
        execution fails instead (its state as the decision left it, so a replay, which
        applies the same failure after the same outcome, rebuilds it).
        """
        leading_rows = [self.event_row(e) for e in leading]
        try:
            return self._stage(writes, ref, decision, leading_rows, insert_execution)
        except EventTooLarge as exc:
            failed = fail_execution(decision.state, exc.detail, cause=EVENT_TOO_LARGE, step=exc.step)
            return self._stage(writes, ref, failed, leading_rows, insert_execution)

    def _stage(
        self,
        writes: Writes,
        ref: ExecutionRef,
        decision: Decision,
        leading_rows: list[OutboxInsert],
        insert_execution: dict[str, Any] | None,
    ) -> Staged:
        """Build every row first and touch ``writes`` only once all of them fit."""
        events = [self.from_draft(ref, d) for d in decision.events]
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
            notifications.append(
                self.notification_row(
                    ref.execution_id, event_id=issued.event_id, command_id=command_id, step=draft.step, pool=draft.pool
                )
            )
        event_rows = [self.event_row(e) for e in events]
        execution = _ExecutionWrite(
            ref=ref,
            status=decision.status,
            # JSON text straight from the structs: no dict tree to build and dump again
            state=state_encode(decision.state),
            result=decision.result,
            error=decision.error,
            insert=insert_execution,
        )
        earlier = writes.executions.get(ref.execution_id)
        if earlier is not None and earlier.insert is not None:
            execution.insert = earlier.insert  # still one INSERT, with the latest state
        writes.executions[ref.execution_id] = execution
        writes.commands += commands
        # event rows first, then notifications: a publisher claiming in outbox_id order
        # ships command.issued before the worker can post command.started
        writes.outbox += leading_rows + event_rows
        writes.outbox += notifications
        if decision.status in TERMINAL_STATUSES:
            writes.cancel_open.append(ref.execution_id)
        return Staged(decision=decision, commands=commands)

    def stage_claim(
        self, writes: Writes, ref: ExecutionRef, command: NewCommand, worker_id: str, claimed_by: str
    ) -> Event:
        """Eager dispatch: a command staged by this transaction is inserted CLAIMED by
        ``worker_id`` of principal ``claimed_by`` (attempt 1, with a lease) and its
        ``command.claimed`` recorded. Its notification is written due at the lease's end: the
        command's terminal event deletes it unpublished (no message, claim or ack for a
        command that already has its worker), and should the worker die it goes out then, so
        the command is claimed again once the lease expires, as before."""
        command.worker_id = worker_id
        command.claimed_by = claimed_by
        writes.deferred[(ref.execution_id, command.command_id)] = writes.lease_seconds
        claimed = self.new_event(
            ref,
            "command.claimed",
            step=command.step,
            status="CLAIMED",
            worker_id=worker_id,
            meta={"command_id": command.command_id, "attempt": 1, "pool": command.pool, "eager": True},
        )
        writes.outbox.append(self.event_row(claimed))
        return claimed


class _ExecutionWrite(msgspec.Struct):
    ref: ExecutionRef
    status: str
    state: bytes  # JSON text
    result: Any
    error: str | None
    insert: dict[str, Any] | None = None  # version, payload, timeout (and rerun_of) of a new execution row


class Writes:
    """What one transaction writes, gathered while it decides and sent at its end as a few
    set-based statements that are not read before the COMMIT: in pipeline mode they and the
    COMMIT travel together, one round trip in all.

    Statement order: execution rows, command status changes, new commands, the open commands
    of executions that reached a final status cancelled, then the outbox: ``incoming`` rows
    (a client's events, which may repeat: skipped, see :meth:`incoming_new`), then ``outbox``
    rows, which must all be new (a repeated key fails the transaction with UniqueViolation).
    """

    def __init__(self, *, lease_seconds: float = 0.0) -> None:
        self.lease_seconds = lease_seconds
        self.incoming: list[OutboxInsert] = []
        self._incoming_sent: AsyncCursor[Any] | None = None
        self.outbox: list[OutboxInsert] = []
        #: outbox keys of rows first due this many seconds after the commit (eager commands'
        #: notifications: ``Recorder.stage_claim``)
        self.deferred: dict[tuple[int, int], float] = {}
        self.commands: list[NewCommand] = []
        self.executions: dict[int, _ExecutionWrite] = {}
        self.finished: dict[int, str] = {}  # command_id → COMPLETED / FAILED
        self.started: list[int] = []
        self.renewed: list[int] = []
        self.cancel_open: list[int] = []
        self.logs: list[LogInsert] = []  # step logs of the commands this transaction finishes

    async def flush(self, conn: AsyncConnection[Any]) -> None:
        """Send everything (nothing is read: the caller's COMMIT brings the results back)."""
        for execution_id, write in self.executions.items():
            if write.insert is not None:
                await store.executions.insert(
                    conn,
                    execution_id=execution_id,
                    path=write.ref.catalog_path,
                    version=write.insert["version"],
                    status=write.status,
                    payload=write.insert["payload"],
                    state=write.state,
                    result=write.result,
                    error=write.error,
                    parent_execution_id=write.ref.parent_execution_id,
                    timeout_seconds=write.insert.get("timeout"),
                    rerun_of=write.insert.get("rerun_of"),
                )
            else:
                await store.executions.update(
                    conn,
                    execution_id,
                    status=write.status,
                    state=write.state,
                    result=write.result,
                    error=write.error,
                )
        await store.commands.finish(conn, self.finished)
        await store.commands.mark_started(
            conn, [c for c in self.started if c not in self.finished], self.lease_seconds
        )
        await store.commands.renew_lease(
            conn, [c for c in self.renewed if c not in self.finished], self.lease_seconds
        )
        await store.commands.insert_many(conn, self.commands, self.lease_seconds)
        for execution_id in self.cancel_open:
            await store.commands.cancel_open(conn, execution_id)
        self._incoming_sent = await store.outbox.send_outbox(conn, self.incoming)
        await store.outbox.send_outbox(conn, self.outbox, new_only=True, deferred=self.deferred)
        await store.step_logs.send_insert(conn, self.logs)

    async def incoming_new(self) -> set[tuple[int, int]]:
        """The keys of ``incoming`` rows that were new, once the transaction committed."""
        return await store.outbox.read_keys(self._incoming_sent)
