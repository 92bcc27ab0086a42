"""The suite's benchmark: `make bench` (not part of `make test`).

Starts its own stack (Postgres, nats-server, the four services, two worker pools) on free
loopback ports, measures, and writes JSON + a markdown table to bench/results/. Every
figure is a median (or a percentile) over repeated runs; the raw limits of this machine
are measured in the same run so that ratios compare like with like.

    .venv/bin/python bench/run.py                 # everything, default sizes
    .venv/bin/python bench/run.py --quick         # small sizes, a smoke run
    .venv/bin/python bench/run.py --only raw,pipeline
    .venv/bin/python bench/run.py --only wasm      # in-process sections start no stack
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import psycopg
from noetl_common import EVENTS_STREAM
from noetl_dev import Stack

sys.path.insert(0, str(Path(__file__).parent))
import cpu
import dispatch
import inspector
import raw
import sandbox
import wasm

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SECTIONS = (
    "raw", "pipeline", "latency", "playbook", "wasm", "chain", "inproc", "fanout", "sandbox", "isolation", "inspector"
)
#: Sections measured in this process alone: a run of only these starts no stack.
IN_PROCESS = frozenset({"wasm", "inproc"})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace) -> None:
        self.stack = stack
        self.args = args
        self.figures: dict[str, Any] = {}
        self.http = httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers=stack.auth())
        #: a python-pool worker's client: the pool no process of the bench stack serves
        self.worker: httpx.AsyncClient | None = None

    # -- helpers ------------------------------------------------------------------------------
    def db(self) -> psycopg.Connection[Any]:
        assert self.stack.database_url
        return psycopg.connect(self.stack.database_url, autocommit=True)

    async def register(self, file: Path) -> None:
        content = await asyncio.to_thread(file.read_text)
        reply = await self.http.post("/api/catalog/register", json={"content": content})
        reply.raise_for_status()

    async def execute(self, path: str) -> int:
        reply = await self.http.post("/api/execute", json={"path": path})
        reply.raise_for_status()
        return int(reply.json()["execution_id"])

    async def wait_terminal(self, execution_id: int, timeout: float = 60) -> dict[str, Any]:
        """The execution's final view (``?wait=`` long-polls: answered when it ends, no polling)."""
        return await dispatch.wait_terminal(self.http, execution_id, timeout)

    @staticmethod
    def _projected(conn: psycopg.Connection[Any], execution_id: int, event_type: str) -> int:
        row = conn.execute(
            "select count(*) from noetl.event where execution_id = %s and event_type = %s",
            (execution_id, event_type),
        ).fetchone()
        return int(row[0]) if row else 0

    async def wait_projected(
        self, execution_id: int, event_type: str, total: int, timeout: float = 600
    ) -> None:
        """Poll noetl.event until ``total`` events of ``event_type`` landed (the bench's clock stops here).

        The count runs on the stack's Postgres and is counted in its CPU: it reuses one
        connection (a new one forks a backend), and waits a quarter of the time the events
        still missing should take at the rate seen since the last count (20 ms to 1 s), so
        a 100,000-event run costs a few dozen counts instead of one every 50 ms, and the
        clock still stops within about 20 ms of the last event landing."""
        deadline = time.monotonic() + timeout
        with self.db() as conn:
            seen, at = 0, time.monotonic()
            while (landed := self._projected(conn, execution_id, event_type)) < total:
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"{event_type}: fewer than {total} events projected after {timeout}s")
                rate = (landed - seen) / (now - at) if landed > seen and now > at else 0.0
                seen, at = landed, now
                rest = (total - landed) / rate if rate else 1.0
                await asyncio.sleep(min(1.0, max(0.02, rest / 4)))

    async def held_execution(self) -> tuple[int, dict[str, int]]:
        """A running execution whose command the bench holds, as a worker of the python pool
        (events are accepted only from a command's lease holder); ``(execution_id, meta)``."""
        if self.worker is None:
            minted = await self.http.post(
                "/api/tokens", json={"name": f"bench-worker-{time.time_ns()}", "role": "worker", "pool": "python"}
            )
            minted.raise_for_status()
            headers = {"authorization": f"Bearer {minted.json()['token']}"}
            self.worker = httpx.AsyncClient(base_url=self.stack.api_url, timeout=60, headers=headers)
        await self.register(HERE / "playbooks" / "held.yaml")
        execution_id = await self.execute("bench/held")
        with self.db() as conn:
            row = conn.execute(
                "select event_id from noetl.command where execution_id = %s", (execution_id,)
            ).fetchone()
        assert row is not None
        claim = await self.worker.post(f"/api/commands/{row[0]}/claim", json={"worker_id": "bench"})
        claim.raise_for_status()
        return execution_id, {"command_id": claim.json()["command_id"], "attempt": claim.json()["attempt"]}

    async def post_events(self, execution_id: int, meta: dict[str, int], event_type: str, count: int) -> None:
        assert self.worker is not None
        events = [
            {
                "execution_id": execution_id,
                "event_type": event_type,
                "step": "start",
                "worker_id": "bench",
                "meta": meta,
                "context": {"i": i, "pad": "x" * 100},
            }
            for i in range(count)
        ]
        reply = await self.worker.post("/api/events", content=msgspec.json.encode({"events": events}))
        reply.raise_for_status()

    # -- sections -----------------------------------------------------------------------------
    async def section_raw(self) -> None:
        n = self.args.raw_messages
        assert self.stack.nats_url and self.stack.database_url
        pub = [await raw.nats_publish_async_rate(self.stack.nats_url, n) for _ in range(self.args.runs)]
        pull = [await raw.nats_pull_ack_rate(self.stack.nats_url, n) for _ in range(self.args.runs)]
        pg = [raw.pg_unnest_insert_rate(self.stack.database_url, n) for _ in range(self.args.runs)]
        self.figures["raw"] = {
            "jetstream_publish_async_msgs_per_s": statistics.median(pub),
            "jetstream_pull_ack_msgs_per_s": statistics.median(pull),
            "postgres_unnest_insert_rows_per_s": statistics.median(pg),
            "runs": {"publish": pub, "pull": pull, "pg": pg},
        }

    async def section_pipeline(self) -> None:
        """N events through POST /api/events → outbox → JetStream → projector → noetl.event."""
        total, batch, posters = self.args.events, 1000, 4
        rates, ingest_rates = [], []
        cpu_used: dict[str, float] = {}
        for _ in range(self.args.runs):
            execution_id, meta = await self.held_execution()
            cpu_before = cpu.snapshot()
            queue: asyncio.Queue[int] = asyncio.Queue()
            for offset in range(0, total, batch):
                queue.put_nowait(min(batch, total - offset))

            async def poster(
                eid: int = execution_id, held: dict[str, int] = meta, batches: asyncio.Queue[int] = queue
            ) -> None:
                while not batches.empty():
                    await self.post_events(eid, held, "bench.pipeline", batches.get_nowait())

            start = time.perf_counter()
            await asyncio.gather(*(poster() for _ in range(posters)))
            ingested = time.perf_counter() - start
            await self.wait_projected(execution_id, "bench.pipeline", total)
            elapsed = time.perf_counter() - start
            for label, seconds in cpu.spent(cpu_before, cpu.snapshot()).items():
                cpu_used[label] = cpu_used.get(label, 0.0) + seconds
            ingest_rates.append(total / ingested)
            rates.append(total / elapsed)
        self.figures["pipeline"] = {
            "events": total,
            "events_per_s": statistics.median(rates),
            "ingest_events_per_s": statistics.median(ingest_rates),
            "cpu_ms_per_event": cpu.per_unit_ms({}, cpu_used, total * self.args.runs),
            "runs": rates,
        }

    async def section_latency(self) -> None:
        """Outbox commit → JetStream ack at a steady rate (default 1,000 events/s)."""
        rate, seconds, per_tick = self.args.latency_rate, self.args.latency_seconds, 10
        execution_id, meta = await self.held_execution()
        interval = per_tick / rate
        ticks = int(seconds * rate / per_tick)
        start = time.perf_counter()
        for tick in range(ticks):
            await self.post_events(execution_id, meta, "bench.latency", per_tick)
            delay = start + (tick + 1) * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        achieved = ticks * per_tick / (time.perf_counter() - start)
        total = ticks * per_tick
        await self.wait_projected(execution_id, "bench.latency", total)
        latencies = await self._stream_latencies(execution_id, "bench.latency", total)
        self.figures["latency"] = {
            "target_events_per_s": rate,
            "achieved_events_per_s": achieved,
            "events": total,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
        }

    async def _stream_latencies(self, execution_id: int, event_type: str, total: int) -> list[float]:
        """Stream store time minus the event's created_at (written in the outbox transaction)."""
        assert self.stack.nats_url
        nc = await nats.connect(self.stack.nats_url)
        latencies: list[float] = []
        try:
            js = nc.jetstream()
            sub = await js.subscribe(
                f"noetl.events.*.*.{execution_id}.*", stream=EVENTS_STREAM, ordered_consumer=True
            )
            while len(latencies) < total:
                msg = await sub.next_msg(timeout=10)
                body = msgspec.json.decode(msg.data)
                if body.get("event_type") != event_type:
                    continue
                created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
                stored = msg.metadata.timestamp
                latencies.append((stored - created).total_seconds() * 1000)
            await sub.unsubscribe()
        finally:
            await nc.close()
        return latencies

    async def section_playbook(self) -> None:
        """End-to-end wall time of a 3-step python playbook, sequential runs."""
        self.figures["playbook"] = await self._playbook()

    async def _playbook(self) -> dict[str, Any]:
        await self.register(HERE / "playbooks" / "three_step.yaml")
        for _ in range(5):  # warm the catalog cache, the workers' imports and connections
            await self.wait_terminal(await self.execute("bench/three_step"))
        client_ms, server_ms = [], []
        cpu_before = cpu.snapshot()
        for _ in range(self.args.playbook_runs):
            start = time.perf_counter()
            execution_id = await self.execute("bench/three_step")
            body = await self.wait_terminal(execution_id)
            client_ms.append((time.perf_counter() - start) * 1000)
            if body["status"] != "COMPLETED":
                raise RuntimeError(f"bench playbook ended {body['status']}: {body.get('error')}")
            created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
            updated = datetime.fromisoformat(body["updated_at"].replace("Z", "+00:00"))
            server_ms.append((updated - created).total_seconds() * 1000)
        cpu_ms = cpu.per_unit_ms(cpu_before, cpu.snapshot(), len(client_ms))
        return {
            "runs": len(client_ms),
            "cpu_ms_per_run": cpu_ms,
            "client_p50_ms": percentile(client_ms, 50),
            "client_p99_ms": percentile(client_ms, 99),
            "server_p50_ms": percentile(server_ms, 50),
            "server_p99_ms": percentile(server_ms, 99),
        }

    async def section_wasm(self) -> None:
        """The WASM host in-process (bench/wasm.py); needs no stack."""
        self.figures["wasm"] = await asyncio.to_thread(wasm.measure, self.args.quick)

    async def section_chain(self) -> None:
        """Per-step dispatch on a generated linear chain (bench/dispatch.py)."""
        assert self.stack.database_url
        self.figures["chain"] = await dispatch.section_chain(
            self.http, self.stack.database_url, self.args.chain_steps, self.args.runs
        )

    async def section_inproc(self) -> None:
        """The same chain in process: orchestrator + the worker's pipeline runner (bench/dispatch.py)."""
        self.figures["inproc"] = await dispatch.section_inproc(self.args.chain_steps, self.args.runs)

    async def section_sandbox(self) -> None:
        """One python task through the sandbox vs a thread, in process (bench/sandbox.py)."""
        self.figures["sandbox"] = await sandbox.overhead(self.args.sandbox_tasks)

    async def section_isolation(self) -> None:
        """The 3-step playbook and the chain with python isolation off and on, alternated over
        ``--isolation-rounds`` rounds (one pass of each mode per round, the shared worker
        restarted between them) so that drift on the machine falls on both; medians of the rounds."""
        assert self.stack.database_url
        rounds: dict[str, list[dict[str, Any]]] = {"thread": [], "process": []}
        try:
            for _ in range(self.args.isolation_rounds):
                for mode in ("thread", "process"):
                    await asyncio.to_thread(sandbox.use_isolation, self.stack, mode)
                    rounds[mode].append(
                        {
                            "playbook": await self._playbook(),
                            "chain": await dispatch.section_chain(
                                self.http, self.stack.database_url, self.args.chain_steps, self.args.runs
                            ),
                        }
                    )
        finally:
            await asyncio.to_thread(sandbox.use_isolation, self.stack, "process")
        self.figures["isolation"] = {mode: sandbox.median_round(runs) for mode, runs in rounds.items()}

    async def section_inspector(self) -> None:
        """The run page of a finished N-item loop in headless chromium (bench/inspector.py)."""
        self.figures["inspector"] = await asyncio.to_thread(
            inspector.measure, self.stack, self.args.inspector_items, self.args.runs
        )

    async def section_fanout(self) -> None:
        """A parallel loop on its own stack with two shared-pool workers (bench/dispatch.py)."""
        self.figures["fanout"] = await dispatch.section_fanout(self.args.fanout_items, self.args.runs)


