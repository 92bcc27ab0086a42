"""Per-call limits of the WASM host, per pool from the environment (architecture.md §8)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from noetl_common import ConfigError, env_bool, env_float, env_int, env_opt

from ._capabilities import ALL_CAPABILITIES

MiB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class WasmLimits:
    """What one plug-in call may use. ``fuel`` 0 means no instruction budget."""

    #: Instructions (wasmtime fuel units) per call; 1e9 is about 0.2 s of a tight loop.
    fuel: int = 1_000_000_000
    #: Wall-clock limit of one call, enforced by epoch interruption.
    timeout_seconds: float = 5.0
    #: Linear-memory cap (Store.set_limits); memory.grow past it returns -1 in the guest.
    memory_bytes: int = 64 * MiB
    #: Largest output a call may return.
    output_bytes: int = 16 * MiB
    #: Bytes of buffered intents (events, results, objects) per call.
    intent_bytes: int = 16 * MiB
    #: Epoch ticker period: the resolution of the wall-clock limit.
    tick_seconds: float = 0.005
    #: Capabilities linked but answered with status 3 on this worker.
    denied: frozenset[str] = frozenset()
    #: Engine-wide (read from the host's limits, not per call): instances the pooled
    #: allocator holds; more concurrent calls wait for a slot. 0: no pool, every call maps
    #: its memory afresh.
    pool_slots: int = 16
    #: Engine-wide: bytes of each slot's linear memory kept mapped (zeroed) between calls.
    keep_resident_bytes: int = 64 * MiB
    #: Engine-wide: ask the kernel for transparent huge pages over each slot's resident part.
    huge_pages: bool = True

    @property
    def epoch_ticks(self) -> int:
        """Epoch deadline of one call, in ticker periods (at least 1)."""
        return max(1, math.ceil(self.timeout_seconds / self.tick_seconds))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WasmLimits:
        """Read ``WASM_*`` limits; ConfigError names the bad variable."""
        env = os.environ if env is None else env
        denied = frozenset(
            item.strip()
            for item in (env_opt("WASM_DENIED_CAPABILITIES", env=env) or "").split(",")
            if item.strip()
        )
        unknown = sorted(denied - ALL_CAPABILITIES)
        if unknown:
            raise ConfigError(
                f"WASM_DENIED_CAPABILITIES names unknown capabilities {unknown}; "
                f"known: {', '.join(sorted(ALL_CAPABILITIES))}"
            )
        return cls(
            fuel=env_int("WASM_FUEL_PER_CALL", cls.fuel, minimum=0, env=env),
            timeout_seconds=env_float(
                "WASM_CALL_TIMEOUT_SECONDS", cls.timeout_seconds, minimum=0.001, env=env
            ),
            memory_bytes=env_int("WASM_MEMORY_LIMIT_BYTES", cls.memory_bytes, minimum=64 * 1024, env=env),
            output_bytes=env_int("WASM_OUTPUT_LIMIT_BYTES", cls.output_bytes, minimum=1, env=env),
            intent_bytes=env_int("WASM_INTENT_LIMIT_BYTES", cls.intent_bytes, minimum=0, env=env),
            tick_seconds=env_float("WASM_EPOCH_TICK_SECONDS", cls.tick_seconds, minimum=0.001, env=env),
            denied=denied,
            pool_slots=env_int("WASM_POOL_SLOTS", cls.pool_slots, minimum=0, env=env),
            keep_resident_bytes=env_int(
                "WASM_KEEP_RESIDENT_BYTES", cls.keep_resident_bytes, minimum=0, env=env
            ),
            huge_pages=env_bool("WASM_HUGE_PAGES", cls.huge_pages, env=env),
        )
