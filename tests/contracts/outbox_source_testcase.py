"""The control-api as the outbox publisher sees it (its ``OutboxSource``): one case, run against every
implementation.

The tests talk to an implementation through ``OutboxSource`` alone, plus a harness that
commits rows to the outbox as a state change does. ``test_outbox_source.py`` runs them
against the publisher tests' fake (``noetl_dev.fakes.MemoryOutbox``) and against the real
outbox routes through ``ControlPlaneClient``.
"""

from __future__ import annotations

import abc
import asyncio

import pytest
from noetl_common import ApiError, MarkDeadRequest, MarkFailedRequest, OutboxRow, outbox_delay_seconds
from noetl_outbox_publisher import OutboxSource


class OutboxHarness(abc.ABC):
    """One implementation of ``OutboxSource`` and the means to commit rows to it."""

    source: OutboxSource

    @abc.abstractmethod
    async def commit(self) -> list[OutboxRow]:
        """Rows of one execution a state change just committed (two or more), oldest first."""


def keys(rows: list[OutboxRow]) -> list[tuple[int, int, int, str, int]]:
    """What the publisher reads of a row besides its payload."""
    return [(r.outbox_id, r.event_id, r.execution_id, r.subject, r.attempts) for r in rows]


class OutboxSourceContract:
    """What the publisher relies on from the outbox routes. A subclass provides ``harness``."""

    async def test_a_claim_takes_committed_rows_oldest_first_and_only_once(
        self, harness: OutboxHarness
    ) -> None:
        rows = await harness.commit()

        claimed = await harness.source.outbox_claim(100, 0)
        again = await harness.source.outbox_claim(100, 0)

        assert keys(claimed.rows) == keys(rows) and claimed.claimed == len(rows)
        assert all(row.attempts == 0 for row in claimed.rows)
        assert (again.rows, again.claimed) == ([], 0)

    async def test_a_claim_takes_at_most_its_limit(self, harness: OutboxHarness) -> None:
        rows = await harness.commit()

        first = await harness.source.outbox_claim(1, 0)
        rest = await harness.source.outbox_claim(100, 0)

        assert keys(first.rows) == keys(rows[:1])
        assert keys(rest.rows) == keys(rows[1:])

    async def test_a_waiting_claim_returns_rows_committed_meanwhile(self, harness: OutboxHarness) -> None:
        waiting = asyncio.create_task(harness.source.outbox_claim(100, 30_000))

        rows = await harness.commit()

        assert keys((await waiting).rows) == keys(rows)

    async def test_a_claim_with_nothing_to_claim_returns_empty_after_its_wait(
        self, harness: OutboxHarness
    ) -> None:
        reply = await harness.source.outbox_claim(100, 20)
        assert (reply.rows, reply.claimed) == ([], 0)

    async def test_mark_published_counts_the_rows_it_changed(self, harness: OutboxHarness) -> None:
        rows = await harness.commit()
        ids = [row.outbox_id for row in (await harness.source.outbox_claim(100, 0)).rows]

        marked = await harness.source.outbox_mark_published(ids)
        again = await harness.source.outbox_mark_published(ids)
        unknown = await harness.source.outbox_mark_published([max(ids) + 1000])

        assert (marked, again, unknown) == (len(rows), 0, 0)
        assert (await harness.source.outbox_claim(100, 0)).rows == []

    async def test_a_claim_marks_the_rows_it_carries_and_counts_those_it_changed(
        self, harness: OutboxHarness
    ) -> None:
        rows = await harness.commit()
        ids = [row.outbox_id for row in (await harness.source.outbox_claim(100, 0)).rows]
        later = await harness.commit()

        carried = await harness.source.outbox_claim(100, 0, ids)
        again = await harness.source.outbox_claim(100, 0, ids)

        assert (carried.marked, keys(carried.rows)) == (len(rows), keys(later))
        assert (again.marked, again.rows) == (0, [])
        assert await harness.source.outbox_mark_published(ids) == 0  # marked already

    async def test_a_failed_row_waits_out_its_backoff(self, harness: OutboxHarness) -> None:
        await harness.commit()
        row, *_ = (await harness.source.outbox_claim(100, 0)).rows

        reply = await harness.source.outbox_mark_failed(
            MarkFailedRequest(
                outbox_id=row.outbox_id, error="no responders", attempts=3, max_delay_seconds=60
            )
        )

        assert (reply.marked, reply.available_at_in) == (1, outbox_delay_seconds(3, 60))
        assert (await harness.source.outbox_claim(100, 0)).rows == []  # not due yet

    async def test_a_failed_row_without_backoff_is_offered_again_with_its_attempts(
        self, harness: OutboxHarness
    ) -> None:
        await harness.commit()
        row, *_ = (await harness.source.outbox_claim(100, 0)).rows

        reply = await harness.source.outbox_mark_failed(
            MarkFailedRequest(outbox_id=row.outbox_id, error="no responders", attempts=2, max_delay_seconds=0)
        )
        offered = await harness.source.outbox_claim(100, 0)

        assert (reply.marked, reply.available_at_in) == (1, 0.0)
        assert keys(offered.rows) == [(row.outbox_id, row.event_id, row.execution_id, row.subject, 2)]

    async def test_a_dead_row_fails_its_execution_once_and_is_never_offered_again(
        self, harness: OutboxHarness
    ) -> None:
        await harness.commit()
        first, second, *_ = (await harness.source.outbox_claim(100, 0)).rows

        dead = await harness.source.outbox_mark_dead(
            MarkDeadRequest(outbox_id=first.outbox_id, error="too large")
        )
        again = await harness.source.outbox_mark_dead(
            MarkDeadRequest(outbox_id=first.outbox_id, error="too large")
        )
        other = await harness.source.outbox_mark_dead(
            MarkDeadRequest(outbox_id=second.outbox_id, error="too large")
        )
        retried = await harness.source.outbox_mark_failed(
            MarkFailedRequest(
                outbox_id=first.outbox_id, error="no responders", attempts=1, max_delay_seconds=0
            )
        )

        assert (dead.marked, dead.execution_failed) == (1, True)
        assert (again.marked, again.execution_failed) == (0, False)
        assert (other.marked, other.execution_failed) == (1, False)  # its execution had failed already
        assert retried.marked == 0
        # failing the execution may write rows of its own; the dead ones are not among them
        offered = {row.outbox_id for row in (await harness.source.outbox_claim(100, 0)).rows}
        assert not offered & {first.outbox_id, second.outbox_id}

    async def test_mark_dead_of_an_unknown_row_is_not_found(self, harness: OutboxHarness) -> None:
        rows = await harness.commit()

        with pytest.raises(ApiError) as refused:
            await harness.source.outbox_mark_dead(
                MarkDeadRequest(outbox_id=max(r.outbox_id for r in rows) + 1000, error="too large")
            )

        assert refused.value.status_code == 404

    async def test_limits_leave_room_for_headers(self, harness: OutboxHarness) -> None:
        limits = await harness.source.limits()
        assert 0 < limits.max_event_bytes < limits.nats_max_payload
