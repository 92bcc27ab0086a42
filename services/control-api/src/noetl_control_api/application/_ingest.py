"""``POST /api/events``: worker events, idempotent per event_id, advancing executions.

A batch is one transaction. Execution rows are locked first (in id order), then command
rows (in id order): the same order as every other writer, so batches cannot deadlock.
Rows are locked ``FOR UPDATE`` when the batch carries a terminal event (the orchestrator
will change the execution), ``FOR SHARE`` otherwise so heartbeats do not queue behind
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from noetl_common import ClaimReply, EagerRequest, Event, EventsReply, StepLogs, utc_now_iso
from noetl_common.arrow_limits import ArrowLimits
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, Forbidden, NotFound, ValidationFailed
from .._metrics import CLAIMS, EVENTS
from ..orchestrator import ExecutionState, apply_outcome, state_decode
from ..store import CommandRow, ExecutionRow, NewCommand
from ._claims import claim_reply
from ._incoming import TERMINAL_EVENTS, Incoming, check_batch, check_command
from ._outcomes import claimed_row, read_outcome
from ._playbooks import PlaybookCache
from ._policy import Principal
from ._recorder import TERMINAL_STATUSES, ExecutionRef, Recorder, Writes
from ._step_logs import staged_logs

MAX_EAGER_SLOTS = 256


class EventIngest:
    """Accepts worker events and applies terminal outcomes through the orchestrator."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        playbooks: PlaybookCache,
        recorder: Recorder,
        *,
        lease_seconds: float,
        context_max_bytes: int,
        arrow_limits: ArrowLimits | None = None,
        template_limits: TemplateLimits = DEFAULT_LIMITS,
    ) -> None:
        self._pool = pool
        self._playbooks = playbooks
        self._recorder = recorder
        self._lease = lease_seconds
        self._context_max = context_max_bytes
        self._arrow = arrow_limits or ArrowLimits()
        self._limits = template_limits

    async def ingest(
        self,
        events: Sequence[Event],
        principal: Principal,
        eager: EagerRequest | None = None,
        logs: Sequence[StepLogs] = (),
    ) -> EventsReply:
        """Record a batch; duplicates (same event_id, or a finished command) are counted, not applied.

        A worker's events must each name a command (``meta.command_id``) whose live lease that
        worker holds, as the same principal and worker id that claimed it (403 otherwise);
        other principals reach this only through the server's own use cases (dead-lettering).

        ``eager`` (eager dispatch, after Temporal's eager activities): commands of that pool
        the batch issues are inserted already claimed by the worker, at most ``eager.slots``
        of them, newest first, and returned. Their notifications still flow; a later claim
        of one meets 429 (held) or 409 (finished), and a worker crash leaves it to be claimed
        through that notification once the lease expires.

        ``logs``: step logs of the batch's commands, kept for those it finishes (``_step_logs``).
        """
        incoming = check_batch(events, self._context_max)
        if principal.is_worker:
            for i, item in enumerate(incoming):
                if item.command_id is None:
                    raise ValidationFailed(
                        f"events[{i}]: a worker's event names its command (meta.command_id)"
                    )
            if eager is not None and eager.pool != principal.pool:
                raise Forbidden(
                    f"eager.pool {eager.pool[:40]!r}: {principal.describe()} serves pool {principal.pool!r}"
                )
        if eager is not None and (not eager.worker_id or len(eager.worker_id) > 200):
            raise ValidationFailed("eager.worker_id must be a non-empty string of at most 200 characters")
        if eager is not None and not 1 <= eager.slots <= MAX_EAGER_SLOTS:
            raise ValidationFailed(f"eager.slots must be within 1..{MAX_EAGER_SLOTS}, got {eager.slots}")
        mode: Literal["UPDATE", "SHARE"] = (
            "UPDATE" if any(i.event.event_type in TERMINAL_EVENTS for i in incoming) else "SHARE"
        )
        writes = Writes(lease_seconds=self._lease)
        claimed: list[ClaimReply] = []
        # pipeline mode: statements whose results are not read yet ride with the next one that
        # is: the locks are one round trip, everything the batch writes and the COMMIT one more
        try:
            async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
                applied = await self._decide(conn, incoming, mode, writes, eager, claimed, principal, logs)
                await writes.flush(conn)
        except UniqueViolation:
            # Under the command's row lock, an unfinished command's terminal event cannot have
            # been recorded before: a key already taken means a client reused an event id.
            raise Conflict(
                "an event id of the batch is already recorded for its execution;"
                " a terminal event needs an id of its own; nothing of the batch was kept"
            ) from None
        accepted = len(await writes.incoming_new()) + applied
        duplicates = len(incoming) - accepted
        EVENTS.labels("accepted").inc(accepted)
        EVENTS.labels("duplicate").inc(duplicates)
        if claimed:
            CLAIMS.labels("eager").inc(len(claimed))
        return EventsReply(accepted=accepted, duplicates=duplicates, commands=claimed or msgspec.UNSET)

    async def _decide(
        self,
        conn: Any,
        incoming: list[Incoming],
        mode: Literal["UPDATE", "SHARE"],
        writes: Writes,
        eager: EagerRequest | None,
        claimed: list[ClaimReply],
        principal: Principal,
        logs: Sequence[StepLogs] = (),
    ) -> int:
        """Lock, check and apply the batch, staging every row in ``writes`` and the eager
        commands in ``claimed``; returns how many terminal events were applied."""
        # a terminal event will need the state: it comes with the lock (one round trip
        # less while the row is held) as JSON text, decoded straight into structs
        # both locks go out together (executions first, then commands: the order every
        # writer keeps) and come back in one round trip
        locking = await store.executions.send_lock(
            conn,
            [i.event.execution_id for i in incoming],
            mode,
            state="text" if mode == "UPDATE" else "none",
        )
        locking_commands = await store.commands.send_lock_many(
            conn, [i.command_id for i in incoming if i.command_id is not None]
        )
        executions = await store.executions.read_locked(locking)
        for item in incoming:
            if item.event.execution_id not in executions:
                raise NotFound(f"execution {item.event.execution_id} not found")
        commands = await store.commands.read_locked(locking_commands)
        seen: set[tuple[int, int]] = set()
        applied = 0
        received_at = utc_now_iso()  # of every event of the batch that came without a time
        issued: list[tuple[ExecutionRef, NewCommand]] = []
        for item in incoming:
            execution = executions[item.event.execution_id]
            ref = ExecutionRef(
                execution_id=execution.execution_id,
                catalog_path=execution.path,
                parent_execution_id=execution.parent_execution_id,
            )
            command = check_command(item, commands, execution.execution_id, principal)
            if command is not None and (
                command.status in store.commands.TERMINAL or command.command_id in writes.finished
            ):
                continue  # the command is finished: a late or repeated event changes nothing
            event = self._complete(item.event, ref, received_at)
            assert event.event_id is not None
            key = (event.execution_id, event.event_id)
            if key in seen:
                continue
            seen.add(key)
            kind = event.event_type
            if command is None or kind not in TERMINAL_EVENTS:
                # may repeat an event recorded before: skipped then, and applying a repeated
                # started or heartbeat again (renewing the lease) changes nothing more
                writes.incoming.append(self._recorder.event_row(event))
                if command is not None and kind == "command.started":
                    writes.started.append(command.command_id)
                elif command is not None and kind == "command.heartbeat":
                    writes.renewed.append(command.command_id)
                continue
            # a terminal event of an unfinished command: new, and recorded before its decision
            writes.finished[command.command_id] = TERMINAL_EVENTS[kind]
            writes.outbox.append(self._recorder.event_row(event))
            applied += 1
            new = await self._advance(
                conn,
                writes,
                executions[ref.execution_id],
                ref,
                command,
                event,
                "completed" if kind == "command.completed" else "failed",
            )
            issued += [(ref, c) for c in new]
        # under the execution locks taken above: each execution's seq values commit in order
        writes.logs += staged_logs(logs, commands, writes.finished)
        if eager is not None:
            # newest first: in a chain that is the step just issued; in a loop the next iterations.
            # Not a command of an execution a later outcome of the batch ended: it is cancelled.
            mine = [
                (ref, c)
                for ref, c in reversed(issued)
                if c.pool == eager.pool and executions[ref.execution_id].status not in TERMINAL_STATUSES
            ][: eager.slots]
            for ref, new_command in mine:
                self._recorder.stage_claim(writes, ref, new_command, eager.worker_id, principal.name)
                claimed.append(claim_reply(claimed_row(new_command), ref.catalog_path, self._lease))
        return applied

    def _complete(self, event: Event, ref: ExecutionRef, received_at: str) -> Event:
        """Fill what the server knows: an id when the worker sent none, time, catalog path;
        on a terminal event ``meta.applied_id``, a server id minted under the execution lock:
        the order outcomes are applied in, which a replay folds them by."""
        meta = event.meta
        if event.event_type in TERMINAL_EVENTS:
            meta = {**(meta if isinstance(meta, dict) else {}), "applied_id": self._recorder.ids.next_id()}
        return msgspec.structs.replace(
            event,
            event_id=event.event_id if event.event_id is not None else self._recorder.ids.next_id(),
            created_at=event.created_at or received_at,
            catalog_path=ref.catalog_path,
            parent_execution_id=ref.parent_execution_id,
            meta=meta,
        )

    async def _advance(
        self,
        conn: Any,
        writes: Writes,
        row: ExecutionRow,
        ref: ExecutionRef,
        command: CommandRow,
        event: Event,
        status: Literal["completed", "failed"],
    ) -> list[NewCommand]:
        """Feed the outcome to the orchestrator under the execution lock and stage its decision;
        returns the commands it issued. ``row`` is the locked row; it is kept current
        (status, state) for the batch's next outcome of the same execution."""
        if row.status in TERMINAL_STATUSES:
            return []  # finished (e.g. cancelled) meanwhile: the outcome changes nothing
        playbook = self._playbooks.cached(row.path, row.version)
        if playbook is None:
            entry = await store.catalog.get(conn, row.path, row.version)
            assert entry is not None  # the foreign key guarantees it
            playbook = self._playbooks.get(entry.path, entry.version, entry.content)
        read = await read_outcome(conn, event, command, status, self._arrow)
        # decoded straight into structs and worked on in place: nobody else holds this copy
        state = row.state if isinstance(row.state, ExecutionState) else state_decode(row.state)
        decision = apply_outcome(playbook, state, read.outcome, owned=True, limits=self._limits)
        read.keep_references(decision.events)
        staged = self._recorder.stage_decision(writes, ref, decision)
        row.status, row.state = staged.decision.status, staged.decision.state
        return staged.commands
