"""The worker's ``ControlPlane``: the worker tests' fake and the real control-api, held to one contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from control_plane_testcase import ControlPlaneContract, Issued, WorkerHarness
from noetl_common import ControlPlaneClient, TaskSpec
from noetl_dev.fakes import FakeControlPlane
from real_control_api import RunningControlApi

ONE_STEP = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: one_step, path: contracts/one_step}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
"""

TWO_STEPS = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: two_steps, path: contracts/two_steps}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
    next: {spec: {mode: exclusive}, arcs: [{step: second}]}
  - step: second
    tool: {kind: python, code: "result = {'n': 2}"}
"""

PYTHON = [TaskSpec(name="start", kind="python", config={"code": "result = {'n': 1}"})]


class FakeHarness(WorkerHarness):
    """``FakeControlPlane``, its scene set through its own test hooks."""

    def __init__(self) -> None:
        # node_id: answer registrations as the real API does, not as one that replies 204
        self.fake = FakeControlPlane(node_id=7)
        self.api = self.fake

    async def issue(self) -> Issued:
        note = self.fake.add_command(PYTHON)
        return Issued(note.execution_id, note.event_id, note.command_id, note.step)

    async def issue_chain(self) -> Issued:
        first = await self.issue()
        second = self.fake.add_command(PYTHON, step=self.next_step)
        self.fake.eager_next.append(second.event_id)
        return first

    async def expire_lease(self, event_id: int) -> None:
        self.fake.expire_lease(event_id)

    async def cancel(self, issued: Issued) -> None:
        self.fake.commands[issued.event_id].status = "CANCELLED"

    async def add_credential(self, name: str, credential_type: str, data: dict[str, Any]) -> None:
        self.fake.credentials[name] = {"name": name, "credential_type": credential_type, "data": data}

    async def add_keychain(self, name: str, value: Any) -> None:
        self.fake.keychain[name] = value


class ControlApiHarness(WorkerHarness):
    """The real control-api through ``ControlPlaneClient`` with the shared pool's worker token;
    the scene is set as an admin (and, where no route does it, in the database)."""

    def __init__(self, running: RunningControlApi, api: ControlPlaneClient, admin: httpx.AsyncClient) -> None:
        self.running = running
        self.api = api
        self.admin = admin

    async def _start(self, path: str) -> Issued:
        started = await self.admin.post("/api/execute", json={"path": path})
        assert started.status_code == 201, started.text
        execution_id = int(started.json()["execution_id"])
        [(event_id, command_id, step)] = await self.running.sql(
            "SELECT event_id, command_id, step FROM noetl.command WHERE execution_id = %s AND status = 'PENDING'",
            (execution_id,),
        )
        return Issued(execution_id, event_id, command_id, step)

    async def issue(self) -> Issued:
        return await self._start("contracts/one_step")

    async def issue_chain(self) -> Issued:
        return await self._start("contracts/two_steps")

    async def expire_lease(self, event_id: int) -> None:
        await self.running.sql(
            "UPDATE noetl.command SET lease_expires_at = now() - interval '1 second' WHERE event_id = %s",
            (event_id,),
        )

    async def cancel(self, issued: Issued) -> None:
        cancelled = await self.admin.post(f"/api/executions/{issued.execution_id}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text

    async def add_credential(self, name: str, credential_type: str, data: dict[str, Any]) -> None:
        stored = await self.admin.post(
            "/api/credentials", json={"name": name, "credential_type": credential_type, "data": data}
        )
        assert stored.status_code == 201, stored.text

    async def add_keychain(self, name: str, value: Any) -> None:
        stored = await self.admin.post("/api/keychain", json={"name": name, "value": value})
        assert stored.status_code == 201, stored.text


class TestFakeControlPlane(ControlPlaneContract):
    @pytest.fixture
    def harness(self) -> WorkerHarness:
        return FakeHarness()


class TestControlApi(ControlPlaneContract):
    @pytest.fixture
    async def harness(self, control_api: RunningControlApi) -> AsyncIterator[WorkerHarness]:
        async with control_api.client("NOETL_WORKER_TOKEN_SHARED") as api, control_api.admin() as admin:
            for content in (ONE_STEP, TWO_STEPS):
                registered = await admin.post("/api/catalog/register", json={"content": content})
                assert registered.status_code == 201, registered.text
            yield ControlApiHarness(control_api, api, admin)
