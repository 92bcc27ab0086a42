"""The chaos workload and its accounting, for the chaos runs in ``tests/chaos``.

``PLAYBOOK`` has python steps, a parallel loop and a conditional branch; every step writes its
side effect to ``chaos.effect`` keyed by (execution, step, iteration) with ``ON CONFLICT DO
NOTHING`` and logs every run of the tool to ``chaos.run`` (no key), so re-executions after a
kill show up honestly. ``Ledger`` reads the suite's database while processes die around it
(every query is retried until Postgres answers) and ``Ledger.figures`` is the report: execution
and command states, events in the outbox against events in ``noetl.event`` (lost, doubled),
terminal events per command, side effects against tool runs, and for every execution left
unfinished, what its open commands are waiting for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from ._pgroup import children

T = TypeVar("T")
EXECUTIONS = 200
#: Commands per execution: start, 3 loop iterations, one branch, end.
COMMANDS_PER_EXECUTION = 6
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")

# A step's side effect. The tool retries its own database connection (Postgres is killed or
# hung too); the effect is idempotent by key, the run log is not.
EFFECT = """
import time, psycopg
deadline = time.monotonic() + 180
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

SCHEMA = (
    "CREATE SCHEMA IF NOT EXISTS chaos;"
    " CREATE TABLE IF NOT EXISTS chaos.effect (execution_id bigint, step text, iteration int,"
    "  PRIMARY KEY (execution_id, step, iteration));"
    " CREATE TABLE IF NOT EXISTS chaos.run (execution_id bigint, step text, iteration int,"
    "  at timestamptz DEFAULT now())"
)

#: Synchronous commit for the suite's database from the next connection on. The dev stack runs
#: Postgres with it off (fast tests): a crash of the server then loses the last commits it had
#: acknowledged — a terminal event accepted, the command left CLAIMED. Production runs with it on.
SYNCHRONOUS_COMMIT = (
    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$"
)

_EVENTS_OUTBOX = (
    "SELECT count(*) FROM noetl.outbox o WHERE o.execution_id = ANY(%s) AND o.subject LIKE 'noetl.events.%%'"
)
_MISSING = _EVENTS_OUTBOX + " AND NOT EXISTS (SELECT 1 FROM noetl.event e WHERE e.event_id = o.event_id)"


def retrying(action: Callable[[], T], timeout: float = 180.0) -> T:
    """Run a read against Postgres, which may be restarting or hung: retry until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> float:
    """Poll ``condition`` until true (returns the seconds it took); AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[list[int]]:
    """Hold ``pid`` and every process it forked stopped (SIGSTOP) until the block ends (SIGCONT).

    A signal to the process group is not enough for Postgres: each backend leads a process
    group of its own, so stopping the postmaster's group alone leaves open connections served.
    The parent is stopped first, so that it forks nothing while its children are collected.
    """
    held = [pid]
    os.kill(pid, signal.SIGSTOP)
    try:
        pending = set(children(pid))
        while pending:
            for child in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
            held += sorted(pending)
            pending = set(children(pid)) - set(held)
        yield held
    finally:
        for process in reversed(held):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process, signal.SIGCONT)


