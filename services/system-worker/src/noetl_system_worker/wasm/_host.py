"""The WASM host: one wasmtime engine, guest ABI v1, capability linking, per-call limits.

Guest ABI v1 (architecture.md §8): exports ``memory``, ``alloc(i32) -> i32`` and an entry
(default ``run``) ``(i32 ptr, i32 len) -> i64`` returning ``(out_ptr << 32) | out_len``.
Host imports live in module ``noetl``; each returns a status (0 ok, 1 no memory, 2 out
of bounds, 3 denied) and only *buffers an intent*: the worker flushes intents through
the control-plane API after the call returned, so a guest never blocks on the network
and a trapped call leaves nothing half-written.

Each call gets a fresh ``Store`` (fuel, epoch deadline, memory cap) and a fresh instance,
so nothing leaks from one call into the next; instances live in the engine's pooled
allocator (``_native.pooled_config``), whose slots wasmtime resets between stores. One ticker thread per engine advances the
epoch while a call runs (it sleeps when none does); a store's deadline is ``timeout / tick``
ticks ahead of the epoch at call start.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import wasmtime

from . import _native
from ._capabilities import (
    ALL_CAPABILITIES,
    IMPORT_MODULE,
    STATUS_DENIED,
    STATUS_NO_MEMORY,
    STATUS_OK,
    STATUS_OUT_OF_BOUNDS,
)
from ._limits import WasmLimits
from ._ticker import EpochTicker

PAGE = 65536
_U32 = 0xFFFF_FFFF


class WasmError(Exception):
    """A plug-in call failed; the subclass names the cause (it becomes the error ``type``)."""


class WasmLinkError(WasmError):
    """The module imports something it was not granted, or is not a valid module."""


class WasmAbiError(WasmError):
    """The module breaks guest ABI v1 (missing export, bad pointers)."""


class WasmTrap(WasmError):
    """The guest trapped (``unreachable``, out-of-bounds access, division by zero ...)."""


class WasmOutOfFuel(WasmError):
    """The call used its whole instruction budget (``WASM_FUEL_PER_CALL``)."""


class WasmTimeout(WasmError):
    """The call ran past its wall-clock limit (``WASM_CALL_TIMEOUT_SECONDS``)."""


class WasmMemoryLimit(WasmError):
    """The guest hit the linear-memory cap (``WASM_MEMORY_LIMIT_BYTES``)."""


class WasmOutputTooLarge(WasmError):
    """The call returned more than ``WASM_OUTPUT_LIMIT_BYTES``."""


@dataclass
class Intent:
    """One host call a guest made, buffered until the call returned."""

    capability: str  # event_publish | result_put | object_put
    key: str | None
    data: bytes


@dataclass
class CallResult:
    """What one call produced: its output bytes and buffered intents."""

    output: bytes
    intents: list[Intent] = field(default_factory=list)
    fuel_used: int | None = None


class _CallState:
    """Per-call state the host functions reach through a thread-local."""

    __slots__ = ("denied", "intent_budget", "intents")

    def __init__(self, denied: frozenset[str], intent_budget: int) -> None:
        self.denied = denied
        self.intent_budget = intent_budget
        self.intents: list[Intent] = []


_current = threading.local()


def _read(caller: wasmtime.Caller, ptr: int, length: int) -> bytes | None:
    """Guest bytes ``[ptr, ptr + length)``; None when out of bounds."""
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return None
    ptr &= _U32
    length &= _U32
    if ptr + length > memory.data_len(caller):
        return None
    base = ctypes.addressof(memory.data_ptr(caller).contents)
    return ctypes.string_at(base + ptr, length)


def _buffer(
    capability: str, caller: wasmtime.Caller, key: tuple[int, int] | None, data: tuple[int, int]
) -> int:
    state: _CallState | None = getattr(_current, "state", None)
    if state is None:
        return STATUS_DENIED
    if capability in state.denied:
        return STATUS_DENIED
    key_text: str | None = None
    if key is not None:
        raw_key = _read(caller, *key)
        if raw_key is None:
            return STATUS_OUT_OF_BOUNDS
        key_text = raw_key.decode("utf-8", "replace")
    payload = _read(caller, *data)
    if payload is None:
        return STATUS_OUT_OF_BOUNDS
    cost = len(payload) + len(key_text or "")
    if cost > state.intent_budget:
        return STATUS_NO_MEMORY
    state.intent_budget -= cost
    state.intents.append(Intent(capability, key_text, payload))
    return STATUS_OK


def _event_publish(caller: wasmtime.Caller, ptr: int, length: int) -> int:
    return _buffer("event_publish", caller, None, (ptr, length))


def _result_put(caller: wasmtime.Caller, kptr: int, klen: int, dptr: int, dlen: int) -> int:
    return _buffer("result_put", caller, (kptr, klen), (dptr, dlen))


def _object_put(caller: wasmtime.Caller, kptr: int, klen: int, dptr: int, dlen: int) -> int:
    return _buffer("object_put", caller, (kptr, klen), (dptr, dlen))


#: capability -> (number of i32 parameters, host function); every import returns an i32 status
_HOST_FUNCS: dict[str, tuple[int, Callable[..., int]]] = {
    "event_publish": (2, _event_publish),
    "result_put": (4, _result_put),
    "object_put": (4, _object_put),
}


def _func_type(params: int) -> wasmtime.FuncType:
    # a fresh FuncType per definition: wasmtime-py hands the type's native handle to the
    # linker, so one FuncType object shared by two linkers is used after it was freed
    return wasmtime.FuncType([wasmtime.ValType.i32()] * params, [wasmtime.ValType.i32()])


class PluginHost:
    """Compiles, links and calls plug-ins under limits. Thread-safe; one per process."""

    def __init__(self, limits: WasmLimits | None = None) -> None:
        self.limits = limits or WasmLimits()
        self.engine = wasmtime.Engine(
            _native.pooled_config(
                slots=self.limits.pool_slots, keep_resident_bytes=self.limits.keep_resident_bytes
            )
        )
        self._huge_pages = self.limits.pool_slots > 0 and self.limits.huge_pages
        self._hinted: set[int] = set()
        # more calls at once than the pool has slots wait here rather than fail to instantiate
        self._slots: threading.BoundedSemaphore | contextlib.nullcontext[None] = (
            threading.BoundedSemaphore(self.limits.pool_slots)
            if self.limits.pool_slots > 0
            else contextlib.nullcontext()
        )
        self._linkers: dict[frozenset[str], wasmtime.Linker] = {}
        # id(module) -> (module, grants -> linked form); holding the module keeps its id unique
        self._pres: dict[int, tuple[wasmtime.Module, dict[frozenset[str], wasmtime.InstancePre]]] = {}
        self._lock = threading.Lock()
        # deadlines are counted in this ticker's ticks; it ticks only while a call runs
        self._ticker = EpochTicker(self.engine, self.limits.tick_seconds)

    def _hint_slot(self, base: int) -> None:
        # a pooled slot keeps its address: the first call in it asks for huge pages once
        if self._huge_pages and base not in self._hinted:
            with self._lock:
                if base not in self._hinted and len(self._hinted) < 4 * self.limits.pool_slots:
                    _native.hint_huge_pages(base, min(self.limits.keep_resident_bytes, 1 << 32))
                    self._hinted.add(base)

    def close(self) -> None:
        """Stop the epoch ticker."""
        self._ticker.close()

    # -- modules ------------------------------------------------------------------------------
    def compile(self, wasm: bytes) -> wasmtime.Module:
        """Compile module bytes (or WAT text); WasmLinkError when they are not a module."""
        try:
            return wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise WasmLinkError(f"not a valid WebAssembly module: {_first_line(exc)}") from None

    def deserialize(self, data: bytes) -> wasmtime.Module:
        """A module from ``Module.serialize()`` bytes of this engine's configuration."""
        return wasmtime.Module.deserialize(self.engine, data)

    def _linker(self, grants: frozenset[str]) -> wasmtime.Linker:
        with self._lock:
            linker = self._linkers.get(grants)
            if linker is None:
                linker = wasmtime.Linker(self.engine)
                for name in sorted(grants & ALL_CAPABILITIES):
                    params, func = _HOST_FUNCS[name]
                    linker.define_func(IMPORT_MODULE, name, _func_type(params), func, access_caller=True)
                self._linkers[grants] = linker
            return linker

    def _pre(self, module: wasmtime.Module, grants: frozenset[str]) -> wasmtime.InstancePre:
        entry = self._pres.get(id(module))
        pre = entry[1].get(grants) if entry is not None else None
        if pre is not None:
            return pre
        self.check_imports(module, grants)
        try:
            pre = self._linker(grants).instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise WasmLinkError(f"cannot link the module: {_first_line(exc)}") from None
        with self._lock:
            self._pres.setdefault(id(module), (module, {}))[1][grants] = pre
        return pre

    def forget(self, module: wasmtime.Module) -> None:
        """Drop the linked forms of a module that was replaced (hot reload)."""
        with self._lock:
            self._pres.pop(id(module), None)

    @staticmethod
    def check_imports(module: wasmtime.Module, grants: frozenset[str]) -> None:
        """WasmLinkError naming every import the grants do not cover (deny by default)."""
        missing = []
        for item in module.imports:
            name = item.name or ""
            if item.module != IMPORT_MODULE or name not in grants:
                missing.append(f"{item.module}.{name}")
        if missing:
            granted = ", ".join(sorted(grants)) or "none"
            raise WasmLinkError(
                f"the module imports {', '.join(missing)} which this step does not grant "
                f"(granted: {granted}); declare it in the step's capabilities"
            )

    # -- calls --------------------------------------------------------------------------------
    def call(
        self,
        module: wasmtime.Module,
        data: bytes | InputWriter,
        *,
        grants: frozenset[str] = frozenset(),
        denied: frozenset[str] = frozenset(),
        entry: str = "run",
        limits: WasmLimits | None = None,
    ) -> CallResult:
        """Instantiate ``module`` in a fresh store and call ``entry`` with ``data``.

        ``data``: the input bytes, or an :class:`InputWriter` that writes them straight into
        the guest's memory (one copy). ``denied``: granted capabilities this call answers
        with status 3. Raises a :class:`WasmError` subclass naming the cause; never leaves
        state behind.
        """
        limits = limits or self.limits
        pre = self._pre(module, grants)
        state = _CallState(denied | limits.denied, limits.intent_bytes)
        with self._slots, self._ticker.running():  # a free slot of the engine's instance pool
            store = wasmtime.Store(self.engine)
            _current.state = state
            try:
                return self._call_in(store, pre, data, entry, limits, state)
            finally:
                _current.state = None
                store.close()  # the slot is reset and back in the pool now, not at garbage collection

    def _call_in(
        self,
        store: wasmtime.Store,
        pre: wasmtime.InstancePre,
        data: bytes | InputWriter,
        entry: str,
        limits: WasmLimits,
        state: _CallState,
    ) -> CallResult:
        store.set_limits(memory_size=limits.memory_bytes)
        fuel = limits.fuel or 2**62
        store.set_fuel(fuel)
        store.set_epoch_deadline(limits.epoch_ticks)
        size = len(data) if isinstance(data, bytes | bytearray) else data.nbytes
        exports: _native.Exports | None = None
        try:
            instance = pre.instantiate(store)
            exports = _abi_exports(store, instance, entry)
            alloc, run = exports.funcs["alloc"], exports.funcs[entry]
            self._hint_slot(exports.memory_span()[0])
            ptr = _native.call(store, alloc, (size,)) & _U32 if size else 0
            base, memory_size = exports.memory_span()
            if size and (ptr <= 0 or ptr + size > memory_size):
                raise WasmMemoryLimit(
                    f"alloc({size}) gave no room for the input (returned {ptr}); "
                    f"the linear-memory cap is {limits.memory_bytes} bytes"
                )
            if isinstance(data, bytes | bytearray):
                ctypes.memmove(base + ptr, bytes(data), size)
            elif size:
                data.write_to(base + ptr)
            packed = _native.call(store, run, (ptr, size)) & 0xFFFF_FFFF_FFFF_FFFF
            out_ptr, out_len = packed >> 32, packed & _U32
            if out_len > limits.output_bytes:
                raise WasmOutputTooLarge(
                    f"the plug-in returned {out_len} bytes, over the output cap of {limits.output_bytes} bytes"
                )
            base, memory_size = exports.memory_span()
            if out_ptr + out_len > memory_size:
                raise WasmAbiError(
                    f"output [{out_ptr}, {out_ptr + out_len}) is outside the guest's {memory_size}-byte memory"
                )
            output = ctypes.string_at(base + out_ptr, out_len)
            return CallResult(output, state.intents, fuel - store.get_fuel())
        except wasmtime.Trap as trap:
            size_now = exports.memory_span()[1] if exports is not None else None
            raise _from_trap(trap, size_now, limits) from None
        except wasmtime.WasmtimeError as exc:
            if "exceeds memory limits" in str(exc):
                raise WasmMemoryLimit(
                    f"the module's initial memory is over the {limits.memory_bytes}-byte cap: {_first_line(exc)}"
                ) from None
            raise WasmLinkError(f"cannot instantiate the module: {_first_line(exc)}") from None


