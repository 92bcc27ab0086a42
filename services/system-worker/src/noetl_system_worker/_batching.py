"""Terminal events of concurrent commands, coalesced into shared POSTs.

A worker running several commands at once (a parallel loop, parallel branches) finishes
them at about the same time. Each terminal batch sent on its own is one ingest transaction
that locks the execution row, and those transactions queue on it one by one. Here, while
one POST is in flight, the terminal batches that finish meanwhile wait and then go
together in the next POST: no timer, so a lone command (a chain) is sent at once, and
under load the batches grow with the round trip. The control-api applies a batch's
outcomes under one lock and writes the execution's state once.

Each submission keeps its own guarantees: the same event ids on every retry (idempotent),
and an error of the shared POST (409 stale attempt, a refused result) is isolated by
sending each submission of that batch again on its own, so one command's error is never
another's. With eager dispatch every submission that asks brings one slot; the commands
the reply hands over are shared out one per submission, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from noetl_common import ClaimReply, EagerRequest, Event, EventsReply, StepLogs

#: (events, eager or None, step logs) → the reply; raises like ``Reporter.post``
Post = Callable[[list[Event], EagerRequest | None, list[StepLogs]], Awaitable[EventsReply]]


def _future() -> asyncio.Future[ClaimReply | None]:
    done: asyncio.Future[ClaimReply | None] = asyncio.get_running_loop().create_future()
    # a submitter cancelled meanwhile never reads it: retrieve the error so none is logged as lost
    done.add_done_callback(lambda f: None if f.cancelled() else f.exception())
    return done


@dataclass
class _Submission:
    events: list[Event]
    eager: bool
    logs: StepLogs | None
    done: asyncio.Future[ClaimReply | None] = field(default_factory=_future)


class TerminalBatcher:
    """Coalesces terminal batches for one control-api; ``max_batch`` submissions per POST
    (1: every submission is sent on its own)."""

    def __init__(self, post: Post, *, worker_id: str, pool: str, max_batch: int) -> None:
        self._post = post
        self._worker_id = worker_id
        self._pool = pool
        self._max_batch = max(1, max_batch)
        self._queue: list[_Submission] = []
        self._sender: asyncio.Task[None] | None = None

    def submit(
        self, events: list[Event], *, eager: bool, logs: StepLogs | None = None
    ) -> Awaitable[ClaimReply | None]:
        """Queue ``events`` (one command's terminal batch, with its step log) at once; awaiting
        the result gives the command handed over by eager dispatch, if any, or raises what the
        POST of these events alone would raise. A caller cancelled meanwhile does not take them
        back. The step log goes in whichever POST carries the events, alone or shared."""
        submission = _Submission(events, eager, logs)
        self._queue.append(submission)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_all())
        return asyncio.shield(submission.done)

    async def _send_all(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._send(batch)
        finally:
            self._sender = None
            for submission in self._queue:  # cancelled with work queued: nothing sends it now
                submission.done.cancel()
            self._queue.clear()

    async def _send(self, batch: list[_Submission]) -> None:
        if len(batch) == 1:
            await self._send_alone(batch[0])
            return
        wanting = [s for s in batch if s.eager]
        eager = (
            EagerRequest(worker_id=self._worker_id, pool=self._pool, slots=len(wanting)) if wanting else None
        )
        try:
            logs = [s.logs for s in batch if s.logs is not None]
            reply = await self._post([event for s in batch for event in s.events], eager, logs)
        except asyncio.CancelledError:
            for submission in batch:
                submission.done.cancel()
            raise
        except Exception:
            # one submission's error must not become the others': each goes again on its own
            # (the same event ids, so what the failed transaction did not keep is recorded once)
            await asyncio.gather(*(self._send_alone(s) for s in batch))
            return
        handed = list(reply.commands) if isinstance(reply.commands, list) else []
        for submission in batch:
            command = handed.pop(0) if submission.eager and handed else None
            if not submission.done.done():
                submission.done.set_result(command)

    async def _send_alone(self, submission: _Submission) -> None:
        eager = EagerRequest(worker_id=self._worker_id, pool=self._pool) if submission.eager else None
        try:
            logs = [submission.logs] if submission.logs is not None else []
            reply = await self._post(submission.events, eager, logs)
        except asyncio.CancelledError:
            submission.done.cancel()
            raise
        except Exception as exc:
            if not submission.done.done():
                submission.done.set_exception(exc)
            return
        commands = reply.commands if isinstance(reply.commands, list) else []
        if not submission.done.done():
            submission.done.set_result(commands[0] if commands else None)

    async def aclose(self) -> None:
        """Stop sending; submissions still queued fail with CancelledError."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