class Ledger:
    """Reads of the suite's database that count what the chaos did and did not break."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=3) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []

        return retrying(run)

    def count(self, sql: str, params: Any = None) -> int:
        return int(self.query(sql, params)[0][0])

    def completed_commands(self) -> int:
        return self.count("SELECT count(*) FROM noetl.command WHERE status = 'COMPLETED'")

    def claimed(self) -> tuple[list[int], datetime]:
        """The commands held by a worker now, and the database's clock."""
        held, now = self.query(
            "SELECT coalesce(array_agg(command_id), '{}'), now() FROM noetl.command WHERE status = 'CLAIMED'"
        )[0]
        return list(held), now

    def in_flight(self, held: list[int], since: datetime) -> dict[str, Any]:
        """What became of the commands ``held`` at ``since``: how many, the seconds until the last
        of them finished, and that last one's events (seconds from ``since``) to tell why."""
        rows = self.query(
            "SELECT command_id, step, status, attempt, extract(epoch FROM updated_at - %s) FROM noetl.command"
            " WHERE command_id = ANY(%s) ORDER BY updated_at DESC LIMIT 1",
            (since, held),
        )
        figures: dict[str, Any] = {"in_flight_at_disruption": len(held), "in_flight_finished_seconds": None}
        if not rows:
            return figures
        command_id, step, status, attempt, seconds = rows[0]
        figures["in_flight_finished_seconds"] = round(float(seconds), 3)
        events = self.query(
            "SELECT round(extract(epoch FROM created_at - %s)::numeric, 3), event_type, worker_id, meta->>'attempt'"
            " FROM noetl.event WHERE meta->>'command_id' = %s ORDER BY created_at, event_id",
            (since, str(command_id)),
        )
        figures["in_flight_last"] = {
            "command_id": command_id,
            "step": step,
            "status": status,
            "attempt": attempt,
            "events": [f"{float(at):+.3f}s {kind} worker={worker} attempt={tried}" for at, kind, worker, tried in events],
        }
        return figures

    def terminal(self, ids: list[int]) -> int:
        return self.count(
            "SELECT count(*) FROM noetl.execution WHERE execution_id = ANY(%s) AND status = ANY(%s)",
            (ids, list(TERMINAL)),
        )

    def missing_events(self, ids: list[int]) -> int:
        """Events the API wrote to the outbox that are not (yet) in ``noetl.event``."""
        return self.count(_MISSING, (ids,))

    def open_commands(self, ids: list[int]) -> list[dict[str, Any]]:
        """Every unfinished command of an unfinished execution, with what its notification did:
        the outbox row (keyed by the command id) and its status, attempts, publish time."""
        rows = self.query(
            "SELECT c.execution_id, c.command_id, c.event_id, c.step, c.status, c.attempt, c.worker_id,"
            " c.lease_expires_at < now(), o.status, o.attempts, o.published_at IS NOT NULL, o.subject"
            " FROM noetl.command c JOIN noetl.execution x ON x.execution_id = c.execution_id"
            " LEFT JOIN noetl.outbox o ON o.event_id = c.command_id AND o.subject LIKE 'noetl.commands.%%'"
            " WHERE c.execution_id = ANY(%s) AND x.status <> ALL(%s) AND c.status IN ('PENDING', 'CLAIMED')"
            " ORDER BY c.execution_id, c.command_id",
            (ids, list(TERMINAL)),
        )
        keys = (
            "execution_id",
            "command_id",
            "event_id",
            "step",
            "status",
            "attempt",
            "worker_id",
            "lease_expired",
            "outbox_status",
            "outbox_attempts",
            "published",
            "subject",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def figures(self, ids: list[int]) -> dict[str, Any]:
        """The report of a run over executions ``ids`` (the names the chaos reports have used)."""
        statuses = dict(
            self.query(
                "SELECT status, count(*) FROM noetl.execution WHERE execution_id = ANY(%s) GROUP BY status", (ids,)
            )
        )
        outbox_events = self.count(_EVENTS_OUTBOX, (ids,))
        outbox_distinct = self.count(
            "SELECT count(DISTINCT event_id) FROM noetl.outbox WHERE execution_id = ANY(%s)"
            " AND subject LIKE 'noetl.events.%%'",
            (ids,),
        )
        extra = self.count(
            "SELECT count(*) FROM noetl.event e WHERE e.execution_id = ANY(%s) AND NOT EXISTS"
            " (SELECT 1 FROM noetl.outbox o WHERE o.event_id = e.event_id AND o.subject LIKE 'noetl.events.%%')",
            (ids,),
        )
        return {
            "executions": len(ids),
            "execution_statuses": statuses,
            "executions_not_terminal": len(ids) - sum(statuses.get(s, 0) for s in TERMINAL),
            "commands": dict(
                self.query(
                    "SELECT status, count(*) FROM noetl.command WHERE execution_id = ANY(%s) GROUP BY status",
                    (ids,),
                )
            ),
            "commands_with_more_than_one_attempt": self.count(
                "SELECT count(*) FROM noetl.command WHERE execution_id = ANY(%s) AND attempt > 1", (ids,)
            ),
            "events_in_outbox": outbox_events,
            "events_in_outbox_distinct": outbox_distinct,
            "events_in_log": self.count("SELECT count(*) FROM noetl.event WHERE execution_id = ANY(%s)", (ids,)),
            "events_missing_from_log": self.missing_events(ids),
            "events_in_log_not_in_outbox": extra,
            # a command finished twice would show as two terminal events for one command id
            "commands_with_two_terminal_events": self.count(
                "SELECT count(*) FROM (SELECT meta->>'command_id' FROM noetl.event WHERE execution_id = ANY(%s)"
                " AND event_type IN ('command.completed', 'command.failed')"
                " GROUP BY 1 HAVING count(*) > 1) d",
                (ids,),
            ),
            "executions_finished_twice": self.count(
                "SELECT count(*) FROM (SELECT execution_id FROM noetl.event WHERE execution_id = ANY(%s)"
                " AND event_type LIKE 'playbook.%%' AND event_type <> 'playbook.started'"
                " AND event_type <> 'playbook.execution_requested' GROUP BY 1 HAVING count(*) > 1) d",
                (ids,),
            ),
            "side_effects_expected": len(ids) * COMMANDS_PER_EXECUTION,
            "side_effects": self.count("SELECT count(*) FROM chaos.effect WHERE execution_id = ANY(%s)", (ids,)),
            "tool_runs": self.count("SELECT count(*) FROM chaos.run WHERE execution_id = ANY(%s)", (ids,)),
            # duplicated effects: a step's tool that ran more than once (the effect table's key kept one)
            "keys_run_more_than_once": self.count(
                "SELECT count(*) FROM (SELECT 1 FROM chaos.run WHERE execution_id = ANY(%s)"
                " GROUP BY execution_id, step, iteration HAVING count(*) > 1) r",
                (ids,),
            ),
            "open_commands_of_unfinished_executions": self.open_commands(ids),
        }


def write_report(report: dict[str, Any], results: Path, prefix: str) -> Path:
    """``<results>/<prefix>-<UTC time>.json``, as every chaos run writes its figures."""
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return out
