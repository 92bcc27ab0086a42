"""Bench sections of step dispatch: a 200-step chain, a 1,000-item parallel loop, and an
in-process reference of the same chain (no services) for the ratio.

* ``chain``: a generated linear chain of trivial python steps run through the stack. Per
  step: the gap between two consecutive steps' ``command.completed`` (one whole step cycle:
  outcome ingested, next command issued, published, claimed, run, reported) and the part
  of it from one step's ``command.completed`` to the next one's ``command.started``
  (dispatch only). Target p50 ≤ 10 ms per step.
* ``fanout``: one parallel loop of 1,000 trivial python iterations on a stack of its own
  with two shared-pool workers (``Stack(shared_workers=2)``); wall time from
  ``POST /api/execute`` to COMPLETED. Target ≤ 10 s.
* ``inproc``: the same chain driven in one process by the pure orchestrator
  (``start_execution``/``apply_outcome``) and the worker's ``PipelineRunner`` with the
  real python tool: what the chain costs without Postgres, NATS and HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import cpu
import httpx
import psycopg
from noetl_common import TaskError
from noetl_control_api.dsl import parse_playbook
from noetl_control_api.orchestrator import CommandOutcome, apply_outcome, start_execution
from noetl_dev import Stack
from noetl_system_worker import PipelineRunner, default_registry

CHAIN_PATH = "bench/chain"
FANOUT_PATH = "bench/fanout"
#: one long-poll's ``?wait=`` (the control-api accepts up to 60 s)
WAIT_SECONDS = 30.0


def chain_playbook(steps: int) -> str:
    """A linear chain ``s000 → s001 → ...`` of trivial python steps."""
    lines = [
        "apiVersion: noetl.io/v2",
        "kind: Playbook",
        f"metadata: {{name: chain_{steps}, path: {CHAIN_PATH}_{steps}}}",
        "workflow:",
    ]
    names = ["start"] + [f"s{i:03d}" for i in range(1, steps)]
    for i, name in enumerate(names):
        lines.append(f"  - step: {name}")
        lines.append(f"    tool: {{kind: python, code: \"result = {{'i': {i}}}\"}}")
        if i + 1 < len(names):
            lines.append(f"    next: {{spec: {{mode: exclusive}}, arcs: [{{step: {names[i + 1]}}}]}}")
    return "\n".join(lines) + "\n"


def fanout_playbook(items: int) -> str:
    """One parallel loop of ``items`` trivial python iterations."""
    return (
        "apiVersion: noetl.io/v2\nkind: Playbook\n"
        f"metadata: {{name: fanout_{items}, path: {FANOUT_PATH}_{items}}}\n"
        f"workload: {{n: {items}}}\n"
        "workflow:\n"
        "  - step: start\n"
        '    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = {\'items\': list(range(n))}"}\n'
        "    next: {spec: {mode: exclusive}, arcs: [{step: fan}]}\n"
        "  - step: fan\n"
        '    loop: {in: "{{ start.items }}", iterator: x, spec: {mode: parallel}}\n'
        '    tool: {kind: python, input: {x: "{{ x }}"}, code: "result = x * 2"}\n'
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _ts(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


async def wait_terminal(http: httpx.AsyncClient, eid: int, timeout: float) -> dict[str, Any]:
    """Long-poll ``GET /api/executions/{eid}?wait=`` until the execution leaves RUNNING.

    The control-api answers when the execution ends, so the client neither adds a poll
    interval to the figure nor burns the cores the services need on repeated GETs."""
    deadline = time.monotonic() + timeout
    while True:
        wait = min(WAIT_SECONDS, deadline - time.monotonic())
        if wait <= 0:
            raise TimeoutError(f"execution {eid} still running after {timeout}s")
        reply = await http.get(
            f"/api/executions/{eid}", params={"wait": f"{max(wait, 0.001):.3f}"}, timeout=wait + 10
        )
        reply.raise_for_status()
        body: dict[str, Any] = reply.json()
        if body["status"] != "RUNNING":
            return body


async def _run(http: httpx.AsyncClient, path: str, timeout: float) -> tuple[int, float, dict[str, Any]]:
    """Execute ``path`` and wait for its end: (execution id, wall seconds, final view)."""
    started = time.perf_counter()
    reply = await http.post("/api/execute", json={"path": path})
    reply.raise_for_status()
    eid = int(reply.json()["execution_id"])
    body = await wait_terminal(http, eid, timeout)
    return eid, time.perf_counter() - started, body


def _step_gaps(database_url: str, eid: int, timeout: float = 120) -> tuple[list[float], list[float]]:
    """(cycle ms, dispatch ms) between consecutive steps, from the projected events."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "SELECT event_type, step, created_at FROM noetl.event WHERE execution_id = %s"
                " AND event_type IN ('command.started', 'command.completed', 'playbook.completed')",
                (eid,),
            ).fetchall()
            if any(r[0] == "playbook.completed" for r in rows) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    started = {r[1]: _ts(r[2]) for r in rows if r[0] == "command.started"}
    done = sorted((_ts(r[2]), r[1]) for r in rows if r[0] == "command.completed")
    cycle = [(b[0] - a[0]) * 1000 for a, b in itertools.pairwise(done)]
    dispatch = [(started[b[1]] - a[0]) * 1000 for a, b in itertools.pairwise(done) if b[1] in started]
    return cycle, dispatch