class InputWriter(Protocol):
    """Input that writes itself into guest memory (``noetl_common.arrow_abi.BatchEncoding``)."""

    @property
    def nbytes(self) -> int: ...

    def write_to(self, address: int) -> None:
        """Write ``nbytes`` bytes at ``address``."""


def _abi_exports(store: wasmtime.Store, instance: wasmtime.Instance, entry: str) -> _native.Exports:
    exports = _native.Exports(store, instance, ("alloc", entry))
    if exports.missing:
        raise WasmAbiError(f"the module does not export {', '.join(exports.missing)} (guest ABI v1)")
    if "memory" in exports.wrong_kind:
        raise WasmAbiError("export 'memory' is not a memory")
    if exports.wrong_kind:
        raise WasmAbiError(f"exports 'alloc' and {entry!r} must be functions")
    return exports


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _from_trap(trap: wasmtime.Trap, memory_size: int | None, limits: WasmLimits) -> WasmError:
    code = trap.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return WasmOutOfFuel(f"out of fuel: the call used its budget of {limits.fuel} instructions")
    if code == wasmtime.TrapCode.INTERRUPT:
        return WasmTimeout(
            f"interrupted: the call ran past its {limits.timeout_seconds:g} s wall-clock limit"
        )
    if memory_size is not None and memory_size + PAGE > limits.memory_bytes:
        # memory.grow was refused (it returns -1 at the cap) and the guest then trapped
        return WasmMemoryLimit(
            f"linear-memory cap of {limits.memory_bytes} bytes reached ({memory_size} bytes in use); "
            f"the guest trapped after memory.grow was refused: {_first_line(trap)}"
        )
    name = code.name.lower() if code is not None else "trap"
    return WasmTrap(f"the plug-in trapped ({name}): {_first_line(trap)}")
