"""Bench section ``wasm``: the WASM host in-process (no stack needed).

    .venv/bin/python bench/wasm.py            # prints JSON + markdown rows, writes bench/results/wasm-*.{json,md}
    .venv/bin/python bench/wasm.py --quick

Every figure sits beside wasmtime's own cost measured in the same run, so the host's
overhead reads as a ratio: the raw figures call a pre-instantiated export and copy with
``ctypes.memmove``; the host figures go through ``PluginHost.call`` (fresh store, limits,
instantiate from the linked module, copy in, call, bounds checks, copy out).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import wasmtime
from noetl_common.arrow_abi import decode_batch, ipc_to_table, table_to_ipc
from noetl_system_worker.wasm import PluginHost, WasmLimits

try:
    from noetl_common.arrow_abi import batch_encoding
except ImportError:  # an older tree in an A/B run (bench/ab.py): the batch as bytes
    from noetl_common.arrow_abi import encode_batch as batch_encoding

HERE = Path(__file__).resolve().parent
PLUGINS = HERE.parent / "plugins" / "wasm"
RESULTS = HERE / "results"
MiB = 1024 * 1024


def timings(fn: Callable[[], object], runs: int, warmup: int = 50) -> list[float]:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def alternated(
    first: Callable[[], object], second: Callable[[], object], runs: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Seconds of ``runs`` calls of each, taken in turns (first, second, first, ...): wall
    clock, and this thread's CPU time, which other processes on the cores barely move
    (a 2 ms call at load 10 waits for a core for as long again, or ten times as long)."""
    for _ in range(warmup):
        first()
        second()
    out: dict[str, list[float]] = {"first": [], "second": [], "first_cpu": [], "second_cpu": []}
    for _ in range(runs):
        for name, fn in (("first", first), ("second", second)):
            started, cpu = time.perf_counter(), time.thread_time()
            fn()
            out[f"{name}_cpu"].append(time.thread_time() - cpu)
            out[name].append(time.perf_counter() - started)
    return out


def _bound(fn: Callable[[bytes], object], data: bytes) -> Callable[[], object]:
    return lambda: fn(data)


def p50_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def table_of_bytes(target: int) -> pa.Table:
    """About ``target`` bytes of Arrow: int64 + float64 columns."""
    rows = target // 16
    return pa.table({"x": pa.array(range(rows), pa.int64()), "v": pa.array([i * 0.5 for i in range(rows)])})


