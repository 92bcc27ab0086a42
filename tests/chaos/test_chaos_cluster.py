"""Chaos on the clustered topology: 200 executions while servers are lost for good, crashed and hung.

Started by ``make chaos-cluster`` (``.ci/run`` runs it after ``make chaos``). The stack is the one
``make up CLUSTER=1`` runs: three JetStream servers with the streams at three replicas, two
control-api replicas, two projector shards, the publisher and the two workers, every client
given every NATS URL and every API URL. The workload is ``make chaos``'s (``noetl_dev.chaos``).
While it runs, each at a set point of progress:

* the nats-server leading ``NOETL_COMMANDS`` is SIGKILLed and never comes back;
* the control-api replica ``control-api-2`` is SIGKILLed and never comes back;
* every remaining service (the other control-api, the publisher, both projector shards, both
  workers) is SIGKILLed and restarted, one after another;
* Postgres (its whole process group) is stopped with SIGSTOP for 100 s, then continued.

Then: every execution COMPLETED, every side effect exactly once (re-runs counted), ``noetl.event``
equal to the outbox's event rows (nothing lost, nothing doubled), one terminal event per command,
an empty ``NOETL_DLQ``. Each disruption's recovery times are reported; an execution left
unfinished is reported with its open commands (status, step, what became of the notification).
The figures are printed and written to ``bench/results/chaos-cluster-*.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from noetl_cli import Api
from noetl_dev import CLUSTER, Stack
from noetl_dev.chaos import (
    COMMANDS_PER_EXECUTION,
    EXECUTIONS,
    PLAYBOOK,
    SCHEMA,
    SYNCHRONOUS_COMMIT,
    Ledger,
    stopped,
    wait_for,
    write_report,
)
from noetl_dev.testing import suite_stack

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
#: What happens, in this order, each once the workload passed the next progress mark: ``lost``
#: (SIGKILL, never restarted), ``crash`` (SIGKILL, restarted at once), ``hang`` (SIGSTOP, SIGCONT
#: after HANG_SECONDS). ``nats`` is the server leading NOETL_COMMANDS at that moment.
DISRUPTIONS = (
    ("nats", "lost"),
    ("control-api-2", "lost"),
    ("control-api", "crash"),
    ("outbox-publisher", "crash"),
    ("projector", "crash"),
    ("projector-2", "crash"),
    ("worker-shared", "crash"),
    ("worker-system", "crash"),
    ("postgres", "hang"),
)
HANG_SECONDS = 100.0
#: Bounds, not expectations: every execution terminal within this after the last disruption.
SETTLE_TIMEOUT = 180.0
RECOVERY_TIMEOUT = 180.0


def _at_least(count: Callable[[], int], mark: int) -> bool:
    return count() >= mark


class ClusterChaos:
    """Loses, crashes and hangs the clustered stack's processes, and tells when it has recovered."""

    def __init__(self, stack: Stack, ledger: Ledger) -> None:
        assert stack.nats_cluster is not None and stack.postgres is not None
        self.stack = stack
        self.cluster = stack.nats_cluster
        self.ledger = ledger
        #: processes lost for good
        self.lost: set[str] = set()

    def live_services(self) -> list[str]:
        return [name for name in self.stack.services if name not in self.lost]

    def not_ready(self) -> list[str]:
        """Live services whose /readyz is not 200 and live NATS servers whose /healthz is not 200."""
        urls = {name: f"{self.stack.services[name].url}/readyz" for name in self.live_services()}
        urls |= {name: node.health_url for name, node in self.cluster.nodes.items() if name not in self.lost}
        failing = []
        with httpx.Client(timeout=2.0) as http:
            for name, url in urls.items():
                try:
                    if http.get(url).status_code != 200:
                        failing.append(name)
                except httpx.HTTPError:
                    failing.append(name)
        return failing

    def all_ready(self) -> bool:
        return not self.not_ready()

    def commands_leader(self) -> str:
        """The NATS server leading NOETL_COMMANDS now (from a live server's monitoring port)."""
        node = next(n for name, n in self.cluster.nodes.items() if name not in self.lost)
        reply = httpx.get(f"http://127.0.0.1:{node.monitor_port}/jsz", params={"streams": "true"}, timeout=5)
        for account in reply.json().get("account_details", []):
            for stream in account.get("stream_detail", []):
                if stream["name"] == "NOETL_COMMANDS":
                    return str(stream["cluster"]["leader"])
        raise AssertionError("NOETL_COMMANDS has no leader")

    # -- the disruptions: each returns its own figures and when recovery is measured from ---
    def lose(self, name: str) -> tuple[dict[str, Any], float]:
        if name == "nats":
            name = self.commands_leader()
            self.cluster.kill(name)
        else:
            self.stack.kill(name)
        self.lost.add(name)
        return {"process": name}, time.monotonic()

    def crash(self, name: str) -> tuple[dict[str, Any], float]:
        killed = time.monotonic()
        self.stack.kill(name)
        self.stack.start_service(name, wait=False)
        return {"restart_seconds": round(time.monotonic() - killed, 3)}, killed

    def hang(self, name: str) -> tuple[dict[str, Any], float]:
        assert name == "postgres" and self.stack.postgres is not None
        failing: set[str] = set()
        with stopped(self.stack.postgres.pid) as processes:
            since = time.monotonic()
            # the hang lasts HANG_SECONDS by design; meanwhile, note who stops answering ready
            while time.monotonic() - since < HANG_SECONDS:
                failing.update(self.not_ready())
                time.sleep(min(1.0, max(0.0, HANG_SECONDS - (time.monotonic() - since))))
        figures = {
            "hang_seconds": HANG_SECONDS,
            "processes_stopped": len(processes),
            "not_ready_during_hang": sorted(failing),
        }
        return figures, time.monotonic()

    def disrupt(self, name: str, kind: str) -> dict[str, Any]:
        """Do one disruption. Then the seconds from the kill (from SIGCONT for a hang) until every
        live process answered ready again and until a command completed after it, and the
        commands claimed at that moment with the seconds until the last of them finished."""
        before = self.ledger.completed_commands()
        held, held_at = self.ledger.claimed()
        figures, origin = {"lost": self.lose, "crash": self.crash, "hang": self.hang}[kind](name)
        if kind == "hang":
            before = self.ledger.completed_commands()  # progress counts from the resume
        wait_for(self.all_ready, RECOVERY_TIMEOUT, f"every live process ready after {name} ({kind})", 0.1)
        ready = time.monotonic() - origin
        wait_for(
            lambda: self.ledger.completed_commands() > before,
            RECOVERY_TIMEOUT,
            f"a command to complete after {name} ({kind})",
            0.1,
        )
        return {
            "kind": kind,
            "at_completed_commands": before,
            **figures,
            "ready_seconds": round(ready, 3),
            "progress_seconds": round(time.monotonic() - origin, 3),
            "_held": (held, held_at),
        }


