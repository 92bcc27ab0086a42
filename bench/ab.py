"""Alternated A/B runs of bench/run.py: this tree against another checkout, round after round.

Absolute figures drift on a small shared machine by more than the changes worth measuring
(the same build moved 20-30 % within ten minutes here), so a comparison is made by turns:
each round runs every variant once, in the same order, and the report gives each variant's
median and its per-round ratio to the first variant.

    .venv/bin/python bench/ab.py --tree base=../base-checkout --tree new=. \\
        --variant new-thread=new:WORKER_PYTHON_ISOLATION=thread --rounds 5 -- --only playbook,chain

A ``--tree NAME=DIR`` is a checkout with its own ``.venv`` (``uv sync`` there first); a
``--variant NAME=TREE[:VAR=VALUE,...]`` runs that tree with extra environment variables. The
arguments after ``--`` go to bench/run.py; the results files of these runs are not kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Figures compared (key path in the results JSON → label); lower is better for all but the
#: pipeline's rate.
FIGURES: dict[tuple[str, ...], str] = {
    ("playbook", "client_p50_ms"): "3-step playbook p50 (ms)",
    ("playbook", "cpu_ms_per_run", "total"): "3-step playbook, whole-stack CPU per run (ms)",
    ("chain", "step_cycle_p50_ms"): "chain step cycle p50 (ms)",
    ("chain", "cpu_ms_per_step", "total"): "chain, whole-stack CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "control-api"): "chain, control-api CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "postgres"): "chain, postgres CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "system-worker"): "chain, system-worker CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "outbox-publisher"): "chain, outbox-publisher CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "projector"): "chain, projector CPU per step (ms)",
    ("chain", "cpu_ms_per_step", "nats-server"): "chain, nats-server CPU per step (ms)",
    ("pipeline", "events_per_s"): "pipeline events/s (higher is better)",
    ("pipeline", "cpu_ms_per_event", "total"): "pipeline, whole-stack CPU per event (ms)",
    ("pipeline", "cpu_ms_per_event", "control-api"): "pipeline, control-api CPU per event (ms)",
    ("pipeline", "cpu_ms_per_event", "postgres"): "pipeline, postgres CPU per event (ms)",
    ("pipeline", "cpu_ms_per_event", "outbox-publisher"): "pipeline, outbox-publisher CPU per event (ms)",
    ("pipeline", "cpu_ms_per_event", "projector"): "pipeline, projector CPU per event (ms)",
    ("pipeline", "cpu_ms_per_event", "nats-server"): "pipeline, nats-server CPU per event (ms)",
    ("fanout", "cpu_ms_per_iteration", "total"): "loop, whole-stack CPU per iteration (ms)",
    ("fanout", "wall_s_median"): "1,000-item loop wall (s)",
    ("wasm", "call_1kib_p50_us"): "wasm cached call p50 (µs)",
    ("wasm", "raw_instantiate_us"): "raw wasmtime instantiate p50 (µs)",
    ("wasm", "raw_call_us"): "raw wasmtime call p50 (µs)",
    ("wasm", "filter_sum_wasm_cpu_ms"): "wasm filter + sum 1M rows, CPU (ms)",
    ("wasm", "filter_sum_pyarrow_cpu_ms"): "pyarrow.compute filter + sum 1M rows, CPU (ms)",
    ("wasm", "filter_sum_wasm_ms"): "wasm filter + sum 1M rows (ms)",
    ("wasm", "filter_sum_pyarrow_ms"): "pyarrow.compute filter + sum 1M rows (ms)",
}
#: Ratios to a raw limit of the same run (label → section, numerator, denominator keys).
RATIOS = {
    "wasm cached call / raw instantiate + call": ("wasm", ("call_1kib_p50_us",), ("raw_instantiate_us", "raw_call_us")),
    "wasm filter + sum / pyarrow.compute": ("wasm", ("filter_sum_wasm_ms",), ("filter_sum_pyarrow_ms",)),
    "same, CPU time": ("wasm", ("filter_sum_wasm_cpu_ms",), ("filter_sum_pyarrow_cpu_ms",)),
}


def _variants(trees: dict[str, Path], specs: list[str]) -> dict[str, tuple[Path, dict[str, str]]]:
    found: dict[str, tuple[Path, dict[str, str]]] = {name: (path, {}) for name, path in trees.items()}
    for spec in specs:
        name, _, rest = spec.partition("=")
        tree, _, assignments = rest.partition(":")
        env = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
        found[name] = (trees[tree], env)
    return found


def _portable(arg: str, trees: dict[str, Path]) -> str:
    """``NAME=DIR`` of a ``--tree`` as ``NAME=<checkout of COMMIT>``: a result file names no path
    that exists on one machine only."""
    name, _, path = arg.partition("=")
    if name not in trees or not path or Path(path).resolve() != trees[name]:
        return arg
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=trees[name], capture_output=True, text=True, check=False
    ).stdout.strip()
    return f"{name}=<checkout of {head or 'unknown commit'}>"


def _run(tree: Path, env: dict[str, str], args: list[str]) -> dict[str, float]:
    latest = tree / "bench" / "results" / "latest.md"
    kept = latest.read_text() if latest.exists() else None
    done = subprocess.run(
        [str(tree / ".venv" / "bin" / "python"), "bench/run.py", *args],
        cwd=tree,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"results: (\S+\.json)", done.stdout + done.stderr)
    path = Path(match.group(1)) if match else max((tree / "bench" / "results").glob("2*.json"))
    path = path if path.is_absolute() else tree / path
    figures = json.loads(path.read_text())["figures"]
    for stale in (path, path.with_suffix(".md")):
        stale.unlink(missing_ok=True)
    if kept is not None:
        latest.write_text(kept)  # the figures of record stay those of a full run
    found: dict[str, float] = {}
    for path_keys, label in FIGURES.items():
        value: Any = figures
        for key in path_keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            found[label] = float(value)
    for label, (section, over, under) in RATIOS.items():
        if section in figures and all(k in figures[section] for k in (*over, *under)):
            part = figures[section]
            found[label] = sum(float(part[k]) for k in over) / sum(float(part[k]) for k in under)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR, a checkout with its .venv")
    parser.add_argument("--variant", action="append", default=[], help="NAME=TREE[:VAR=VALUE,...]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write every round's figures and the medians here (JSON)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then bench/run.py's arguments")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, _, path in (t.partition("=") for t in args.tree)}
    variants = _variants(trees, args.variant)
    bench_args = [a for a in args.bench_args if a != "--"]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    load_at_start = os.getloadavg()[0]
    for round_no in range(1, args.rounds + 1):
        for name, (tree, env) in variants.items():
            results[name].append(_run(tree, env, bench_args))
            print(f"round {round_no} {name}: {results[name][-1]}", file=sys.stderr, flush=True)
    first = next(iter(variants))
    if args.out is not None:
        medians = {
            name: {label: statistics.median(r[label] for r in runs) for label in runs[0]}
            for name, runs in results.items()
            if runs
        }
        command = " ".join(["bench/ab.py", *(_portable(a, trees) for a in sys.argv[1:])])
        load = {"load1_at_start": load_at_start, "load1_at_end": os.getloadavg()[0]}
        args.out.write_text(
            json.dumps({"command": command, "load": load, "rounds": results, "medians": medians}, indent=2)
        )
    for label in [*FIGURES.values(), *RATIOS]:
        if not all(label in r for runs in results.values() for r in runs):
            continue
        print(f"{label}:")
        for name, runs in results.items():
            values = [r[label] for r in runs]
            ratios = [r[label] / b[label] if b[label] else float("nan") for r, b in zip(runs, results[first], strict=True)]
            print(
                f"  {name:<14} median {_places(statistics.median(values))}"
                f"  per round [{', '.join(_places(v).strip() for v in values)}]"
                f"  ratio to {first} median {statistics.median(ratios):.3f}"
            )


def _places(value: float) -> str:
    """Two decimals, or four below 1 (the pipeline's CPU per event is a fraction of a ms)."""
    return f"{value:8.4f}" if abs(value) < 1 else f"{value:8.2f}"


if __name__ == "__main__":
    main()
