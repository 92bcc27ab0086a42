"""The control-api as the worker sees it: one case, run against every implementation.

The worker reaches the control-api only through its ``ControlPlane`` protocol. These tests
talk to an implementation through that protocol alone, plus a harness for what happens
outside it: a playbook issuing commands, a lease running out, an execution cancelled, an
admin storing secrets. ``test_control_plane.py`` runs them against the worker tests' fake
(``noetl_dev.fakes.FakeControlPlane``) and against the real control-api through
``ControlPlaneClient``, so the fake cannot drift from the API it stands in for.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from noetl_common import (
    ApiError,
    ClaimReply,
    EagerRequest,
    Event,
    Snowflake,
    WorkerHeartbeat,
    WorkerRegistration,
    utc_now_iso,
)
from noetl_system_worker import ControlPlane

#: Ids of the events the tests post, as a worker mints them (a node id of its own).
IDS = Snowflake(901)
_STATUS = {
    "command.started": "RUNNING",
    "command.heartbeat": "RUNNING",
    "command.completed": "COMPLETED",
    "command.failed": "FAILED",
}


@dataclass(frozen=True)
class Issued:
    """A command the control-api issued, as its notification names it."""

    execution_id: int
    event_id: int
    command_id: int
    step: str


class WorkerHarness(abc.ABC):
    """One implementation of ``ControlPlane`` and the means to set the scene around it."""

    #: the implementation under test
    api: ControlPlane
    #: the step whose command :meth:`issue_chain`'s command leads to
    next_step = "second"

    @abc.abstractmethod
    async def issue(self) -> Issued:
        """A new PENDING command of the shared pool: one step, one python task."""

    @abc.abstractmethod
    async def issue_chain(self) -> Issued:
        """Like :meth:`issue`, but completing the command issues :attr:`next_step`'s command
        (of the shared pool too)."""

    @abc.abstractmethod
    async def expire_lease(self, event_id: int) -> None:
        """Let the lease on the command run out, as ``lease_seconds`` without a renewal would."""

    @abc.abstractmethod
    async def cancel(self, issued: Issued) -> None:
        """Cancel the command's execution, as a user would."""

    @abc.abstractmethod
    async def add_credential(self, name: str, credential_type: str, data: dict[str, Any]) -> None:
        """Store a credential every playbook may use, as an admin would."""

    @abc.abstractmethod
    async def add_keychain(self, name: str, value: Any) -> None:
        """Store a global keychain entry every playbook may use, as an admin would."""


def event(
    command: Issued | ClaimReply,
    event_type: str,
    worker_id: str,
    attempt: int,
    *,
    context: dict[str, Any] | None = None,
) -> Event:
    """An event of ``command`` as the worker posts it (its own event id, meta naming the attempt)."""
    return Event(
        execution_id=command.execution_id,
        event_type=event_type,
        event_id=IDS.next_id(),
        step=command.step,
        status=_STATUS.get(event_type),
        created_at=utc_now_iso(),
        context=context,
        worker_id=worker_id,
        meta={"command_id": command.command_id, "attempt": attempt},
    )


def outcome(claim: ClaimReply, event_type: str, worker_id: str) -> Event:
    """The terminal event of a claimed command."""
    context = {"result": {"n": 1}} if event_type == "command.completed" else {"error": {"message": "boom"}}
    return event(claim, event_type, worker_id, claim.attempt, context=context)


async def refused(call: Awaitable[Any]) -> ApiError:
    """The ApiError ``call`` raises (the test fails when it succeeds)."""
    with pytest.raises(ApiError) as caught:
        await call
    return caught.value


def reason(error: ApiError) -> tuple[int, str | None]:
    """Status and error code of a refusal: what the worker decides on."""
    return error.status_code, error.body.error if error.body else None


