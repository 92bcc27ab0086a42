"""The projector's ``EventSink``: the projector tests' fake and the real control-api, held to one contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from event_sink_testcase import EventSinkContract, SinkHarness
from noetl_dev.fakes import MemorySink
from noetl_projector import EventSink
from real_control_api import RunningControlApi


class Harness(SinkHarness):
    def __init__(self, sink: EventSink) -> None:
        self.sink = sink


class TestMemorySink(EventSinkContract):
    @pytest.fixture
    def harness(self) -> SinkHarness:
        return Harness(MemorySink())


class TestControlApi(EventSinkContract):
    @pytest.fixture
    async def harness(self, control_api: RunningControlApi) -> AsyncIterator[SinkHarness]:
        async with control_api.client("NOETL_PROJECTOR_TOKEN") as client:
            yield Harness(client)