def markdown(figures: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"# Bench {meta['started_at']}", "", f"`{meta['command']}` on {meta['machine']}", ""]
    lines += ["| figure | value | target | ratio to raw |", "|---|---|---|---|"]
    rawf = figures.get("raw", {})
    if rawf:
        lines.append(
            f"| raw JetStream publish_async (+Msg-Id) | {rawf['jetstream_publish_async_msgs_per_s']:,.0f} msg/s | | |"
        )
        lines.append(f"| raw JetStream pull + ack | {rawf['jetstream_pull_ack_msgs_per_s']:,.0f} msg/s | | |")
        lines.append(
            f"| raw Postgres unnest insert | {rawf['postgres_unnest_insert_rows_per_s']:,.0f} rows/s | | |"
        )
    if "pipeline" in figures:
        p = figures["pipeline"]
        limit = min(
            rawf.get("jetstream_publish_async_msgs_per_s", 0) or float("inf"),
            rawf.get("postgres_unnest_insert_rows_per_s", 0) or float("inf"),
        )
        ratio = (
            f"{p['events_per_s'] / limit:.2f} of min(raw publish, raw insert)"
            if limit != float("inf")
            else ""
        )
        lines.append(
            f"| event pipeline, {p['events']:,} events API → noetl.event | {p['events_per_s']:,.0f} events/s | ≥ 5,000 | {ratio} |"
        )
        lines.append(f"| of which API ingest alone | {p['ingest_events_per_s']:,.0f} events/s | | |")
        per_event = {k: v * 1000 for k, v in p.get("cpu_ms_per_event", {}).items()}
        lines.append(f"| same, whole-stack CPU per event (µs) | {cpu.describe(per_event).replace(' ms', ' µs', 1)} | | |")
    if "latency" in figures:
        lt = figures["latency"]
        lines.append(
            f"| publish latency commit → JetStream ack at {lt['achieved_events_per_s']:,.0f} ev/s, p50 | {lt['p50_ms']:.2f} ms | | |"
        )
        lines.append(f"| same, p99 | {lt['p99_ms']:.2f} ms | ≤ 20 ms | |")
    if "playbook" in figures:
        pb = figures["playbook"]
        lines.append(
            f"| 3-step python playbook, client wall time p50 ({pb['runs']} runs) | {pb['client_p50_ms']:.1f} ms | ≤ 50 ms | |"
        )
        lines.append(f"| same, p99 | {pb['client_p99_ms']:.1f} ms | | |")
        lines.append(
            f"| same, server-side (execution created → finished) p50 / p99 | {pb['server_p50_ms']:.1f} / {pb['server_p99_ms']:.1f} ms | | |"
        )
        lines.append(f"| same, whole-stack CPU per run | {cpu.describe(pb.get('cpu_ms_per_run'))} | | |")
    if "wasm" in figures:
        lines += wasm.markdown_rows(figures["wasm"])
    lines += dispatch.markdown_rows(figures)
    lines += sandbox.markdown_rows(figures)
    lines += inspector.markdown_rows(figures)
    return "\n".join(lines) + "\n"


