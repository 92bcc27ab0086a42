"""The WASM plug-in host (architecture.md §8): guest ABI v1, capability ring, limits, cache.

``PluginHost`` compiles and calls modules; ``ModuleCache`` keeps them compiled by
``(path, version, digest)``. The ``wasm`` tool that runs them for a task lives with the
other tools (``tools/_wasm.py``). Design and decisions: docs/wasm.md.
"""

from ._cache import Loaded, ModuleCache, PluginModule
from ._capabilities import (
    ALL_CAPABILITIES,
    STATUS_DENIED,
    STATUS_NO_MEMORY,
    STATUS_OK,
    STATUS_OUT_OF_BOUNDS,
    SYSTEM_CAPABILITIES,
    USER_CAPABILITIES,
    CapabilityError,
    parse_grants,
    pool_capabilities,
)
from ._host import (
    CallResult,
    Intent,
    PluginHost,
    WasmAbiError,
    WasmError,
    WasmLinkError,
    WasmMemoryLimit,
    WasmOutOfFuel,
    WasmOutputTooLarge,
    WasmTimeout,
    WasmTrap,
)
from ._limits import WasmLimits

__all__ = [
    "ALL_CAPABILITIES",
    "STATUS_DENIED",
    "STATUS_NO_MEMORY",
    "STATUS_OK",
    "STATUS_OUT_OF_BOUNDS",
    "SYSTEM_CAPABILITIES",
    "USER_CAPABILITIES",
    "CallResult",
    "CapabilityError",
    "Intent",
    "Loaded",
    "ModuleCache",
    "PluginHost",
    "PluginModule",
    "WasmAbiError",
    "WasmError",
    "WasmLimits",
    "WasmLinkError",
    "WasmMemoryLimit",
    "WasmOutOfFuel",
    "WasmOutputTooLarge",
    "WasmTimeout",
    "WasmTrap",
    "parse_grants",
    "pool_capabilities",
]
