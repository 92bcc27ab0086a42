"""The per-call hot path on wasmtime's C API, and the engine's pooled instance allocator.

wasmtime-py's ``Func.__call__`` reflects the function's type in Python on every call
(~15 µs of a ~10 µs call) and ``Instance.exports`` wraps every export; a plug-in call
needs three exports and two calls of known shapes. These functions look exports up by name
and call through ``wasmtime_func_call``, which still type-checks the arguments and the
result count in wasmtime (a guest whose ``alloc`` or entry has another signature fails
the same way as before, with a ``WasmtimeError``). Traps and host-function exceptions
come back through wasmtime-py's own ``enter_wasm``.

The pooling allocator (``pooled_config``) gives every call a fresh instance, as before,
in a pre-reserved slot: wasmtime resets a slot when its store is dropped (linear memory
zeroed and the module's data image re-applied), so nothing of one call is visible to the
next, and the first ``WASM_KEEP_RESIDENT_BYTES`` of a slot stay mapped, so a call does not
page-fault its memory in again (on this class of machine a fault costs several µs a page).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import enter_wasm

#: wasm32's whole address space: the pool does not cap a memory, each store's limits do.
_WASM32_MAX_BYTES = 1 << 32
_PAGE = mmap.PAGESIZE
_MADV_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None)
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if _MADV_HUGEPAGE is not None else None
if _libc is not None:
    _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _libc.madvise.restype = ctypes.c_int


def hint_huge_pages(address: int, length: int) -> bool:
    """Ask Linux to back ``[address, address + length)`` with transparent huge pages.

    A hint about page size only: protections, contents and wasmtime's reset of the slot
    are unchanged. With 2 MiB pages a slot's resize (mprotect) and reset touch 512 times
    fewer page-table entries. False where the kernel has no such advice.
    """
    if _libc is None or _MADV_HUGEPAGE is None or length <= 0:
        return False
    start = address - address % _PAGE
    return _libc.madvise(start, length + (address - start), _MADV_HUGEPAGE) == 0


def pooled_config(*, slots: int, keep_resident_bytes: int) -> wasmtime.Config:
    """Fuel, epoch interruption and, when ``slots`` > 0, a pool of ``slots`` instances."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    if slots > 0:
        pool = ffi.wasmtime_pooling_allocation_config_new()
        try:
            ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, slots)
            ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, slots)
            ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, slots)
            ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, _WASM32_MAX_BYTES)
            ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pool, keep_resident_bytes)
            ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)
        finally:
            ffi.wasmtime_pooling_allocation_config_delete(pool)
    return config


class Exports:
    """The ABI's exports of one instance: ``memory`` and two functions, looked up by name."""

    __slots__ = ("_context", "_memory", "funcs", "missing", "wrong_kind")

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance, names: tuple[str, ...]) -> None:
        self._context = store._context()
        self.missing: list[str] = []
        self.wrong_kind: list[str] = []
        self._memory: Any = None
        self.funcs: dict[str, Any] = {}
        handle = ctypes.byref(instance._instance)
        for name in ("memory", *names):
            raw = name.encode()
            item = ffi.wasmtime_extern_t()
            if not ffi.wasmtime_instance_export_get(self._context, handle, raw, len(raw), ctypes.byref(item)):
                self.missing.append(name)
                continue
            want = ffi.WASMTIME_EXTERN_MEMORY if name == "memory" else ffi.WASMTIME_EXTERN_FUNC
            if item.kind != want.value:
                self.wrong_kind.append(name)
            elif name == "memory":
                self._memory = item.of.memory
            else:
                self.funcs[name] = item.of.func

    def memory_span(self) -> tuple[int, int]:
        """``(address, size)`` of the linear memory now (it moves only when it grows)."""
        memory = ctypes.byref(self._memory)
        address = ctypes.cast(ffi.wasmtime_memory_data(self._context, memory), ctypes.c_void_p).value
        return address or 0, int(ffi.wasmtime_memory_data_size(self._context, memory))


def call(store: wasmtime.Store, func: Any, args: tuple[int, ...]) -> int:
    """Call an ``(i32, ...) -> i32|i64`` function; raises ``wasmtime.Trap`` or ``WasmtimeError``
    (wrong parameter types or counts are refused by wasmtime, as ``Func.__call__`` refused them)."""
    params = (ffi.wasmtime_val_t * len(args))()
    for i, value in enumerate(args):
        params[i].kind = ffi.WASMTIME_I32
        params[i].of.i32 = ctypes.c_int32(value).value
    results = (ffi.wasmtime_val_t * 1)()
    with enter_wasm(store) as trap:
        error = ffi.wasmtime_func_call(
            store._context(), ctypes.byref(func), params, len(args), results, 1, trap
        )
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
    result = results[0]
    if result.kind == ffi.WASMTIME_I64.value:
        return int(result.of.i64)
    if result.kind == ffi.WASMTIME_I32.value:
        return int(result.of.i32)
    raise wasmtime.WasmtimeError(f"unexpected result kind {result.kind}")