async def _with_stack(args: argparse.Namespace, only: set[str]) -> dict[str, Any]:
    """The selected sections against a stack of the bench's own; their figures."""
    with tempfile.TemporaryDirectory(prefix="noetl-bench-") as tmp:
        os.chmod(tmp, 0o755)
        stack = Stack(Path(tmp) / "stack", ready_timeout=120.0)
        stack.start()
        bench = Bench(stack, args)
        try:
            for section in SECTIONS:
                if section in only:
                    print(f"bench: {section} ...", flush=True)
                    await getattr(bench, f"section_{section}")()
                    print(json.dumps(bench.figures[section], default=str), flush=True)
        finally:
            await bench.http.aclose()
            stack.stop(grace=10.0)
    return bench.figures


async def amain(args: argparse.Namespace) -> int:
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if only <= IN_PROCESS:
        # nothing to talk to: no Postgres, NATS or services competing for the two cores
        figures: dict[str, Any] = {}
        if "wasm" in only:
            print("bench: wasm ...", flush=True)
            figures["wasm"] = await asyncio.to_thread(wasm.measure, args.quick)
        if "inproc" in only:
            print("bench: inproc ...", flush=True)
            figures["inproc"] = await dispatch.section_inproc(args.chain_steps, args.runs)
    else:
        figures = await _with_stack(args, only)
    meta = {
        "started_at": started,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "load1_after": os.getloadavg()[0],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{started}.json").write_text(json.dumps({"meta": meta, "figures": figures}, indent=2))
    table = markdown(figures, meta)
    (RESULTS / f"{started}.md").write_text(table)
    (RESULTS / "latest.md").write_text(table)
    print(table)
    print(f"results: {RESULTS / f'{started}.json'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--raw-messages", type=int, default=50_000)
    parser.add_argument("--latency-rate", type=int, default=1000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--playbook-runs", type=int, default=200)
    parser.add_argument("--chain-steps", type=int, default=200, help="steps of the generated chain")
    parser.add_argument("--fanout-items", type=int, default=1000, help="iterations of the parallel loop")
    parser.add_argument("--inspector-items", type=int, default=1000, help="iterations of the inspector's loop")
    parser.add_argument("--sandbox-tasks", type=int, default=300, help="python tasks of the sandbox section")
    parser.add_argument(
        "--isolation-rounds", type=int, default=2, help="alternated thread/process rounds of the isolation section"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.events, args.raw_messages = 1, 5_000, 5_000
        args.latency_seconds, args.playbook_runs = 2.0, 20
        args.chain_steps, args.fanout_items, args.sandbox_tasks = 50, 200, 50
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
