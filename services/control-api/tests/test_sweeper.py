"""The sweeper (docs/sweeper.md), one round at a time against a real Postgres.

Time is moved by ageing rows (``created_at``, ``published_at``, ``lease_expires_at`` ...) in
the past, never by waiting: every test calls ``sweep()`` once and looks at what it did.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from noetl_control_api import Settings, SweepPolicy
from noetl_control_api.application import Sweeper

#: The bounds of the tests' sweeper; rows are aged past them.
POLICY = SweepPolicy(
    interval_seconds=0,  # no background loop: each test runs the rounds
    republish_seconds=60,
    step_timeout_seconds=600,
    pool_absent_seconds=300,
    retention_interval_seconds=3600,
)
LEASE = 30.0  # the test app's NOETL_COMMAND_CLAIM_LEASE_SECONDS (the default)

TIMED = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: timed, path: tests/timed}
timeout: 1h
workflow:
  - step: start
    timeout: 30
    tool: {kind: python, code: "result = {'n': 1}"}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
"""

AGENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: agent, path: tests/agent}
workflow:
  - step: start
    tool: {kind: agent, prompt: hi}
"""


@pytest.fixture
def settings(database_url: str, make_settings: Any) -> Settings:
    settings: Settings = make_settings(database_url, sweep=POLICY)
    return settings


def sweeper_of(client: Any) -> Sweeper:
    sweeper: Sweeper = client.app.state.services.sweeper
    return sweeper


async def sql(api: Any, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    cur = await api.db.execute(statement, params)
    return list(await cur.fetchall()) if cur.description else []


async def publish(api: Any, execution_id: int, seconds_ago: float = 0) -> None:
    """The publisher shipped every outbox row of the execution ``seconds_ago``."""
    await sql(
        api,
        "UPDATE noetl.outbox SET status = 'PUBLISHED', published_at = now() - make_interval(secs => %s)"
        " WHERE execution_id = %s AND status <> 'PUBLISHED'",
        seconds_ago,
        execution_id,
    )


async def events_of(api: Any, execution_id: int, event_type: str) -> list[dict[str, Any]]:
    return [
        r["payload"]
        for r in await api.outbox(execution_id)
        if r["subject"].startswith("noetl.events.") and r["payload"]["event_type"] == event_type
    ]


async def notifications(api: Any, execution_id: int) -> list[dict[str, Any]]:
    return [r for r in await api.outbox(execution_id) if r["subject"].startswith("noetl.commands.")]


async def execution(api: Any, execution_id: int) -> dict[str, Any]:
    return dict((await api.client.get(f"/api/executions/{execution_id}")).json())


async def worker(api: Any, *, worker_id: str = "w-idle", in_flight: int = 0) -> None:
    """A worker of the shared pool (the client's worker token) alive now, with two slots,
    ``in_flight`` of them busy."""
    body = {"worker_id": worker_id, "pool": "shared", "capacity": 2}
    assert (await api.client.post("/api/worker/pool/register", json=body)).status_code == 200
    beat = {"worker_id": worker_id, "in_flight": in_flight}
    assert (await api.client.post("/api/worker/pool/heartbeat", json=beat)).status_code == 204


async def assert_replays(api: Any, execution_id: int) -> None:
    replayed = await api.replay(execution_id)
    assert replayed["log_complete"] and replayed["matches"], replayed["differences"]


# -- 1. PENDING commands nobody claimed get their notification again ----------------------------


async def test_an_unclaimed_command_is_notified_again_with_a_fresh_message_id(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    sweeper = sweeper_of(api.client)
    await worker(api)  # idle: a message that reached it would have been claimed

    # notification written, not published: the publisher is behind, nothing is lost
    await sql(api, "UPDATE noetl.command SET notified_at = now() - interval '1 hour'")
    assert (await sweeper.sweep()).republished == 0
    await publish(api, execution_id, seconds_ago=59)
    assert (await sweeper.sweep()).republished == 0  # published 59 s ago: within the bound
    await publish(api, execution_id, seconds_ago=0)
    await sql(api, "UPDATE noetl.outbox SET published_at = now() - interval '61 seconds' WHERE execution_id = %s", execution_id)

    report = await sweeper.sweep()
    assert report.leader and report.republished == 1
    original, again = await notifications(api, execution_id)
    assert again["payload"] == original["payload"]  # same claim key (event_id), same command
    assert again["subject"] == original["subject"] and again["status"] == "PENDING"
    assert original["event_id"] == command["command_id"] and again["event_id"] != original["event_id"]
    (event,) = await events_of(api, execution_id, "command.republished")
    assert event["meta"] == {"command_id": command["command_id"], "attempt": 0, "pool": "shared"}
    assert event["context"]["republished"] == 1 and "within 60 s" in event["context"]["reason"]
    ((notice_id, republished),) = await sql(
        api, "SELECT notice_id, republished FROM noetl.command WHERE command_id = %s", command["command_id"]
    )
    assert (notice_id, republished) == (again["event_id"], 1)

    # the new row unpublished: nothing more; published 61 s ago: the wait has doubled to 120 s
    assert (await sweeper.sweep()).republished == 0
    await publish(api, execution_id, seconds_ago=61)
    assert (await sweeper.sweep()).republished == 0
    await sql(api, "UPDATE noetl.command SET notified_at = now() - interval '122 seconds'")
    await sql(api, "UPDATE noetl.outbox SET published_at = now() - interval '121 seconds' WHERE execution_id = %s", execution_id)
    assert (await sweeper.sweep()).republished == 1

    # both messages reach workers: the claim is the one gate
    assert (await api.claim(command["event_id"], "w1")).status_code == 200
    assert (await api.claim(command["event_id"], "w2")).status_code == 429
    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})
    assert (await execution(api, execution_id))["status"] == "COMPLETED"
    await assert_replays(api, execution_id)


async def test_a_published_notification_whose_row_was_purged_still_counts_from_its_command(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await sql(api, "DELETE FROM noetl.outbox WHERE execution_id = %s AND subject LIKE 'noetl.commands.%%'", execution_id)
    await worker(api)
    assert (await sweeper_of(api.client).sweep()).republished == 0  # notified just now
    await sql(api, "UPDATE noetl.command SET notified_at = now() - interval '61 seconds'")
    assert (await sweeper_of(api.client).sweep()).republished == 1


async def test_no_duplicate_while_the_pools_live_workers_are_all_busy_or_there_are_none(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await publish(api, execution_id, seconds_ago=3600)
    await sql(api, "UPDATE noetl.command SET notified_at = now() - interval '1 hour'")
    sweeper = sweeper_of(api.client)
    assert (await sweeper.sweep()).republished == 0  # no worker: nobody to send it to
    await worker(api, worker_id="w-busy", in_flight=2)
    assert (await sweeper.sweep()).republished == 0  # queued behind the busy worker's work, most likely
    await sql(api, "UPDATE noetl.worker SET heartbeat_at = now() - interval '31 seconds'")
    await worker(api, worker_id="w-idle-but-silent", in_flight=0)
    await sql(api, "UPDATE noetl.worker SET heartbeat_at = now() - interval '31 seconds'")
    assert (await sweeper.sweep()).republished == 0  # silent for longer than a lease: not live
    await worker(api, worker_id="w-busy", in_flight=1)
    assert (await sweeper.sweep()).republished == 1  # a free slot, and still no claim: lost


# -- 2. CLAIMED commands whose lease expired go back to PENDING, notified again ------------------


async def test_an_expired_lease_is_handed_back_and_the_dead_attempt_is_refused(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    held = await api.hold(execution_id, "w-dead")
    sweeper = sweeper_of(api.client)
    await sql(api, "UPDATE noetl.command SET lease_expires_at = now() - interval '59 seconds'")
    assert (await sweeper.sweep()).reissued == 0  # JetStream's own redelivery gets its chance first
    await sql(api, "UPDATE noetl.command SET lease_expires_at = now() - interval '61 seconds'")

    report = await sweeper.sweep()
    assert report.reissued == 1 and report.republished == 0  # the reissue wrote the notification
    (command,) = await api.open_commands(execution_id)
    assert command["status"] == "PENDING" and command["attempt"] == held["attempt"] == 1
    assert len(await notifications(api, execution_id)) == 2
    (event,) = await events_of(api, execution_id, "command.reissued")
    assert event["meta"]["attempt"] == 1 and event["context"]["worker_id"] == "w-dead"
    assert "'w-dead' (attempt 1) expired" in event["context"]["reason"]

    def late(attempt: int, worker_id: str) -> dict[str, Any]:
        return {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": "start",
            "meta": {"command_id": held["command_id"], "attempt": attempt},
            "context": {"result": {"n": 0}},
            "event_id": api.ids.next_id(),
            "worker_id": worker_id,
        }

    refused = await api.post_events(late(1, "w-dead"))
    assert refused.status_code == 409 and refused.json()["error"] == "conflict"  # nobody holds it
    claim = await api.claim(held["event_id"], "w-live")
    assert claim.status_code == 200 and claim.json()["attempt"] == 2
    stale = await api.post_events(late(1, "w-dead"))
    assert stale.status_code == 409 and stale.json()["error"] == "stale_attempt"
    await api.run_command(execution_id, {"n": 1}, worker_id="w-live")
    await assert_replays(api, execution_id)


# -- 3. step and playbook timeouts -----------------------------------------------------------------


async def test_a_command_past_its_step_timeout_fails_the_step_through_the_orchestrator(api: Any) -> None:
    await api.register(TIMED)
    execution_id = await api.execute("tests/timed")
    sweeper = sweeper_of(api.client)
    # the step's timeout (30 s) wins over the default (600 s); the worker gets one lease first
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '59 seconds'")
    assert (await sweeper.sweep()).step_timeouts == 0
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '61 seconds'")

    report = await sweeper.sweep()
    assert report.step_timeouts == 1
    view = await execution(api, execution_id)
    assert view["status"] == "FAILED"
    assert view["error"].startswith("step 'start' failed: TimeoutError: no outcome within the step's timeout of 30 s")
    (claimed,) = await events_of(api, execution_id, "command.claimed")
    assert claimed["worker_id"] == "control-api:sweeper"
    (failed,) = await events_of(api, execution_id, "command.failed")
    assert failed["context"]["error"]["type"] == "TimeoutError" and failed["meta"]["attempt"] == 1
    assert (await sweeper.sweep()).step_timeouts == 0
    await assert_replays(api, execution_id)


async def test_the_default_step_timeout_counts_from_the_start_of_the_current_attempt(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    held = await api.hold(execution_id)
    sweeper = sweeper_of(api.client)
    # issued long ago, started 60 s ago: the attempt is well within 600 s
    await sql(
        api,
        "UPDATE noetl.command SET created_at = now() - interval '2 hours', started_at = now() - interval '60 seconds',"
        " lease_expires_at = now() + interval '30 seconds'",
    )
    assert (await sweeper.sweep()).step_timeouts == 0
    await sql(api, "UPDATE noetl.command SET started_at = now() - interval '631 seconds'")
    assert (await sweeper.sweep()).step_timeouts == 1
    (failed,) = await events_of(api, execution_id, "command.failed")
    assert failed["meta"] == {"command_id": held["command_id"], "attempt": 1, "applied_id": failed["meta"]["applied_id"]}
    assert "timeout of 600 s" in failed["context"]["error"]["message"]
    # the worker that held it reports late: a duplicate, nothing changes
    late = await api.post_events(
        {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": "start",
            "meta": {"command_id": held["command_id"], "attempt": 1},
            "context": {"result": {"n": 1}},
            "event_id": api.ids.next_id(),
            "worker_id": "w1",
        }
    )
    assert late.status_code == 200 and late.json()["accepted"] == 0
    assert (await execution(api, execution_id))["status"] == "FAILED"
    await assert_replays(api, execution_id)


async def test_an_execution_past_its_playbook_timeout_fails_and_cancels_its_children(api: Any) -> None:
    await api.register(TIMED)
    await api.register()
    parent = await api.execute("tests/timed")
    untimed = await api.execute()
    child = await api.client.post("/api/execute", json={"path": "tests/linear", "parent_execution_id": parent})
    child_id = int(child.json()["execution_id"])
    rows = await sql(
        api,
        "SELECT execution_id, extract(epoch FROM deadline_at - created_at) FROM noetl.execution ORDER BY execution_id",
    )
    assert dict(rows) == {parent: 3600, untimed: None, child_id: None}
    sweeper = sweeper_of(api.client)
    assert (await sweeper.sweep()).playbook_timeouts == 0
    await sql(
        api,
        "UPDATE noetl.execution SET created_at = created_at - interval '3601 seconds',"
        " deadline_at = deadline_at - interval '3601 seconds' WHERE execution_id = %s",
        parent,
    )

    report = await sweeper.sweep()
    assert report.playbook_timeouts == 1
    view = await execution(api, parent)
    assert view["status"] == "FAILED"
    assert view["error"] == "the playbook timed out: still running after its timeout of 3600 s"
    assert await api.open_commands(parent) == []
    (failed,) = await events_of(api, parent, "playbook.failed")
    assert failed["context"] == {"error": view["error"], "abandoned_steps": ["start"], "cause": "playbook_timeout"}
    assert (await execution(api, child_id))["status"] == "CANCELLED"
    assert (await execution(api, untimed))["status"] == "RUNNING"
    assert (await sweeper.sweep()).playbook_timeouts == 0
    await assert_replays(api, parent)
    await assert_replays(api, child_id)


# -- 4. a pool with no live worker -----------------------------------------------------------------


async def test_commands_of_a_pool_without_a_live_worker_fail_naming_the_pool(api: Any, auth: Any) -> None:
    await api.register(AGENT)
    execution_id = await api.execute("tests/agent")
    sweeper = sweeper_of(api.client)
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '299 seconds'")
    assert (await sweeper.sweep()).pool_absent == 0  # not waiting that long yet
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '10 minutes'")
    python = auth.bearer("NOETL_WORKER_TOKEN_PYTHON")
    registered = await api.client.post(
        "/api/worker/pool/register", json={"worker_id": "py-1", "pool": "python"}, headers=python
    )
    assert registered.status_code == 200, registered.text
    assert (await sweeper.sweep()).pool_absent == 0  # a worker of the pool is alive: it is queued
    await sql(api, "UPDATE noetl.worker SET heartbeat_at = now() - interval '301 seconds'")

    assert (await sweeper.sweep()).pool_absent == 1
    view = await execution(api, execution_id)
    assert view["status"] == "FAILED"
    assert view["error"] == "step 'start' failed: PoolAbsent: no worker of pool 'python' has been alive for 300 s"
    await assert_replays(api, execution_id)


async def test_the_pool_rule_leaves_held_commands_alone_and_can_be_turned_off(api: Any) -> None:
    await api.register()
    held_execution = await api.execute()
    await api.hold(held_execution)
    queued = await api.execute()
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '1 hour'")
    sweeper = sweeper_of(api.client)
    sweeper.policy = msgspec.structs.replace(POLICY, pool_absent_seconds=0, step_timeout_seconds=86_400)
    assert (await sweeper.sweep()).pool_absent == 0
    sweeper.policy = msgspec.structs.replace(POLICY, step_timeout_seconds=86_400)
    assert (await sweeper.sweep()).pool_absent == 1  # the queued one; the live lease is someone's
    assert (await execution(api, queued))["status"] == "FAILED"
    assert (await execution(api, held_execution))["status"] == "RUNNING"


# -- 6. retention on a schedule ------------------------------------------------------------------------


async def test_retention_runs_once_per_interval_and_purges_keychain_entries_and_objects(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})
    await publish(api, execution_id)
    other = execution_id + 5  # 'executions/<id>5/...' must survive 'executions/<id>/...'
    await sql(
        api,
        "INSERT INTO noetl.keychain (scope_id, name, value_enc) VALUES (%s, 'token', 'x'), (0, 'global', 'y')",
        execution_id,
    )
    await sql(
        api,
        "INSERT INTO noetl.object (key, digest, bytes) VALUES (%s, 'd', 'a'), (%s, 'd', 'b'), (%s, 'd', 'c')",
        f"executions/{execution_id}/start/out.json",
        f"executions/{execution_id}/end/deep/x.bin",
        f"executions/{other}/start/out.json",
    )
    await sql(api, "INSERT INTO noetl.result_store (key, execution_id, media_type, size, data) VALUES (%s, %s, 'x', 1, 'r')", f"{execution_id}/abc", execution_id)

    report = await sweeper_of(api.client).sweep()
    assert report.retention is not None
    assert report.retention.executions_deleted == 1
    assert (report.retention.keychain_deleted, report.retention.objects_deleted) == (1, 2)
    assert report.retention.results_deleted == 1
    assert await sql(api, "SELECT scope_id, name FROM noetl.keychain") == [(0, "global")]
    assert await sql(api, "SELECT key FROM noetl.object") == [(f"executions/{other}/start/out.json",)]
    assert (await sweeper_of(api.client).sweep()).retention is None  # ran within the interval
    await sql(api, "UPDATE noetl.sweep_schedule SET last_run_at = now() - interval '3601 seconds'")
    assert (await sweeper_of(api.client).sweep()).retention is not None


# -- several sweepers --------------------------------------------------------------------------------


async def _stranded_everything(api: Any) -> dict[str, int]:
    """One case of each rule: an unclaimed command, an expired lease, a step past its timeout,
    a pool without workers, an execution past its deadline."""
    await api.register()
    await api.register(TIMED)
    await api.register(AGENT)
    cases = {name: await api.execute() for name in ("republish", "reissue")}
    cases["step_timeout"] = await api.execute("tests/timed")
    cases["pool_absent"] = await api.execute("tests/agent")
    cases["playbook_timeout"] = await api.execute("tests/timed")
    await api.hold(cases["reissue"])
    await worker(api)
    for execution_id in cases.values():
        await publish(api, execution_id, seconds_ago=61)
    await sql(api, "UPDATE noetl.command SET notified_at = now() - interval '62 seconds'")
    await sql(api, "UPDATE noetl.command SET lease_expires_at = now() - interval '61 seconds' WHERE status = 'CLAIMED'")
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '61 seconds' WHERE execution_id = %s", cases["step_timeout"])
    await sql(api, "UPDATE noetl.command SET created_at = now() - interval '301 seconds' WHERE execution_id = %s", cases["pool_absent"])
    await sql(
        api,
        "UPDATE noetl.execution SET created_at = created_at - interval '1 hour', deadline_at = now()"
        " WHERE execution_id = %s",
        cases["playbook_timeout"],
    )
    return cases


async def _recorded(api: Any, cases: dict[str, int]) -> dict[str, int]:
    counts = {}
    for name, event_type in (
        ("republish", "command.republished"),
        ("reissue", "command.reissued"),
        ("step_timeout", "command.failed"),
        ("pool_absent", "command.failed"),
        ("playbook_timeout", "playbook.failed"),
    ):
        counts[name] = len(await events_of(api, cases[name], event_type))
    return counts


@pytest.mark.parametrize("lead", [True, False], ids=["leader-lock", "row-guards-alone"])
async def test_two_sweepers_at_once_act_on_each_case_once(
    api: Any, serve_app: Any, settings: Settings, lead: bool
) -> None:
    cases = await _stranded_everything(api)
    async with serve_app(settings, node_id=2) as other:
        reports = await asyncio.gather(
            sweeper_of(api.client).sweep(lead=lead), sweeper_of(other).sweep(lead=lead)
        )
    if lead:
        assert sorted(r.leader for r in reports) == [False, True]
    totals = {
        name: sum(getattr(r, name) for r in reports)
        for name in ("republished", "reissued", "step_timeouts", "pool_absent", "playbook_timeouts")
    }
    assert totals == {"republished": 1, "reissued": 1, "step_timeouts": 1, "pool_absent": 1, "playbook_timeouts": 1}
    assert await _recorded(api, cases) == dict.fromkeys(cases, 1)
    again = await sweeper_of(api.client).sweep()
    assert (again.republished, again.reissued, again.step_timeouts, again.pool_absent) == (0, 0, 0, 0)
    for execution_id in cases.values():
        await assert_replays(api, execution_id)


# -- settings --------------------------------------------------------------------------------------


def test_the_sweep_settings_are_read_and_bounded() -> None:
    from noetl_common import ConfigError

    base = {"NOETL_DATABASE_URL": "postgresql://x/y"}
    assert Settings.from_env(base).sweep == SweepPolicy()
    read = Settings.from_env(
        {
            **base,
            "NOETL_SWEEP_INTERVAL_SECONDS": "0",
            "NOETL_PENDING_REPUBLISH_SECONDS": "2",
            "NOETL_STEP_TIMEOUT_SECONDS": "90",
            "NOETL_POOL_ABSENT_SECONDS": "0",
            "NOETL_RETENTION_INTERVAL_SECONDS": "0",
        }
    ).sweep
    assert read == SweepPolicy(
        interval_seconds=0,
        republish_seconds=2,
        step_timeout_seconds=90,
        pool_absent_seconds=0,
        retention_interval_seconds=0,
    )
    for variable, value in (
        ("NOETL_SWEEP_INTERVAL_SECONDS", "0.1"),
        ("NOETL_SWEEP_INTERVAL_SECONDS", "nan"),
        ("NOETL_PENDING_REPUBLISH_SECONDS", "0"),
        ("NOETL_PENDING_REPUBLISH_SECONDS", "inf"),
        ("NOETL_STEP_TIMEOUT_SECONDS", "-5"),
        ("NOETL_STEP_TIMEOUT_SECONDS", "9999999999"),
        ("NOETL_POOL_ABSENT_SECONDS", "1"),
        ("NOETL_RETENTION_INTERVAL_SECONDS", "5"),
        ("NOETL_RETENTION_INTERVAL_SECONDS", "soon"),
    ):
        with pytest.raises(ConfigError, match=variable):
            Settings.from_env({**base, variable: value})
