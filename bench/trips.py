"""What one step of the generated chain costs in round trips: control-api requests by route,
Postgres transactions, command claims by outcome, and CPU per process, per step.

    .venv/bin/python bench/trips.py [--steps 200] [--runs 2]

Starts a stack of its own (as bench/run.py does), runs the chain once to warm up, then
``--runs`` times while it reads the control-api's ``/metrics`` (request counts by route, claim
outcomes), ``pg_stat_database`` (transactions committed and rolled back) and ``/proc`` (CPU)
before and after. Run it with another checkout's interpreter to count that checkout's trips
(``../base/.venv/bin/python bench/trips.py``): the figures come from the stack, not this file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu
import dispatch
from noetl_dev._stack import Stack

_LABELS = re.compile(r'(\w+)="([^"]*)"')
_SAMPLE = re.compile(r"noetl_control_api_(request_duration_seconds_count|command_claims_total)\{(.*)\} (\S+)")


def _transactions(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT sum(xact_commit) + sum(xact_rollback) FROM pg_stat_database").fetchone()
        return int(row[0]) if row else 0


async def _counts(http: httpx.AsyncClient) -> dict[str, float]:
    found: dict[str, float] = defaultdict(float)
    for line in (await http.get("/metrics")).text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABELS.findall(match.group(2)))
        if match.group(1) == "command_claims_total":
            found[f"claims, outcome {labels.get('outcome', '?')}"] += float(match.group(3))
        else:
            found[f"{labels.get('method', '')} {labels.get('route', labels.get('path', '?'))}"] += float(match.group(3))
    return found


async def measure(steps: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="noetl-trips-") as tmp:
        os.chmod(tmp, 0o755)
        stack = Stack(Path(tmp) / "stack", ready_timeout=120.0)
        stack.start()
        try:
            assert stack.database_url
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=stack.auth()) as http:
                await dispatch.section_chain(http, stack.database_url, steps, 1)  # registers, warms up
                xacts, counts, used = _transactions(stack.database_url), await _counts(http), cpu.snapshot()
                chain = await dispatch.section_chain(http, stack.database_url, steps, runs)
                units = steps * (runs + 1)  # section_chain runs a warm-up of its own
                after = await _counts(http)
                return {
                    "steps": units,
                    "postgres_transactions_per_step": (_transactions(stack.database_url) - xacts) / units,
                    "per_step": {k: (after[k] - counts.get(k, 0.0)) / units for k in sorted(after) if after[k] > counts.get(k, 0.0)},
                    "cpu_ms_per_step": cpu.per_unit_ms(used, cpu.snapshot(), units),
                    "step_cycle_p50_ms": chain["step_cycle_p50_ms"],
                }
        finally:
            stack.stop(grace=10.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    found = asyncio.run(measure(args.steps, args.runs))
    print(f"{found['steps']} chain steps")
    print(f"  Postgres transactions per step: {found['postgres_transactions_per_step']:.2f}")
    for key, value in found["per_step"].items():
        print(f"  {key}: {value:.2f} per step")
    per_process = ", ".join(f"{k} {v:.2f}" for k, v in found["cpu_ms_per_step"].items())
    print(f"  CPU per step (ms): {per_process}")
    print(f"  step cycle p50: {found['step_cycle_p50_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
