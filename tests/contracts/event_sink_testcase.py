"""The control-api as the projector sees it (its ``EventSink``): one case, run against every implementation.

``test_event_sink.py`` runs it against the projector tests' fake (``noetl_dev.fakes.MemorySink``)
and against the real project route through ``ControlPlaneClient``.
"""

from __future__ import annotations

import abc

import msgspec
import pytest
from noetl_common import ApiError, Event, Snowflake, utc_now_iso
from noetl_projector import EventSink

IDS = Snowflake(902)


class SinkHarness(abc.ABC):
    """One implementation of ``EventSink``."""

    sink: EventSink


def events(count: int, execution_id: int = 4242) -> list[Event]:
    """Events as the projector decodes them from NOETL_EVENTS."""
    return [
        Event(
            execution_id=execution_id,
            event_type="step.enter",
            event_id=IDS.next_id(),
            step=f"step_{i}",
            status="RUNNING",
            created_at=utc_now_iso(),
            context={"i": i},
            meta={"shard": 0},
            catalog_path="contracts/sink",
        )
        for i in range(count)
    ]


class EventSinkContract:
    """What the projector relies on from the project route. A subclass provides ``harness``."""

    async def test_new_events_are_projected(self, harness: SinkHarness) -> None:
        reply = await harness.sink.project_events(events(3))
        assert (reply.projected, reply.duplicates) == (3, 0)

    async def test_projecting_is_idempotent_by_event_id(self, harness: SinkHarness) -> None:
        first, second = events(2), events(1)
        await harness.sink.project_events(first)

        again = await harness.sink.project_events(first)
        mixed = await harness.sink.project_events([*first, *second])
        twice = await harness.sink.project_events([*events(1)] * 2)

        assert (again.projected, again.duplicates) == (0, 2)
        assert (mixed.projected, mixed.duplicates) == (1, 2)
        assert (twice.projected, twice.duplicates) == (1, 1)

    async def test_one_event_id_in_two_executions_is_two_events(self, harness: SinkHarness) -> None:
        """Event ids are unique per execution only (two processes may mint one id for two
        executions: docs/architecture.md#3-identifiers); the read model keys events by both."""
        mine, theirs = events(1, execution_id=4242), events(1, execution_id=4343)
        theirs = [msgspec.structs.replace(theirs[0], event_id=mine[0].event_id)]

        reply = await harness.sink.project_events([*mine, *theirs])
        again = await harness.sink.project_events(theirs)

        assert (reply.projected, reply.duplicates) == (2, 0)
        assert (again.projected, again.duplicates) == (0, 1)

    async def test_limits_declare_the_event_shard_count(self, harness: SinkHarness) -> None:
        """The projector refuses to start when its NOETL_EVENT_SHARD_COUNT is not this one."""
        limits = await harness.sink.limits()
        assert limits.event_shard_count == 1  # the control-api's default

    async def test_a_batch_with_an_event_it_refuses_is_kept_not_at_all(self, harness: SinkHarness) -> None:
        good = events(2)
        anonymous = Event(execution_id=4242, event_type="step.enter", step="x")

        with pytest.raises(ApiError) as refused:
            await harness.sink.project_events([*good, anonymous])

        # a status the projector reads as "this content is wrong": it bisects, it does not retry
        assert refused.value.status_code == 400
        assert refused.value.body is not None and refused.value.body.error == "validation_error"
        reply = await harness.sink.project_events(good)
        assert (reply.projected, reply.duplicates) == (2, 0)