async def _nats_state(url: str) -> dict[str, Any]:
    """Messages left in the DLQ, the command consumers' backlog and each stream's replicas."""
    nc = await nats.connect([u for u in url.split(",") if u], connect_timeout=3, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        state: dict[str, Any] = {"dlq_messages": (await js.stream_info("NOETL_DLQ")).state.messages}
        for pool in ("shared", "system"):
            info = await js.consumer_info("NOETL_COMMANDS", f"noetl_worker_pool_{pool}")
            state[f"consumer_{pool}"] = {
                "num_pending": info.num_pending,
                "num_ack_pending": info.num_ack_pending,
                "num_redelivered": info.num_redelivered,
            }
        for stream in ("NOETL_COMMANDS", "NOETL_EVENTS", "NOETL_DLQ"):
            info = await js.stream_info(stream)
            cluster = info.cluster
            state[f"{stream}_replicas"] = {
                "configured": info.config.num_replicas,
                "leader": cluster.leader if cluster else None,
                "peers": [
                    {"name": peer.name, "current": peer.current, "offline": peer.offline}
                    for peer in ((cluster.replicas or []) if cluster else [])
                ],
            }
        return state
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def stack(noetl_state_dir: Path) -> Iterator[Stack]:
    with suite_stack(
        noetl_state_dir / "chaos-cluster",
        # servers are killed and hung by the test: always embedded ones
        database_prefix=None,
        ready_timeout=120.0,
        **CLUSTER,
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


def test_clustered_stack_loses_a_server_and_a_replica_nothing_lost_nothing_doubled(stack: Stack) -> None:
    assert stack.database_url is not None and stack.nats_url is not None
    ledger = Ledger(stack.database_url)
    chaos = ClusterChaos(stack, ledger)
    ledger.query(SYNCHRONOUS_COMMIT)
    for name in ("control-api", "control-api-2"):  # their pools' connections take it from here on
        stack.restart(name)
    ledger.query(SCHEMA)
    # Every execution is queued before any runs, so that the disruptions' progress marks spread
    # over the whole workload however slowly the 200 requests go through on a busy machine.
    assert stack.stop_service("worker-shared") == 0
    started = time.monotonic()
    with Api(stack.api_url, token=stack.token) as api:
        api.register(PLAYBOOK)
        ids = [
            int(api.execute("chaos/mixed", payload={"dsn": stack.database_url, "n": n})["execution_id"])
            for n in range(EXECUTIONS)
        ]
    stack.start_service("worker-shared")
    total_commands = EXECUTIONS * COMMANDS_PER_EXECUTION

    disruptions: dict[str, dict[str, Any]] = {}
    for i, (name, kind) in enumerate(DISRUPTIONS, start=1):
        mark = total_commands * i // (len(DISRUPTIONS) + 2)  # spread over the first 4/5 of the work
        wait_for(partial(_at_least, ledger.completed_commands, mark), 240.0, f"{mark} completed commands")
        record = chaos.disrupt(name, kind)
        label = record.get("process", name) if kind == "lost" else name
        disruptions[f"{label} ({kind})"] = record
        print(
            f"disruption name={label} kind={kind} at_completed_commands={record['at_completed_commands']}"
            f" ready_seconds={record['ready_seconds']} progress_seconds={record['progress_seconds']}",
            flush=True,
        )

    # on a timeout the report is still written (and the assertions below say what is wrong)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: ledger.terminal(ids) == EXECUTIONS, SETTLE_TIMEOUT, "every execution terminal", 0.5)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: ledger.missing_events(ids) == 0, 60.0, "the projectors to catch up", 0.5)
    wall = time.monotonic() - started

    for record in disruptions.values():
        record.update(ledger.in_flight(*record.pop("_held")))
    figures = ledger.figures(ids)
    nats_state = asyncio.run(_nats_state(stack.nats_url))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make chaos-cluster",
        "topology": {**CLUSTER, "stream_replicas": chaos.cluster.stream_replicas},
        "lost_for_good": sorted(chaos.lost),
        "disruptions": disruptions,
        **figures,
        "nats": nats_state,
        "wall_seconds": round(wall, 1),
    }
    out = write_report(report, RESULTS, "chaos-cluster")
    print(json.dumps(report, indent=2, default=str))
    print(f"chaos_report_written path={out.relative_to(REPO)} wall_seconds={report['wall_seconds']}")

    stranded = figures["open_commands_of_unfinished_executions"]
    assert figures["executions_not_terminal"] == 0, json.dumps(stranded, indent=2, default=str)
    assert figures["execution_statuses"] == {"COMPLETED": EXECUTIONS}, figures["execution_statuses"]
    assert figures["side_effects"] == total_commands
    assert figures["tool_runs"] >= figures["side_effects"]
    assert figures["events_in_outbox"] == figures["events_in_outbox_distinct"]
    assert figures["events_missing_from_log"] == 0 and figures["events_in_log_not_in_outbox"] == 0
    assert figures["events_in_log"] == figures["events_in_outbox"]
    assert figures["commands_with_two_terminal_events"] == 0
    assert figures["executions_finished_twice"] == 0
    assert nats_state["dlq_messages"] == 0
    assert chaos.all_ready(), f"not ready at the end: {chaos.not_ready()}"
    # and after all that, every live service still stops cleanly on SIGTERM: exit code 0
    codes = {name: stack.stop_service(name, grace=30.0) for name in reversed(chaos.live_services())}
    assert codes == dict.fromkeys(codes, 0), codes
