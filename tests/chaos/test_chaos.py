"""Chaos: 200 executions of a mixed playbook while every process is killed -9 in turn.

Started by ``make chaos`` (``.ci/run`` runs it after ``make test``). A real stack: Postgres,
nats-server, control-api, outbox-publisher, projector, workers. The playbook has python steps, a
parallel loop and a conditional branch; every step writes its side effect to
``chaos.effect`` keyed by (execution, step, iteration) with ``ON CONFLICT DO NOTHING`` and
logs every run of the tool to ``chaos.run`` (no key), so re-executions after a kill show up
honestly. While the executions run, the control-api, the outbox-publisher, the projector, the
shared worker, nats-server and Postgres are each SIGKILLed and restarted, one after another,
each at a set point of progress. Then: every execution COMPLETED, every side effect exactly
once, ``noetl.event`` equal to the outbox's event rows (nothing lost, nothing doubled), one
terminal event per command. The figures are printed and written to bench/results/.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev._pgroup import stop_group
from noetl_dev._procs import start_nats, start_postgres
from noetl_dev.testing import suite_stack

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
EXECUTIONS = 200
#: Commands per execution: start, 3 loop iterations, one branch, end.
COMMANDS_PER_EXECUTION = 6
#: Who is killed, in this order, each once the workload passed the next progress mark.
VICTIMS = ("control-api", "outbox-publisher", "projector", "worker-shared", "nats", "postgres")
#: The whole run is bounded: executions must all be terminal within this after the last kill.
SETTLE_TIMEOUT = 180.0

# A step's side effect. The tool retries its own database connection (Postgres is killed too);
# the effect is idempotent by key, the run log is not.
EFFECT = """
import time, psycopg
deadline = time.monotonic() + 120
while True:
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO chaos.run (execution_id, step, iteration) VALUES (%s, %s, %s)",
                (eid, step_name, it),
            )
            conn.execute(
                "INSERT INTO chaos.effect (execution_id, step, iteration) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (eid, step_name, it),
            )
        break
    except psycopg.OperationalError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
time.sleep(pause)
"""


def _step(name: str, code: str, iteration: str = "0", extra: str = "") -> str:
    body = (EFFECT + code).replace("\n", "\n        ")
    return f"""
  - step: {name}{extra}
    tool:
      kind: python
      input:
        dsn: "{{{{ dsn }}}}"
        eid: "{{{{ execution_id }}}}"
        step_name: {name}
        it: "{iteration}"
        pause: "{{{{ pause }}}}"
        n: "{{{{ n }}}}"
      code: |
        {body}"""


PLAYBOOK = (
    """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: chaos_mixed, path: chaos/mixed}
workload: {dsn: "", pause: 0.2, n: 0}
workflow:"""
    + _step("start", "result = {'items': [0, 1, 2], 'even': n % 2 == 0}\n")
    + """
    next: {spec: {mode: exclusive}, arcs: [{step: fan}]}"""
    + _step(
        "fan",
        "result = {'i': it}\n",
        iteration="{{ iter.index }}",
        extra="""
    loop: {in: "{{ start['items'] }}", iterator: item, spec: {mode: parallel}}""",
    )
    + """
    next: {spec: {mode: exclusive}, arcs: [{step: even, when: "{{ start.even }}"}, {step: odd}]}"""
    + _step("even", "result = {'route': 'even'}\n")
    + """
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}"""
    + _step("odd", "result = {'route': 'odd'}\n")
    + """
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}"""
    + _step("end", "result = {'done': True}\n")
    + "\n"
)


def _retrying(action: Callable[[], T], timeout: float = 120.0) -> T:
    """Run a check against Postgres, which may be restarting: retry until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Poll ``condition`` until true (returns the seconds it took); fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def _at_least(count: Callable[[], int], mark: int) -> bool:
    return count() >= mark