def measure(quick: bool = False) -> dict[str, Any]:
    """Every figure of the section (medians of many calls; times in µs)."""
    runs = 300 if quick else 3000
    host = PluginHost(WasmLimits(memory_bytes=256 * MiB, output_bytes=64 * MiB, intent_bytes=0))
    try:
        echo_bytes = (PLUGINS / "system" / "echo.wasm").read_bytes()
        filter_bytes = (PLUGINS / "arrow" / "filter_sum.wasm").read_bytes()
        echo = host.compile(echo_bytes)

        # raw wasmtime: one store and instance kept, the export called directly
        store = wasmtime.Store(host.engine)
        store.set_fuel(2**62)
        store.set_epoch_deadline(2**40)
        instance = wasmtime.Linker(host.engine).instantiate(store, echo)
        exports = instance.exports(store)
        run, alloc, memory = exports["run"], exports["alloc"], exports["memory"]
        assert isinstance(run, wasmtime.Func) and isinstance(alloc, wasmtime.Func)
        assert isinstance(memory, wasmtime.Memory)
        raw_call = timings(lambda: run(store, 1024, 0), runs)
        pre = wasmtime.Linker(host.engine).instantiate_pre(echo)

        def raw_instantiate() -> None:
            fresh = wasmtime.Store(host.engine)
            fresh.set_fuel(2**62)
            fresh.set_epoch_deadline(2**40)
            pre.instantiate(fresh)

        raw_inst = timings(raw_instantiate, runs)
        kib = b"k" * 1024
        host_1k = timings(lambda: host.call(echo, kib), runs)

        # 1 MiB of Arrow through echo: host side = call + decode of the returned IPC stream
        ipc = table_to_ipc(table_of_bytes(MiB))
        ptr = alloc(store, len(ipc))
        assert isinstance(ptr, int)

        def raw_copy() -> None:
            base = ctypes.addressof(memory.data_ptr(store).contents)
            ctypes.memmove(base + ptr, ipc, len(ipc))
            ctypes.string_at(base + ptr, len(ipc))

        raw_mib = timings(raw_copy, runs // 3, warmup=10)

        def arrow_round_trip() -> None:
            out = host.call(echo, ipc).output
            ipc_to_table(out)

        host_mib = timings(arrow_round_trip, runs // 3, warmup=10)
        assert host.call(echo, ipc).output == ipc

        # compile (cold) vs deserialize (warm reload from WASM_MODULE_CACHE_DIR)
        sources = {"echo": echo_bytes, "filter_sum": filter_bytes}
        repeats = 30 if quick else 100
        compiles = {
            name: timings(_bound(host.compile, data), repeats, warmup=3) for name, data in sources.items()
        }
        serialized = {
            name: bytes(host.compile(data).serialize())
            for name, data in (("echo", echo_bytes), ("filter_sum", filter_bytes))
        }
        deserialize = {
            name: timings(_bound(host.deserialize, data), repeats, warmup=3)
            for name, data in serialized.items()
        }

        # Arrow compute: filter + sum over 1M rows (NAB1 batch) beside pyarrow.compute
        rows = 100_000 if quick else 1_000_000
        table = table_of_bytes(rows * 16)
        module = host.compile(filter_bytes)
        params = {"filter_column": "x", "threshold": rows // 2, "sum_column": "v"}
        batch = batch_encoding(table, params)

        # encode = the layout, whose write puts pyarrow's buffers straight into guest memory
        def wasm_filter_sum() -> None:
            decode_batch(host.call(module, batch_encoding(table, params)).output)

        def pyarrow_filter_sum() -> None:
            pc.sum(pc.filter(table["v"], pc.greater(table["x"], rows // 2)))

        # alternated call by call, so that load from elsewhere falls on both sides alike
        sums = alternated(wasm_filter_sum, pyarrow_filter_sum, 10 if quick else 30)
        out = decode_batch(host.call(module, batch).output).table
        expected = pc.sum(pc.filter(table["v"], pc.greater(table["x"], rows // 2))).as_py()
        assert abs(out.column("sum")[0].as_py() - expected) <= abs(expected) * 1e-9
    finally:
        host.close()
    return {
        "raw_call_us": p50_us(raw_call),
        "raw_instantiate_us": p50_us(raw_inst),
        "call_1kib_p50_us": p50_us(host_1k),
        "call_1kib_p99_us": sorted(host_1k)[int(len(host_1k) * 0.99)] * 1e6,
        "raw_copy_1mib_us": p50_us(raw_mib),
        "arrow_1mib_round_trip_us": p50_us(host_mib),
        "arrow_1mib_bytes": len(ipc),
        "compile_us": {name: p50_us(v) for name, v in compiles.items()},
        "deserialize_us": {name: p50_us(v) for name, v in deserialize.items()},
        "filter_sum_rows": rows,
        "filter_sum_wasm_ms": statistics.median(sums["first"]) * 1e3,
        "filter_sum_pyarrow_ms": statistics.median(sums["second"]) * 1e3,
        "filter_sum_wasm_cpu_ms": statistics.median(sums["first_cpu"]) * 1e3,
        "filter_sum_pyarrow_cpu_ms": statistics.median(sums["second_cpu"]) * 1e3,
        "runs": runs,
    }


def markdown_rows(f: dict[str, Any]) -> list[str]:
    """Rows of the suite's bench table (| figure | value | target | ratio to raw |)."""
    raw_floor = f["raw_instantiate_us"] + f["raw_call_us"]
    rows = [
        f"| wasm: call with a cached module, instantiate + 1 KiB in/out, p50 | {f['call_1kib_p50_us']:.0f} µs | ≤ 150 µs | "
        f"{f['call_1kib_p50_us'] / raw_floor:.1f}x raw instantiate + call ({raw_floor:.0f} µs) |",
        f"| wasm: same, p99 | {f['call_1kib_p99_us']:.0f} µs | | |",
        f"| wasm: raw wasmtime call / instantiate | {f['raw_call_us']:.1f} / {f['raw_instantiate_us']:.1f} µs | | |",
        f"| wasm: 1 MiB Arrow IPC round trip through system/echo (call + decode), p50 | "
        f"{f['arrow_1mib_round_trip_us']:.0f} µs | ≤ 1 ms | {f['arrow_1mib_round_trip_us'] / f['raw_copy_1mib_us']:.1f}x raw 1 MiB copy in+out "
        f"({f['raw_copy_1mib_us']:.0f} µs) |",
        f"| wasm: cold compile echo / filter_sum | {f['compile_us']['echo']:.0f} / {f['compile_us']['filter_sum']:.0f} µs | | |",
        f"| wasm: warm reload (deserialize) echo / filter_sum | {f['deserialize_us']['echo']:.0f} / "
        f"{f['deserialize_us']['filter_sum']:.0f} µs | | {f['compile_us']['filter_sum'] / f['deserialize_us']['filter_sum']:.0f}x faster than compile |",
        f"| wasm: filter + sum over {f['filter_sum_rows']:,} rows (encode + call + decode) | {f['filter_sum_wasm_ms']:.1f} ms | | "
        f"{f['filter_sum_wasm_ms'] / f['filter_sum_pyarrow_ms']:.1f}x pyarrow.compute ({f['filter_sum_pyarrow_ms']:.1f} ms) |",
    ]
    if "filter_sum_wasm_cpu_ms" in f:
        rows.append(
            f"| wasm: same, CPU time of the calling thread | {f['filter_sum_wasm_cpu_ms']:.2f} ms | | "
            f"{f['filter_sum_wasm_cpu_ms'] / f['filter_sum_pyarrow_cpu_ms']:.1f}x pyarrow.compute "
            f"({f['filter_sum_pyarrow_cpu_ms']:.2f} ms) |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls, a smoke run")
    args = parser.parse_args()
    figures = measure(args.quick)
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    command = " ".join(["bench/wasm.py", *sys.argv[1:]])
    machine = f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"# Bench wasm {started}", "", f"`{command}` on {machine}", ""]
    lines += ["| figure | value | target | ratio to raw |", "|---|---|---|---|", *markdown_rows(figures)]
    table = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"wasm-{started}.json").write_text(
        json.dumps({"command": command, "machine": machine, "figures": figures}, indent=2)
    )
    (RESULTS / f"wasm-{started}.md").write_text(table)
    print(json.dumps(figures))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
