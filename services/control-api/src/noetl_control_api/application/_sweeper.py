"""The sweeper (docs/sweeper.md): nothing stays stranded.

Every replica runs :meth:`Sweeper.run`; a round is led by whoever takes the advisory lock for
it, and each rule re-checks its condition under its own transaction's row locks, so a case is
acted on once however many sweepers look at it. In order, a round fails executions past their
playbook ``timeout``, fails commands of a pool no worker is alive in and commands past their
step's timeout (through the ingest, like a worker's ``command.failed``), hands commands whose
lease expired back to PENDING with a new notification, writes a new notification for
commands nobody claimed, and runs the retention policy when it is due. Every action is an
event written through the recorder and the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import structlog
from noetl_common import Event, wait_or_stop
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, NotFound
from .._metrics import RETENTION_DELETED, SWEEP_ACTIONS, SWEEP_ROUND_SECONDS, SWEEP_ROUNDS
from .._options import SweepPolicy
from ..store import OutboxInsert
from ._deadletter import DeadLetterService
from ._executions import ExecutionService
from ._outbox import OutboxService
from ._recorder import ExecutionRef, Recorder
from ._views import PurgeReply, PurgeRequest

#: Most cases one rule handles a round; the rest wait for the next round.
BATCH = 500
#: The wait before re-publishing doubles with each re-publish, up to this many times the bound.
MAX_BACKOFF_FACTOR = 16
#: Who the sweeper's claims, failures and events name.
SWEEPER_ID = "control-api:sweeper"
#: ``cause`` of the failure of an execution past its playbook timeout.
PLAYBOOK_TIMEOUT = "playbook_timeout"
#: Retention passes one scheduled run may make while each pass fills its limit.
_RETENTION_PASSES = 20
#: How long a stopping sweeper lets its round finish before it is cancelled.
_STOP_GRACE_SECONDS = 5.0

log = structlog.get_logger("noetl.control_api.sweeper")


class SweepReport(msgspec.Struct, kw_only=True):
    """What one round did; ``leader`` False means another replica held the round."""

    leader: bool = False
    playbook_timeouts: int = 0
    pool_absent: int = 0
    step_timeouts: int = 0
    reissued: int = 0
    republished: int = 0
    retention: PurgeReply | None = None


def _any(value: Any) -> bool:
    """Something was done: a count above zero, or a retention reply with one."""
    return any(value.values()) if isinstance(value, dict) else bool(value)


class Sweeper:
    """Finds stranded commands and overdue executions and acts on each once."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        recorder: Recorder,
        executions: ExecutionService,
        deadletter: DeadLetterService,
        outbox: OutboxService,
        *,
        policy: SweepPolicy,
        lease_seconds: float,
    ) -> None:
        self._pool = pool
        self._recorder = recorder
        self._executions = executions
        self._deadletter = deadletter
        self._outbox = outbox
        self.policy = policy
        self._lease = lease_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Sweep every ``policy.interval_seconds`` in the background (not at all when it is 0)."""
        if self.policy.interval_seconds > 0 and self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.run(), name="noetl-sweeper")

    async def stop(self) -> None:
        """Stop the loop: a round in progress gets a few seconds to finish, then is cancelled
        (each action is one transaction: a cancelled one is rolled back whole)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), _STOP_GRACE_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Rounds until stopped; a failing round (the database away) is logged and retried."""
        while not await wait_or_stop(self._stop, self.policy.interval_seconds):
            try:
                await self.sweep()
            except Exception as exc:
                SWEEP_ROUNDS.labels("error").inc()
                log.warning("sweep_failed", error=repr(exc))

    # -- one round --------------------------------------------------------------------------

    async def sweep(self, *, lead: bool = True) -> SweepReport:
        """One round, if this replica gets the round's lock. ``lead=False`` runs it without
        taking the lock: tests use it to show that each action's own row guards suffice."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        if not lead:
            return await self._round()
        async with self._pool.connection() as conn, conn.transaction():
            # the lock lasts as long as this transaction: the round
            if not await store.sweeps.try_lead(conn):
                SWEEP_ROUNDS.labels("follower").inc()
                return SweepReport()
            report = await self._round()
        SWEEP_ROUNDS.labels("leader").inc()
        SWEEP_ROUND_SECONDS.observe(loop.time() - began)
        return report

    async def _round(self) -> SweepReport:
        report = SweepReport(
            leader=True,
            playbook_timeouts=await self._playbook_timeouts(),
            pool_absent=await self._pool_absent(),
            step_timeouts=await self._step_timeouts(),
            reissued=await self._notify_again(reissue=True),
            republished=await self._notify_again(reissue=False),
            retention=await self._retention(),
        )
        done = {k: v for k, v in msgspec.to_builtins(report).items() if k != "leader" and _any(v)}
        if done:
            log.info("sweep_round", **done)
        return report

    async def _playbook_timeouts(self) -> int:
        async with self._pool.connection() as conn:
            overdue = await store.sweeps.overdue_executions(conn, BATCH)
        failed = 0
        for execution_id, timeout in overdue:
            error = f"the playbook timed out: still running after its timeout of {timeout:g} s"
            if await self._executions.time_out(execution_id, error, cause=PLAYBOOK_TIMEOUT):
                failed += 1
        SWEEP_ACTIONS.labels("playbook_timeout").inc(failed)
        return failed

    async def _pool_absent(self) -> int:
        absent = self.policy.pool_absent_seconds
        if absent <= 0:
            return 0
        async with self._pool.connection() as conn:
            orphans = await store.sweeps.orphaned_commands(conn, absent, BATCH)
        failed = 0
        for event_id, attempt, pool in orphans:
            reason = f"no worker of pool {pool!r} has been alive for {absent:g} s"
            failed += await self._fail(event_id, attempt, reason, "PoolAbsent")
        SWEEP_ACTIONS.labels("pool_absent").inc(failed)
        return failed

    async def _step_timeouts(self) -> int:
        async with self._pool.connection() as conn:
            overdue = await store.sweeps.overdue_commands(
                conn, self.policy.step_timeout_seconds, self._lease, BATCH
            )
        failed = 0
        for command in overdue:
            reason = (
                f"no outcome within the step's timeout of {command.timeout_seconds:g} s"
                f" (its command has been open for {command.open_seconds:.0f} s)"
            )
            failed += await self._fail(command.event_id, command.attempt, reason, "TimeoutError")
        SWEEP_ACTIONS.labels("step_timeout").inc(failed)
        return failed

    async def _fail(self, event_id: int, attempt: int, reason: str, kind: str) -> int:
        """1 when the command was failed now, 0 when it moved on meanwhile (finished, claimed
        again, gone)."""
        try:
            reply = await self._deadletter.fail_command(
                event_id, reason, kind=kind, worker_id=SWEEPER_ID, attempt=attempt
            )
        except (NotFound, Conflict):
            return 0
        return int(reply.failed)

    async def _notify_again(self, *, reissue: bool) -> int:
        """Reissue (``reissue``: CLAIMED commands whose lease expired go back to PENDING) or
        re-publish (PENDING commands nobody claimed): a new notification and the event that
        says why, in one transaction with the locked rows."""
        wait = self.policy.republish_seconds
        async with self._pool.connection() as conn, conn.transaction():
            if reissue:
                stranded = await store.sweeps.lock_expired_leases(conn, wait, BATCH)
            else:
                # a worker is live while it heartbeats within a claim lease (its interval is shorter)
                stranded = await store.sweeps.lock_unclaimed(conn, wait, MAX_BACKOFF_FACTOR, self._lease, BATCH)
            if not stranded:
                return 0
            events: list[OutboxInsert] = []
            notifications: list[OutboxInsert] = []
            notices: list[tuple[int, int]] = []
            for command in stranded:
                notice = self._recorder.ids.next_id()
                events.append(self._recorder.event_row(self._event(command, reissue, wait)))
                notifications.append(
                    self._recorder.notification_row(
                        command.execution_id,
                        event_id=command.event_id,
                        command_id=command.command_id,
                        step=command.step,
                        pool=command.pool,
                        notice_id=notice,
                    )
                )
                notices.append((command.command_id, notice))
            if reissue:
                await store.sweeps.hand_back(conn, notices)
            else:
                await store.sweeps.renotified(conn, notices)
            # the events first: a publisher claiming in outbox_id order ships them before the
            # notification a worker may act on
            await store.outbox.insert_outbox(conn, events + notifications)
        SWEEP_ACTIONS.labels("reissued" if reissue else "republished").inc(len(stranded))
        return len(stranded)

    def _event(self, command: store.sweeps.Stranded, reissue: bool, wait: float) -> Event:
        ref = ExecutionRef(
            execution_id=command.execution_id,
            catalog_path=command.path,
            parent_execution_id=command.parent_execution_id,
        )
        meta = {"command_id": command.command_id, "attempt": command.attempt, "pool": command.pool}
        context: dict[str, Any]
        if reissue:
            expired = store.iso(command.lease_expires_at)
            context = {
                "reason": f"the lease of worker {command.worker_id!r} (attempt {command.attempt}) expired at"
                f" {expired} and nobody claimed the command within {wait:g} s",
                "worker_id": command.worker_id,
                "lease_expired_at": expired,
            }
        else:
            context = {
                "reason": f"no worker claimed the command within {wait * min(2**command.republished, MAX_BACKOFF_FACTOR):g} s"
                " of its notification",
                "republished": command.republished + 1,
            }
        kind = "command.reissued" if reissue else "command.republished"
        return self._recorder.new_event(
            ref, kind, step=command.step, status="PENDING", context=context, meta=meta, worker_id=SWEEPER_ID
        )

    async def _retention(self) -> PurgeReply | None:
        """The retention policy, when its interval has passed (whichever replica ran it last)."""
        interval = self.policy.retention_interval_seconds
        if interval <= 0:
            return None
        async with self._pool.connection() as conn, conn.transaction():
            due = await store.sweeps.take_scheduled(conn, "retention", interval)
        if not due:
            return None
        total: dict[str, int] = {}
        for _ in range(_RETENTION_PASSES):
            reply = await self._outbox.purge(PurgeRequest(policy=True))
            counts = msgspec.structs.asdict(reply)
            for name, count in counts.items():
                total[name] = total.get(name, 0) + count
                RETENTION_DELETED.labels(name.removesuffix("_deleted")).inc(count)
            if max(counts.values()) < PurgeRequest().limit:
                break
        SWEEP_ACTIONS.labels("retention").inc()
        return PurgeReply(**total)
