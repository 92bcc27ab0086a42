"""The WASM host's pooled instances and its Arrow fast paths.

Each call still gets a fresh instance: a pooled slot that a call dirtied (memory, globals,
a trap half-way) is reset before the next call runs in it; more calls at once than the
pool holds wait for a slot; Arrow batches written straight into guest memory equal the
bytes path; the SIMD loop of arrow/filter_sum agrees with pyarrow.compute.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import wasm_modules as wm
from noetl_common import ConfigError
from noetl_common.arrow_abi import batch_encoding, decode_batch, encode_batch
from noetl_system_worker.wasm import PluginHost, WasmLimits, WasmMemoryLimit, WasmTrap

DIST = Path(__file__).resolve().parents[3] / "plugins" / "wasm"
MiB = 1024 * 1024

#: Returns what a previous call would have left (the i32 at 2048 and a global), then leaves
#: 0x41414141 in both; with a non-empty input it traps after writing them.
DIRTY = wm.module(
    "(global $seen (mut i32) (i32.const 0))"
    '(func (export "run") (param $p i32) (param $n i32) (result i64)'
    "  (i32.store (i32.const 2052) (global.get $seen))"
    "  (i32.store (i32.const 2056) (i32.load (i32.const 2048)))"
    "  (i32.store (i32.const 2048) (i32.const 0x41414141))"
    "  (global.set $seen (i32.const 0x41414141))"
    "  (if (local.get $n) (then unreachable))"
    "  (i64.or (i64.shl (i64.const 2052) (i64.const 32)) (i64.const 8)))"
)


@pytest.fixture(scope="module")
def one_slot() -> Iterator[PluginHost]:
    host = PluginHost(WasmLimits(memory_bytes=32 * MiB, pool_slots=1))
    yield host
    host.close()


def test_a_pooled_slot_starts_clean_after_a_call_and_after_a_trap(one_slot: PluginHost) -> None:
    module = one_slot.compile(DIRTY)
    # one slot: every call below runs in the same pooled memory
    assert one_slot.call(module, b"").output == bytes(8)
    assert one_slot.call(module, b"").output == bytes(8)
    with pytest.raises(WasmTrap):
        one_slot.call(module, b"trap")
    assert one_slot.call(module, b"").output == bytes(8)
    # another module in the slot sees none of it either
    assert one_slot.call(one_slot.compile(wm.ECHO), b"x").output == b"x"
    assert one_slot.call(module, b"").output == bytes(8)


def test_more_calls_at_once_than_slots_wait_for_one(one_slot: PluginHost) -> None:
    echo = one_slot.compile(wm.ECHO)
    failures: list[BaseException] = []
    outputs: list[bytes] = []

    def worker(tag: int) -> None:
        try:
            for i in range(20):
                data = f"{tag}:{i}".encode()
                out = one_slot.call(echo, data).output
                assert out == data, (out, data)
                outputs.append(out)
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(outputs) == 80


def test_limits_still_hold_in_a_pooled_slot(one_slot: PluginHost) -> None:
    small = WasmLimits(memory_bytes=4 * 65536, fuel=10_000_000)
    with pytest.raises(WasmMemoryLimit, match="linear-memory cap of 262144 bytes"):
        one_slot.call(one_slot.compile(wm.BOMB), b"", limits=small)
    # a batch written in place is refused like bytes when it does not fit
    big = batch_encoding(pa.table({"a": pa.array(range(40_000), pa.int64())}))
    with pytest.raises(WasmMemoryLimit, match="gave no room for the input"):
        one_slot.call(one_slot.compile(wm.ECHO), big, limits=small)


def test_without_a_pool_calls_behave_the_same() -> None:
    host = PluginHost(WasmLimits(pool_slots=0, huge_pages=False))
    try:
        module = host.compile(DIRTY)
        assert host.call(module, b"").output == bytes(8)
        assert host.call(module, b"").output == bytes(8)
    finally:
        host.close()


def test_a_batch_written_in_place_equals_the_bytes(one_slot: PluginHost) -> None:
    table = pa.table({"x": pa.array([1, None, 3, 4], pa.int64()), "v": pa.array([0.5, 1.5, None, 2.0])})
    echo = one_slot.compile(wm.ECHO)
    params = {"filter_column": "x"}
    assert one_slot.call(echo, batch_encoding(table, params)).output == encode_batch(table, params)


def _filter_sum(host: PluginHost, table: pa.Table, column: str, threshold: float) -> tuple[int, float]:
    module = host.compile((DIST / "arrow" / "filter_sum.wasm").read_bytes())
    params = {"filter_column": column, "threshold": threshold, "sum_column": "v"}
    out = decode_batch(host.call(module, batch_encoding(table, params)).output).table
    return out.column("count")[0].as_py(), out.column("sum")[0].as_py()


@pytest.mark.parametrize("rows", [0, 1, 7, 8, 9, 1003])
def test_filter_sum_simd_loop_matches_pyarrow_compute(one_slot: PluginHost, rows: int) -> None:
    rng = random.Random(rows)
    # no nulls anywhere: the fused SIMD loop; row counts around its 8-row step and tail
    table = pa.table(
        {
            "x": pa.array([rng.randint(-1000, 1000) for _ in range(rows)], pa.int64()),
            "f": pa.array([rng.uniform(-1, 1) for _ in range(rows)], pa.float64()),
            "v": pa.array([rng.uniform(-5, 5) for _ in range(rows)], pa.float64()),
        }
    )
    for column, threshold in (("x", 10), ("x", 10.5), ("x", -10.5), ("f", 0.25), ("f", -2.0)):
        mask = pc.greater(table[column], threshold)
        expected = pc.sum(pc.filter(table["v"], mask)).as_py() or 0.0
        count, total = _filter_sum(one_slot, table, column, threshold)
        assert count == (pc.sum(mask).as_py() or 0)
        assert total == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_filter_sum_thresholds_outside_int64(one_slot: PluginHost) -> None:
    table = pa.table({"x": pa.array([-(2**63), -1, 0, 2**63 - 1], pa.int64()), "v": [1.0, 2.0, 4.0, 8.0]})
    assert _filter_sum(one_slot, table, "x", 1e19) == (0, 0.0)
    assert _filter_sum(one_slot, table, "x", -1e19) == (4, 15.0)
    assert _filter_sum(one_slot, table, "x", -1) == (2, 12.0)


def test_huge_page_advice_leaves_a_slot_working() -> None:
    host = PluginHost(WasmLimits(pool_slots=2, huge_pages=True))
    try:
        echo = host.compile(wm.ECHO)
        for _ in range(3):
            assert host.call(echo, b"y" * 100_000).output == b"y" * 100_000
    finally:
        host.close()


def test_pool_settings_from_env() -> None:
    limits = WasmLimits.from_env(
        {"WASM_POOL_SLOTS": "4", "WASM_KEEP_RESIDENT_BYTES": "1048576", "WASM_HUGE_PAGES": "false"}
    )
    assert (limits.pool_slots, limits.keep_resident_bytes, limits.huge_pages) == (4, 1048576, False)
    defaults = WasmLimits.from_env({})
    assert (defaults.pool_slots, defaults.keep_resident_bytes, defaults.huge_pages) == (16, 64 * MiB, True)
    with pytest.raises(ConfigError, match="WASM_POOL_SLOTS"):
        WasmLimits.from_env({"WASM_POOL_SLOTS": "-1"})
