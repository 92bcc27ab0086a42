"""Terminal batches of commands finishing together share a POST; errors stay with their command."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from noetl_common import ClaimReply, CommandSpec, EagerRequest, Event, EventsReply, StepLogLine, StepLogs
from noetl_system_worker._batching import TerminalBatcher


class StaleAttempt(Exception):
    pass


def _events(command_id: int) -> list[Event]:
    return [
        Event(
            execution_id=1,
            event_type="command.completed",
            event_id=command_id,
            meta={"command_id": command_id},
        )
    ]


def _claim(event_id: int) -> ClaimReply:
    return ClaimReply(
        execution_id=1,
        event_id=event_id,
        command_id=event_id,
        step="s",
        attempt=1,
        lease_seconds=30.0,
        pool="shared",
        tool_kind="python",
        command=CommandSpec(tasks=[]),
        catalog_path="p",
    )


class FakeApi:
    """Records every POST; the first one is held until ``release`` is set, so others queue."""

    def __init__(self, stale: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.posts: list[tuple[list[int], EagerRequest | None]] = []
        self.logs: list[list[int]] = []  # the command ids of each POST's step logs
        self.release = asyncio.Event()
        self.first_in_flight = asyncio.Event()
        self.stale = stale
        self.next_claim = 100

    async def post(
        self, events: list[Event], eager: EagerRequest | None, logs: list[StepLogs]
    ) -> EventsReply:
        ids = [e.event_id or 0 for e in events]
        self.posts.append((ids, eager))
        self.logs.append([log.command_id for log in logs])
        if len(self.posts) == 1:
            self.first_in_flight.set()
            await self.release.wait()
        if self.stale & set(ids):
            raise StaleAttempt(f"stale: {sorted(self.stale & set(ids))}")
        handed = []
        for _ in range(eager.slots if eager else 0):
            self.next_claim += 1
            handed.append(_claim(self.next_claim))
        return EventsReply(accepted=len(events), commands=handed)


def _batcher(api: FakeApi, max_batch: int = 32) -> TerminalBatcher:
    return TerminalBatcher(api.post, worker_id="w", pool="shared", max_batch=max_batch)


async def _queue_behind_first(
    api: FakeApi, batcher: TerminalBatcher, ids: list[int], eager: bool
) -> list[Any]:
    """Submit ``ids[0]``, hold its POST, submit the rest meanwhile, then let everything go."""
    first = batcher.submit(_events(ids[0]), eager=eager)
    await api.first_in_flight.wait()
    rest = [batcher.submit(_events(i), eager=eager) for i in ids[1:]]  # queued behind the POST
    api.release.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


async def test_a_lone_terminal_batch_is_sent_at_once_with_one_eager_slot() -> None:
    api = FakeApi()
    api.release.set()
    handed = await _batcher(api).submit(_events(1), eager=True)
    assert api.posts == [([1], EagerRequest(worker_id="w", pool="shared", slots=1))]
    assert isinstance(handed, ClaimReply)


async def test_batches_finishing_while_a_post_is_in_flight_share_the_next_post() -> None:
    api = FakeApi()
    results = await _queue_behind_first(api, _batcher(api), [1, 2, 3, 4], eager=True)
    assert [ids for ids, _ in api.posts] == [[1], [2, 3, 4]]
    assert api.posts[1][1] == EagerRequest(worker_id="w", pool="shared", slots=3)
    # one handed-over command per submission, none twice
    assert all(isinstance(r, ClaimReply) for r in results)
    assert len({r.event_id for r in results}) == 4


async def test_without_eager_no_slots_are_asked_for() -> None:
    api = FakeApi()
    results = await _queue_behind_first(api, _batcher(api), [1, 2, 3], eager=False)
    assert [eager for _, eager in api.posts] == [None, None]
    assert results == [None, None, None]


async def test_max_batch_bounds_a_post() -> None:
    api = FakeApi()
    await _queue_behind_first(api, _batcher(api, max_batch=2), [1, 2, 3, 4, 5], eager=False)
    assert [ids for ids, _ in api.posts] == [[1], [2, 3], [4, 5]]


async def test_an_error_of_a_shared_post_stays_with_the_command_it_belongs_to() -> None:
    api = FakeApi(stale={3})
    results = await _queue_behind_first(api, _batcher(api), [1, 2, 3, 4], eager=True)
    # the shared POST [2, 3, 4] failed; each went again alone: only 3's error is 3's
    assert [ids for ids, _ in api.posts][:2] == [[1], [2, 3, 4]]
    assert sorted(ids[0] for ids, _ in api.posts[2:]) == [2, 3, 4]
    assert isinstance(results[2], StaleAttempt)
    assert all(isinstance(results[i], ClaimReply) for i in (0, 1, 3))


async def test_closing_cancels_what_is_still_queued() -> None:
    api = FakeApi()
    batcher = _batcher(api)
    first = batcher.submit(_events(1), eager=False)
    await api.first_in_flight.wait()
    queued = batcher.submit(_events(2), eager=False)
    await batcher.aclose()
    for task in (first, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [ids for ids, _ in api.posts] == [[1]]


def _logs(command_id: int) -> StepLogs:
    return StepLogs(
        command_id=command_id, lines=[StepLogLine(stream="stdout", at="2026-01-01T00:00:00Z", text="x")]
    )


async def test_step_logs_travel_with_their_command_and_go_again_alone_with_it() -> None:
    api = FakeApi(stale={3})
    batcher = _batcher(api)
    first = batcher.submit(_events(1), eager=False, logs=_logs(1))
    await api.first_in_flight.wait()
    rest = [batcher.submit(_events(i), eager=False, logs=_logs(i) if i != 4 else None) for i in (2, 3, 4)]
    api.release.set()
    await asyncio.gather(first, *rest, return_exceptions=True)
    # the shared POST carried the logs of 2 and 3 (4 printed nothing); each retry alone its own
    assert api.logs[:2] == [[1], [2, 3]]
    alone = {tuple(ids): logs for (ids, _), logs in zip(api.posts[2:], api.logs[2:], strict=True)}
    assert alone == {(2,): [2], (3,): [3], (4,): []}