class ControlPlaneContract:
    """What the worker relies on from the control-api. A subclass provides the ``harness`` fixture."""

    # -- claims ------------------------------------------------------------------------------
    async def test_a_pending_command_is_claimed_at_attempt_one(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()

        claim = await harness.api.claim_command(issued.event_id, "w1")

        assert (claim.execution_id, claim.event_id, claim.command_id, claim.step) == (
            issued.execution_id,
            issued.event_id,
            issued.command_id,
            issued.step,
        )
        assert claim.attempt == 1 and claim.lease_seconds > 0
        assert claim.pool == "shared"
        assert [task.kind for task in claim.command.tasks] == ["python"] and claim.tool_kind == "python"

    async def test_a_held_command_is_refused_to_every_claim_while_the_lease_lasts(
        self, harness: WorkerHarness
    ) -> None:
        issued = await harness.issue()
        await harness.api.claim_command(issued.event_id, "w1")

        for worker_id in ("w2", "w1"):  # the holder's own redelivered notification too
            error = await refused(harness.api.claim_command(issued.event_id, worker_id))
            assert reason(error) == (429, "lease_held")
            assert error.retry_after is not None and error.retry_after > 0  # when to ask again
            extra = error.body.extra if error.body is not None else None
            assert isinstance(extra, dict) and extra["worker_id"] == "w1"  # who holds it (logged)

    async def test_an_expired_lease_goes_to_the_next_claim_at_the_next_attempt(
        self, harness: WorkerHarness
    ) -> None:
        issued = await harness.issue()
        first = await harness.api.claim_command(issued.event_id, "w1")
        await harness.expire_lease(issued.event_id)

        second = await harness.api.claim_command(issued.event_id, "w2")

        assert second.command_id == first.command_id and second.attempt == first.attempt + 1

    async def test_claim_of_an_unknown_command_is_not_found(self, harness: WorkerHarness) -> None:
        error = await refused(harness.api.claim_command(IDS.next_id(), "w1"))
        assert reason(error) == (404, "not_found")

    # -- events ------------------------------------------------------------------------------
    async def test_events_of_an_earlier_attempt_are_refused_as_stale(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()
        first = await harness.api.claim_command(issued.event_id, "w1")
        await harness.expire_lease(issued.event_id)
        second = await harness.api.claim_command(issued.event_id, "w2")
        current = event(second, "command.heartbeat", "w2", second.attempt)

        error = await refused(
            harness.api.post_events([current, event(first, "command.started", "w1", first.attempt)])
        )

        assert reason(error) == (409, "stale_attempt")
        reply = await harness.api.post_events([current])  # nothing of the refused batch was kept
        assert (reply.accepted, reply.duplicates) == (1, 0)

    async def test_events_before_the_claim_are_refused(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()

        error = await refused(harness.api.post_events([event(issued, "command.started", "w1", 1)]))

        assert reason(error) == (409, "conflict")

    async def test_events_are_idempotent_by_event_id(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()
        claim = await harness.api.claim_command(issued.event_id, "w1")
        batch = [
            event(claim, "command.started", "w1", claim.attempt),
            event(claim, "command.heartbeat", "w1", claim.attempt),
        ]

        first = await harness.api.post_events(batch)
        again = await harness.api.post_events(batch)
        beat = event(claim, "command.heartbeat", "w1", claim.attempt)
        twice = await harness.api.post_events([beat, beat])

        assert (first.accepted, first.duplicates) == (2, 0)
        assert (again.accepted, again.duplicates) == (0, 2)
        assert (twice.accepted, twice.duplicates) == (1, 1)

    @pytest.mark.parametrize("renewal", ["command.started", "command.heartbeat"])
    async def test_a_started_or_heartbeat_event_renews_the_lease(
        self, harness: WorkerHarness, renewal: str
    ) -> None:
        issued = await harness.issue()
        claim = await harness.api.claim_command(issued.event_id, "w1")
        await harness.expire_lease(issued.event_id)

        reply = await harness.api.post_events([event(claim, renewal, "w1", claim.attempt)])

        assert reply.accepted == 1
        error = await refused(harness.api.claim_command(issued.event_id, "w2"))
        assert reason(error) == (429, "lease_held")

    @pytest.mark.parametrize(
        "terminal, status", [("command.completed", "COMPLETED"), ("command.failed", "FAILED")]
    )
    async def test_a_terminal_event_settles_the_command(
        self, harness: WorkerHarness, terminal: str, status: str
    ) -> None:
        issued = await harness.issue()
        claim = await harness.api.claim_command(issued.event_id, "w1")

        done = await harness.api.post_events(
            [event(claim, "command.started", "w1", claim.attempt), outcome(claim, terminal, "w1")]
        )

        assert (done.accepted, done.duplicates) == (2, 0)
        # later events of the command change nothing, whatever attempt they name
        late = await harness.api.post_events(
            [
                event(claim, "command.heartbeat", "w1", claim.attempt),
                outcome(msgspec.structs.replace(claim, attempt=claim.attempt + 1), terminal, "w1"),
            ]
        )
        assert (late.accepted, late.duplicates) == (0, 2)
        error = await refused(harness.api.claim_command(issued.event_id, "w2"))
        assert reason(error) == (409, "conflict")
        failed = await harness.api.fail_command(issued.event_id, "dead-lettered", "w1")
        assert (failed["failed"], failed["status"]) == (False, status)

    async def test_a_cancelled_command_refuses_progress_and_ignores_its_outcome(
        self, harness: WorkerHarness
    ) -> None:
        issued = await harness.issue()
        claim = await harness.api.claim_command(issued.event_id, "w1")
        await harness.cancel(issued)

        error = await refused(
            harness.api.post_events([event(claim, "command.heartbeat", "w1", claim.attempt)])
        )
        late = await harness.api.post_events([outcome(claim, "command.completed", "w1")])

        assert reason(error) == (409, "conflict")  # the worker stops the task
        assert (late.accepted, late.duplicates) == (0, 1)
        assert reason(await refused(harness.api.claim_command(issued.event_id, "w2"))) == (409, "conflict")

    # -- eager dispatch ----------------------------------------------------------------------
    async def test_eager_dispatch_hands_the_next_command_to_the_worker(self, harness: WorkerHarness) -> None:
        issued = await harness.issue_chain()
        claim = await harness.api.claim_command(issued.event_id, "w1")

        reply = await harness.api.post_events(
            [outcome(claim, "command.completed", "w1")], EagerRequest(worker_id="w1", pool="shared", slots=1)
        )

        assert reply.accepted == 1 and reply.commands is not msgspec.UNSET
        [handed] = reply.commands
        assert handed.step == harness.next_step and handed.attempt == 1 and handed.pool == "shared"
        # its notification still flows; a claim of it meets the lease the worker holds
        error = await refused(harness.api.claim_command(handed.event_id, "w2"))
        assert reason(error) == (429, "lease_held")
        finished = await harness.api.post_events([outcome(handed, "command.completed", "w1")])
        assert finished.accepted == 1

    async def test_without_eager_no_command_is_handed_over(self, harness: WorkerHarness) -> None:
        issued = await harness.issue_chain()
        claim = await harness.api.claim_command(issued.event_id, "w1")

        reply = await harness.api.post_events([outcome(claim, "command.completed", "w1")])

        assert reply.accepted == 1 and reply.commands is msgspec.UNSET

    # -- dead-lettered commands --------------------------------------------------------------
    async def test_fail_command_fails_an_open_command_once(self, harness: WorkerHarness) -> None:
        pending, held = await harness.issue(), await harness.issue()
        await harness.api.claim_command(held.event_id, "w1")

        for issued in (pending, held):
            failed = await harness.api.fail_command(issued.event_id, "delivered too often", "w9")
            again = await harness.api.fail_command(issued.event_id, "delivered too often", "w9")

            assert (failed["failed"], failed["status"], failed["command_id"]) == (
                True,
                "FAILED",
                issued.command_id,
            )
            assert (again["failed"], again["status"]) == (False, "FAILED")
            assert reason(await refused(harness.api.claim_command(issued.event_id, "w2"))) == (
                409,
                "conflict",
            )

    async def test_fail_command_of_an_unknown_command_is_not_found(self, harness: WorkerHarness) -> None:
        error = await refused(harness.api.fail_command(IDS.next_id(), "delivered too often", "w9"))
        assert reason(error) == (404, "not_found")

    # -- registry, results, secrets ----------------------------------------------------------
    async def test_a_worker_registers_heartbeats_and_deregisters(self, harness: WorkerHarness) -> None:
        registered = await harness.api.register_worker(
            WorkerRegistration(worker_id="w1", pool="shared", capacity=4)
        )

        assert registered is not None and registered["worker_id"] == "w1"
        assert isinstance(registered["node_id"], int)  # the worker's Snowflake node
        await harness.api.heartbeat_worker(WorkerHeartbeat(worker_id="w1", pool="shared", in_flight=1))
        await harness.api.deregister_worker("w1")

    async def test_a_result_is_stored_under_its_content_address(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()
        await harness.api.claim_command(issued.event_id, "w1")
        data = msgspec.json.encode({"rows": 3, "text": "x" * 100})

        ref = await harness.api.put_result(issued.execution_id, data, "application/json")
        again = await harness.api.put_result(issued.execution_id, data, "application/json")

        key = f"{issued.execution_id}/{hashlib.sha256(data).hexdigest()}"
        assert ref == {
            "$ref": {"store": "noetl.result", "key": key, "size": len(data), "media_type": "application/json"}
        }
        assert again == ref

    async def test_credentials_resolve_for_the_held_command(self, harness: WorkerHarness) -> None:
        issued = await harness.issue()
        await harness.api.claim_command(issued.event_id, "w1")
        await harness.add_credential("pg", "postgres", {"user": "etl", "password": "pw-4711"})

        found = await harness.api.resolve_credentials(
            ["pg"], issued.execution_id, event_id=issued.event_id, worker_id="w1"
        )
        error = await refused(
            harness.api.resolve_credentials(
                ["pg", "missing"], issued.execution_id, event_id=issued.event_id, worker_id="w1"
            )
        )

        assert found["pg"]["credential_type"] == "postgres"
        assert found["pg"]["data"] == {"user": "etl", "password": "pw-4711"}
        assert reason(error) == (404, "not_found")

    async def test_keychain_entries_resolve_and_a_missing_one_is_not_found(
        self, harness: WorkerHarness
    ) -> None:
        issued = await harness.issue()
        await harness.api.claim_command(issued.event_id, "w1")
        await harness.add_keychain("api_key", "kc-value-1234")

        found = await harness.api.resolve_keychain(
            ["api_key"], issued.execution_id, event_id=issued.event_id, worker_id="w1"
        )
        error = await refused(
            harness.api.resolve_keychain(
                ["api_key", "missing"], issued.execution_id, event_id=issued.event_id, worker_id="w1"
            )
        )

        assert found == {"api_key": "kc-value-1234"}
        assert reason(error) == (404, "not_found")