class Chaos:
    """Kills and restarts the stack's processes, infrastructure included."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            assert self.stack.database_url is not None
            with psycopg.connect(self.stack.database_url, autocommit=True, connect_timeout=3) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []

        return _retrying(run)

    def kill(self, name: str) -> None:
        if name == "nats":
            assert self.stack.nats is not None
            stop_group(self.stack.nats.pid, signal.SIGKILL, 5.0)
            self.stack.nats.popen.wait(10)
        elif name == "postgres":
            assert self.stack.postgres is not None
            stop_group(self.stack.postgres.pid, signal.SIGKILL, 5.0)
            self.stack.postgres.popen.wait(10)
        else:
            self.stack.kill(name)

    def start(self, name: str) -> None:
        stack = self.stack
        if name == "nats":
            assert stack.nats_url is not None
            port = int(stack.nats_url.rsplit(":", 1)[1])
            stack.nats, _ = start_nats(
                stack.state_dir / "nats",
                port=port,
                log_path=stack.log_path("nats"),
                new_session=True,
                auth=stack.nats_auth,
            )
        elif name == "postgres":
            assert stack.admin_url is not None
            port = int(stack.admin_url.rsplit(":", 1)[1].split("/")[0])
            stack.postgres, _ = start_postgres(
                stack.pg_dir, port=port, log_path=stack.log_path("postgres"), new_session=True
            )
        else:
            stack.start_service(name, wait=False)

    def all_ready(self) -> bool:
        with httpx.Client(timeout=2.0) as http:
            for service in self.stack.services.values():
                try:
                    if http.get(f"{service.url}/readyz").status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return True

    def crash(self, name: str, progress: Callable[[], int]) -> dict[str, Any]:
        """SIGKILL ``name`` and start it again. Returns the seconds from the kill until every
        service answered ready again and until a command completed after the restart, and
        what was in flight (the commands claimed at the kill, and the database's clock then)."""
        before = progress()
        held, killed_at = self.query(
            "SELECT coalesce(array_agg(command_id), '{}'), now() FROM noetl.command WHERE status = 'CLAIMED'"
        )[0]
        killed = time.monotonic()
        self.kill(name)
        self.start(name)
        restarted = time.monotonic() - killed
        _wait(self.all_ready, 120.0, f"every service ready after {name} was killed", 0.1)
        ready = time.monotonic() - killed
        _wait(lambda: progress() > before, 120.0, f"a command to complete after {name} was killed", 0.1)
        return {
            "at_completed_commands": before,
            "restart_seconds": round(restarted, 3),
            "ready_seconds": round(ready, 3),
            "progress_seconds": round(time.monotonic() - killed, 3),
            "held": list(held),
            "killed_at": killed_at,
        }

    def in_flight_finished(self, crash: dict[str, Any]) -> dict[str, Any]:
        """Replace the raw in-flight record by its figures: how many, and the seconds from the
        kill until the last of them finished (a killed worker's come back after the ack wait
        and the lease)."""
        held, killed_at = crash.pop("held"), crash.pop("killed_at")
        (last,) = self.query(
            "SELECT extract(epoch FROM max(updated_at) - %s) FROM noetl.command WHERE command_id = ANY(%s)",
            (killed_at, held),
        )[0]
        crash["in_flight_at_kill"] = len(held)
        crash["in_flight_finished_seconds"] = None if last is None else round(float(last), 3)
        return crash


@pytest.fixture(scope="module")
def stack(noetl_state_dir: Path) -> Iterator[Stack]:
    with suite_stack(
        noetl_state_dir / "chaos",
        # Postgres and NATS are killed and restarted by the test: always embedded ones
        database_prefix=None,
        require_clean_stop=False,
        extra_env={
            # short leases and ack waits so a killed holder's work comes back within seconds
            "NOETL_COMMAND_CLAIM_LEASE_SECONDS": "8",
            "NOETL_OUTBOX_CLAIM_LEASE_SECONDS": "15",
            "WORKER_ACK_WAIT_SECONDS": "10",
            "WORKER_HEARTBEAT_INTERVAL": "2",
            "WORKER_MAX_DELIVER": "30",
            "WORKER_MAX_CONCURRENT": "24",
        },
    ) as running:
        yield running


def test_every_process_killed_in_turn_nothing_lost_nothing_doubled(stack: Stack) -> None:
    chaos = Chaos(stack)
    # The dev stack runs Postgres with synchronous_commit=off (fast tests): a crash of the server
    # then loses the last commits it had acknowledged — a terminal event accepted, the command
    # left CLAIMED. Production runs with it on; so does this test, from a restart of the API on.
    chaos.query(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$"
    )
    stack.restart("control-api")
    chaos.query(
        "CREATE SCHEMA IF NOT EXISTS chaos;"
        " CREATE TABLE IF NOT EXISTS chaos.effect (execution_id bigint, step text, iteration int,"
        "  PRIMARY KEY (execution_id, step, iteration));"
        " CREATE TABLE IF NOT EXISTS chaos.run (execution_id bigint, step text, iteration int,"
        "  at timestamptz DEFAULT now())"
    )
    started = time.monotonic()
    with Api(stack.api_url, token=stack.token) as api:
        api.register(PLAYBOOK)
        ids = [
            int(api.execute("chaos/mixed", payload={"dsn": stack.database_url, "n": n})["execution_id"])
            for n in range(EXECUTIONS)
        ]
    total_commands = EXECUTIONS * COMMANDS_PER_EXECUTION

    def completed_commands() -> int:
        return int(chaos.query("SELECT count(*) FROM noetl.command WHERE status = 'COMPLETED'")[0][0])

    kills: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(VICTIMS, start=1):
        mark = total_commands * i // (len(VICTIMS) + 2)  # spread over the first 3/4 of the work
        _wait(partial(_at_least, completed_commands, mark), 240.0, f"{mark} completed commands")
        kills[name] = chaos.crash(name, completed_commands)
        crash = kills[name]
        print(
            f"process_restarted name={name} at_completed_commands={crash['at_completed_commands']}"
            f" restart_seconds={crash['restart_seconds']} ready_seconds={crash['ready_seconds']}"
            f" progress_seconds={crash['progress_seconds']}"
        )

    def terminal() -> int:
        return int(
            chaos.query(
                "SELECT count(*) FROM noetl.execution WHERE execution_id = ANY(%s)"
                " AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')",
                (ids,),
            )[0][0]
        )

    # on a timeout the report is still written (and the assertions below say what is wrong)
    with contextlib.suppress(AssertionError):
        _wait(lambda: terminal() == EXECUTIONS, SETTLE_TIMEOUT, "every execution terminal", 0.5)

    # the read model catches up with the outbox: every event row published and projected
    events_outbox = "SELECT count(*) FROM noetl.outbox o WHERE o.execution_id = ANY(%s) AND o.subject LIKE 'noetl.events.%%'"
    missing_sql = (
        events_outbox + " AND NOT EXISTS (SELECT 1 FROM noetl.event e WHERE e.event_id = o.event_id)"
    )
    with contextlib.suppress(AssertionError):
        _wait(lambda: chaos.query(missing_sql, (ids,))[0][0] == 0, 60.0, "the projector to catch up", 0.5)
    wall = time.monotonic() - started

    for crash in kills.values():
        chaos.in_flight_finished(crash)
    statuses = dict(
        chaos.query(
            "SELECT status, count(*) FROM noetl.execution WHERE execution_id = ANY(%s) GROUP BY status",
            (ids,),
        )
    )
    outbox_events = int(chaos.query(events_outbox, (ids,))[0][0])
    outbox_distinct = int(
        chaos.query(
            "SELECT count(DISTINCT event_id) FROM noetl.outbox WHERE execution_id = ANY(%s)"
            " AND subject LIKE 'noetl.events.%%'",
            (ids,),
        )[0][0]
    )
    log_events = int(
        chaos.query("SELECT count(*) FROM noetl.event WHERE execution_id = ANY(%s)", (ids,))[0][0]
    )
    missing = int(chaos.query(missing_sql, (ids,))[0][0])
    extra = int(
        chaos.query(
            "SELECT count(*) FROM noetl.event e WHERE e.execution_id = ANY(%s) AND NOT EXISTS"
            " (SELECT 1 FROM noetl.outbox o WHERE o.event_id = e.event_id AND o.subject LIKE 'noetl.events.%%')",
            (ids,),
        )[0][0]
    )
    # a command finished twice would show as two terminal events for one command id
    doubled_terminals = int(
        chaos.query(
            "SELECT count(*) FROM (SELECT meta->>'command_id' FROM noetl.event WHERE execution_id = ANY(%s)"
            " AND event_type IN ('command.completed', 'command.failed')"
            " GROUP BY 1 HAVING count(*) > 1) d",
            (ids,),
        )[0][0]
    )
    doubled_finishes = int(
        chaos.query(
            "SELECT count(*) FROM (SELECT execution_id FROM noetl.event WHERE execution_id = ANY(%s)"
            " AND event_type LIKE 'playbook.%%' AND event_type <> 'playbook.started'"
            " AND event_type <> 'playbook.execution_requested' GROUP BY 1 HAVING count(*) > 1) d",
            (ids,),
        )[0][0]
    )
    effects = int(chaos.query("SELECT count(*) FROM chaos.effect WHERE execution_id = ANY(%s)", (ids,))[0][0])
    runs = int(chaos.query("SELECT count(*) FROM chaos.run WHERE execution_id = ANY(%s)", (ids,))[0][0])
    rerun_keys = int(
        chaos.query(
            "SELECT count(*) FROM (SELECT 1 FROM chaos.run WHERE execution_id = ANY(%s)"
            " GROUP BY execution_id, step, iteration HAVING count(*) > 1) r",
            (ids,),
        )[0][0]
    )
    commands = dict(
        chaos.query(
            "SELECT status, count(*) FROM noetl.command WHERE execution_id = ANY(%s) GROUP BY status", (ids,)
        )
    )
    attempts_over_one = int(
        chaos.query(
            "SELECT count(*) FROM noetl.command WHERE execution_id = ANY(%s) AND attempt > 1", (ids,)
        )[0][0]
    )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make chaos",
        "executions": EXECUTIONS,
        "execution_statuses": statuses,
        "commands": commands,
        "commands_with_more_than_one_attempt": attempts_over_one,
        "kills": kills,
        "events_in_outbox": outbox_events,
        "events_in_outbox_distinct": outbox_distinct,
        "events_in_log": log_events,
        "events_missing_from_log": missing,
        "events_in_log_not_in_outbox": extra,
        "commands_with_two_terminal_events": doubled_terminals,
        "executions_finished_twice": doubled_finishes,
        "side_effects_expected": total_commands,
        "side_effects": effects,
        "tool_runs": runs,
        "keys_run_more_than_once": rerun_keys,
        "wall_seconds": round(wall, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"chaos-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"chaos_report_written path={out.relative_to(REPO)} wall_seconds={report['wall_seconds']}")

    assert statuses == {"COMPLETED": EXECUTIONS}, statuses
    assert effects == total_commands
    assert runs >= effects
    assert outbox_events == outbox_distinct
    assert missing == 0 and extra == 0
    assert log_events == outbox_events
    assert doubled_terminals == 0
    assert doubled_finishes == 0
    assert chaos.all_ready(), "a service is not ready at the end"
    # and after all that, every service still stops cleanly on SIGTERM: exit code 0
    codes = {
        name: stack.stop_service(name, grace=30.0)
        for name in ("worker-shared", "worker-system", "projector", "outbox-publisher", "control-api")
    }
    assert codes == dict.fromkeys(codes, 0), codes
