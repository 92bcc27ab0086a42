"""The publisher's ``OutboxSource``: the publisher tests' fake and the real control-api, held to one contract."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from noetl_common import ControlPlaneClient, OutboxRow, command_subject, event_subject
from noetl_dev.fakes import MemoryOutbox
from outbox_source_testcase import OutboxHarness, OutboxSourceContract
from real_control_api import RunningControlApi

ONE_STEP = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: outbox_rows, path: contracts/outbox_rows}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
"""


class FakeHarness(OutboxHarness):
    """``MemoryOutbox``; a commit adds the rows an execution start writes: events and a command."""

    def __init__(self) -> None:
        self.outbox = MemoryOutbox()
        self.source = self.outbox
        self._ids = itertools.count(1)

    async def commit(self) -> list[OutboxRow]:
        execution_id = next(self._ids) + 10_000
        subjects = [event_subject(execution_id, 1)] * 3 + [command_subject("shared", execution_id)]
        rows = []
        for subject in subjects:
            outbox_id, event_id = next(self._ids), next(self._ids) + 20_000
            payload = {"execution_id": execution_id, "event_id": event_id, "event_type": "step.enter"}
            rows.append(
                OutboxRow(
                    outbox_id=outbox_id,
                    event_id=event_id,
                    execution_id=execution_id,
                    subject=subject,
                    payload=payload,
                )
            )
        await self.outbox.add(*rows)
        return rows


class ControlApiHarness(OutboxHarness):
    """The real outbox routes through ``ControlPlaneClient`` with the publisher's token; a
    commit starts an execution as an admin and reads back the rows it wrote."""

    def __init__(
        self, running: RunningControlApi, source: ControlPlaneClient, admin: httpx.AsyncClient
    ) -> None:
        self.running = running
        self.source = source
        self.admin = admin

    async def commit(self) -> list[OutboxRow]:
        started = await self.admin.post("/api/execute", json={"path": "contracts/outbox_rows"})
        assert started.status_code == 201, started.text
        rows = await self.running.sql(
            "SELECT outbox_id, event_id, execution_id, subject, payload, attempts FROM noetl.outbox"
            " WHERE execution_id = %s ORDER BY outbox_id",
            (int(started.json()["execution_id"]),),
        )
        return [
            OutboxRow(
                outbox_id=r[0], event_id=r[1], execution_id=r[2], subject=r[3], payload=r[4], attempts=r[5]
            )
            for r in rows
        ]


class TestMemoryOutbox(OutboxSourceContract):
    @pytest.fixture
    def harness(self) -> OutboxHarness:
        return FakeHarness()


class TestControlApi(OutboxSourceContract):
    @pytest.fixture
    async def harness(self, control_api: RunningControlApi) -> AsyncIterator[OutboxHarness]:
        async with control_api.client("NOETL_PUBLISHER_TOKEN") as source, control_api.admin() as admin:
            registered = await admin.post("/api/catalog/register", json={"content": ONE_STEP})
            assert registered.status_code == 201, registered.text
            yield ControlApiHarness(control_api, source, admin)