async def section_chain(http: httpx.AsyncClient, database_url: str, steps: int, runs: int) -> dict[str, Any]:
    """The chain through the stack; see the module docstring."""
    reply = await http.post("/api/catalog/register", json={"content": chain_playbook(steps)})
    reply.raise_for_status()
    path = f"{CHAIN_PATH}_{steps}"
    await _run(http, path, 300)  # warm-up
    walls, cycles, dispatches = [], [], []
    cpu_used: dict[str, float] = {}
    for _ in range(runs):
        before = cpu.snapshot()
        eid, wall, body = await _run(http, path, 300)
        for label, seconds in cpu.spent(before, cpu.snapshot()).items():
            cpu_used[label] = cpu_used.get(label, 0.0) + seconds
        if body["status"] != "COMPLETED":
            raise RuntimeError(f"chain ended {body['status']}: {body.get('error')}")
        cycle, dispatch = await asyncio.to_thread(_step_gaps, database_url, eid)
        walls.append(wall)
        cycles += cycle
        dispatches += dispatch
    return {
        "steps": steps,
        "runs": runs,
        "wall_s_median": statistics.median(walls),
        "per_step_wall_ms": statistics.median(walls) * 1000 / steps,
        "cpu_ms_per_step": cpu.per_unit_ms({}, cpu_used, steps * runs),
        "step_cycle_p50_ms": _percentile(cycles, 50),
        "step_cycle_p99_ms": _percentile(cycles, 99),
        "dispatch_p50_ms": _percentile(dispatches, 50),
        "dispatch_p99_ms": _percentile(dispatches, 99),
    }


async def section_fanout(items: int, runs: int) -> dict[str, Any]:
    """The parallel loop on a stack of its own with two shared-pool workers."""
    with tempfile.TemporaryDirectory(prefix="noetl-bench-fanout-") as tmp:
        os.chmod(tmp, 0o755)  # Postgres runs as nobody when the bench runs as root
        stack = Stack(Path(tmp) / "stack", ready_timeout=120.0, shared_workers=2)
        stack.start()
        try:
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=stack.auth()) as http:
                reply = await http.post("/api/catalog/register", json={"content": fanout_playbook(items)})
                reply.raise_for_status()
                path = f"{FANOUT_PATH}_{items}"
                await _run(http, f"{FANOUT_PATH}_{items}", 300)  # warm-up
                walls = []
                per_worker: dict[str, int] = {}
                cpu_used: dict[str, float] = {}
                for _ in range(runs):
                    before = cpu.snapshot()
                    eid, wall, body = await _run(http, path, 300)
                    for label, seconds in cpu.spent(before, cpu.snapshot()).items():
                        cpu_used[label] = cpu_used.get(label, 0.0) + seconds
                    if body["status"] != "COMPLETED" or len(body["results"]["fan"]["results"]) != items:
                        raise RuntimeError(f"fan-out ended {body['status']}: {body.get('error')}")
                    walls.append(wall)
                    assert stack.database_url is not None
                    with psycopg.connect(stack.database_url, autocommit=True) as conn:
                        for worker, count in conn.execute(
                            "SELECT worker_id, count(*) FROM noetl.command WHERE execution_id = %s"
                            " AND step = 'fan' GROUP BY worker_id",
                            (eid,),
                        ).fetchall():
                            per_worker[str(worker)] = per_worker.get(str(worker), 0) + int(count)
        finally:
            stack.stop(grace=10.0)
    return {
        "items": items,
        "runs": runs,
        "shared_workers": 2,
        "wall_s_median": statistics.median(walls),
        "wall_s_runs": walls,
        "iterations_per_s": items / statistics.median(walls),
        "iterations_by_worker": per_worker,
        "cpu_ms_per_iteration": cpu.per_unit_ms({}, cpu_used, items * runs),
    }


