"""Bench sections of the python sandbox: what process isolation costs a python task.

* ``sandbox`` (in process, no stack): wall time of one trivial python task through the
  sandbox pool and through the worker's thread tool, median of N. Two sandbox figures:
  *warm* (a forked, confined child is waiting: the task's critical path) and
  *back-to-back* (tasks one after another, so each also waits for its replacement child
  to be forked: the sustained cost of one task on this machine).
* ``isolation`` (on the bench's stack): the 3-step python playbook and the generated chain
  with ``WORKER_PYTHON_ISOLATION=thread`` and ``=process``, back to back in one run, the
  shared-pool workers restarted between the two.

    .venv/bin/python bench/sandbox.py --tasks 300     # the ``sandbox`` section alone, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from noetl_dev import Stack
from noetl_system_worker import SandboxPool, run_python
from noetl_system_worker._python_config import PythonSettings

CODE = "result = {'i': i, 'doubled': i * 2}"
#: the workers that run the bench's python steps (python kinds go to the shared pool)
PYTHON_WORKERS = ("worker-shared",)


async def overhead(tasks: int) -> dict[str, Any]:
    """Median ms of one trivial task: thread tool, sandbox warm, sandbox back to back."""
    settings = PythonSettings()
    pool = SandboxPool(settings.limits, warm=settings.warm, env_allow=settings.env_allow)
    thread, warm, back_to_back = [], [], []
    try:
        layers = await pool.start()
        for i in range(20):  # warm-up: imports, first forks
            await pool.run(CODE, {"i": i}, {})
            await run_python({"code": CODE}, {"i": i}, {})
        for i in range(tasks):
            started = time.perf_counter()
            await run_python({"code": CODE}, {"i": i}, {})
            thread.append(time.perf_counter() - started)
        for i in range(tasks):
            await pool.warmed()
            started = time.perf_counter()
            reply = await pool.run(CODE, {"i": i}, {})
            warm.append(time.perf_counter() - started)
            assert reply.ok and reply.result == {"i": i, "doubled": i * 2}
        await pool.warmed()
        started = time.perf_counter()
        for i in range(tasks):
            await pool.run(CODE, {"i": i}, {})
        back_to_back_total = time.perf_counter() - started
        back_to_back.append(back_to_back_total / tasks)
    finally:
        await pool.aclose()
    thread_ms = statistics.median(thread) * 1000
    warm_ms = statistics.median(warm) * 1000
    return {
        "tasks": tasks,
        "thread_p50_ms": thread_ms,
        "sandbox_warm_p50_ms": warm_ms,
        "sandbox_warm_p99_ms": sorted(warm)[int(0.99 * (len(warm) - 1))] * 1000,
        "sandbox_back_to_back_ms_per_task": back_to_back[0] * 1000,
        "overhead_warm_ms": warm_ms - thread_ms,
        "layers": {name: state.split(":")[0] for name, state in layers.items()},
    }


def use_isolation(stack: Stack, mode: str) -> None:
    """Restart the workers that run python steps with ``WORKER_PYTHON_ISOLATION=mode``."""
    for name in stack.services:
        if name.startswith(PYTHON_WORKERS):
            service = stack.services[name]
            if service.env.get("WORKER_PYTHON_ISOLATION") != mode:
                service.env["WORKER_PYTHON_ISOLATION"] = mode
                stack.restart(name)


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's figures over alternated rounds: the median of each, and every round's."""
    return {
        "rounds": len(rounds),
        "playbook": {
            "client_p50_ms": statistics.median(r["playbook"]["client_p50_ms"] for r in rounds),
            "cpu_ms_per_run": statistics.median(r["playbook"]["cpu_ms_per_run"]["total"] for r in rounds),
        },
        "chain": {
            "steps": rounds[0]["chain"]["steps"],
            "step_cycle_p50_ms": statistics.median(r["chain"]["step_cycle_p50_ms"] for r in rounds),
            "per_step_wall_ms": statistics.median(r["chain"]["per_step_wall_ms"] for r in rounds),
            "cpu_ms_per_step": statistics.median(r["chain"]["cpu_ms_per_step"]["total"] for r in rounds),
        },
        "runs": rounds,
    }


def markdown_rows(figures: dict[str, Any]) -> list[str]:
    """Rows for the bench table (the sections that ran)."""
    rows: list[str] = []
    box = figures.get("sandbox")
    if box:
        rows.append(
            f"| one python task in process, thread / sandbox warm (median of {box['tasks']}) | "
            f"{box['thread_p50_ms']:.2f} / {box['sandbox_warm_p50_ms']:.2f} ms | | "
            f"+{box['overhead_warm_ms']:.2f} ms per task |"
        )
        rows.append(
            f"| same, sandbox back to back (each also waits for its replacement fork) | "
            f"{box['sandbox_back_to_back_ms_per_task']:.2f} ms/task | | |"
        )
    iso = figures.get("isolation")
    if iso and {"thread", "process"} <= set(iso):
        off, on = iso["thread"], iso["process"]
        pb_off, pb_on = off["playbook"]["client_p50_ms"], on["playbook"]["client_p50_ms"]
        rows.append(
            f"| 3-step python playbook p50, python isolation thread / process (median of {on['rounds']} alternated rounds) | "
            f"{pb_off:.1f} / {pb_on:.1f} ms | | {pb_on - pb_off:+.1f} ms |"
        )
        ch_off, ch_on = off["chain"], on["chain"]
        rows.append(
            f"| {ch_on['steps']}-step chain step cycle p50, thread / process | "
            f"{ch_off['step_cycle_p50_ms']:.2f} / {ch_on['step_cycle_p50_ms']:.2f} ms | | "
            f"{ch_on['step_cycle_p50_ms'] - ch_off['step_cycle_p50_ms']:+.2f} ms |"
        )
        rows.append(
            f"| same, wall per step thread / process | {ch_off['per_step_wall_ms']:.2f} / "
            f"{ch_on['per_step_wall_ms']:.2f} ms | | |"
        )
        cpu_pb = (off["playbook"]["cpu_ms_per_run"], on["playbook"]["cpu_ms_per_run"])
        rows.append(
            f"| whole-stack CPU per 3-step playbook run, thread / process | {cpu_pb[0]:.1f} / {cpu_pb[1]:.1f} ms"
            f" | | {cpu_pb[1] / cpu_pb[0]:.2f}x |"
        )
        cpu_ch = (ch_off["cpu_ms_per_step"], ch_on["cpu_ms_per_step"])
        rows.append(
            f"| whole-stack CPU per chain step, thread / process | {cpu_ch[0]:.2f} / {cpu_ch[1]:.2f} ms"
            f" | | {cpu_ch[1] / cpu_ch[0]:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(overhead(args.tasks)), indent=2))


if __name__ == "__main__":
    main()