async def _inproc_once(steps: int) -> float:
    playbook = parse_playbook(chain_playbook(steps))
    runner = PipelineRunner(default_registry())
    started = time.perf_counter()
    decision = start_execution(playbook, execution_id=1, payload={}, catalog_path=playbook.path)
    state, pending, command_id = decision.state, list(decision.commands), 0
    while pending:
        draft = pending.pop(0)
        outcome = await runner.run(draft.spec)
        command_id += 1
        decision = apply_outcome(
            playbook,
            state,
            CommandOutcome(
                command_id=command_id,
                step=draft.step,
                status="completed" if outcome.ok else "failed",
                meta=draft.meta,
                result=outcome.result,
                error=None if outcome.error is None else TaskError.parse(outcome.error),
                set=outcome.set or None,
            ),
        )
        state = decision.state
        pending += decision.commands
    if state.status != "COMPLETED":
        raise RuntimeError(f"in-process chain ended {state.status}: {state.error}")
    return time.perf_counter() - started


async def section_inproc(steps: int, runs: int) -> dict[str, Any]:
    """The chain by the orchestrator + the worker's pipeline runner in this process."""
    await _inproc_once(steps)  # warm-up
    walls = [await _inproc_once(steps) for _ in range(runs)]
    return {
        "steps": steps,
        "runs": runs,
        "wall_s_median": statistics.median(walls),
        "per_step_ms": statistics.median(walls) * 1000 / steps,
    }


def markdown_rows(figures: dict[str, Any]) -> list[str]:
    """Rows for the bench table (the sections that ran)."""
    rows: list[str] = []
    chain, inproc, fan = figures.get("chain"), figures.get("inproc"), figures.get("fanout")
    if chain:
        ratio = (
            f"{chain['per_step_wall_ms'] / inproc['per_step_ms']:.1f} x the in-process path" if inproc else ""
        )
        rows.append(
            f"| {chain['steps']}-step chain, step cycle p50 (completed → next completed) | "
            f"{chain['step_cycle_p50_ms']:.2f} ms | ≤ 10 ms | {ratio} |"
        )
        rows.append(
            f"| same, dispatch p50 / p99 (completed → next started) | "
            f"{chain['dispatch_p50_ms']:.2f} / {chain['dispatch_p99_ms']:.2f} ms | | |"
        )
        rows.append(
            f"| same, wall per step (median of {chain['runs']} runs) | {chain['per_step_wall_ms']:.2f} ms | | |"
        )
        rows.append(f"| same, whole-stack CPU per step | {cpu.describe(chain.get('cpu_ms_per_step'))} | | |")
    if inproc:
        rows.append(
            f"| {inproc['steps']}-step chain in process (orchestrator + pipeline runner, no services) | "
            f"{inproc['per_step_ms']:.3f} ms/step | | |"
        )
    if fan:
        rows.append(
            f"| {fan['items']:,}-item parallel loop, 2 shared workers, wall | "
            f"{fan['wall_s_median']:.2f} s ({fan['iterations_per_s']:,.0f} it/s) | ≤ 10 s | |"
        )
        rows.append(
            f"| same, whole-stack CPU per iteration | {cpu.describe(fan.get('cpu_ms_per_iteration'))} | | |"
        )
    return rows
