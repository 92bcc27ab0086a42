"""The capability ring: which host imports a plug-in may be linked with (architecture.md §8).

Deny by default: a plug-in is linked with exactly the imports its step grants
(``capabilities``); any other import of module ``noetl`` fails at instantiate. Which
grants a pool honours follows the ADR's privilege split between the user ring and the
system ring (docs/wasm.md):

| capability      | user pools (shared, python) | system pool |
|-----------------|-----------------------------|-------------|
| event_publish   | yes                         | yes         |
| result_put      | yes                         | yes         |
| object_put      | no (returns 3, denied)      | yes         |

A granted capability the pool may not honour (or that the operator revoked with
``WASM_DENIED_CAPABILITIES``) is still linked, so the module instantiates, but every call
returns status 3: the plug-in can degrade instead of failing to load.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Host import module name of ABI v1.
IMPORT_MODULE = "noetl"
#: Every host import of ABI v1.
ALL_CAPABILITIES = frozenset({"event_publish", "result_put", "object_put"})
#: What a user pool honours; the control-api's register-time validator uses the same set.
USER_CAPABILITIES = frozenset({"event_publish", "result_put"})
#: What the system pool honours.
SYSTEM_CAPABILITIES = ALL_CAPABILITIES

#: Host call status codes (guest ABI v1).
STATUS_OK = 0
STATUS_NO_MEMORY = 1
STATUS_OUT_OF_BOUNDS = 2
STATUS_DENIED = 3


class CapabilityError(ValueError):
    """A step asked for a capability that ABI v1 does not have."""


def pool_capabilities(pool: str) -> frozenset[str]:
    """The capabilities a worker of ``pool`` honours."""
    return SYSTEM_CAPABILITIES if pool == "system" else USER_CAPABILITIES


def parse_grants(raw: Iterable[object] | None) -> frozenset[str]:
    """A step's ``capabilities`` list as a set; CapabilityError names an unknown one."""
    grants = frozenset(str(item) for item in (raw or ()))
    unknown = sorted(grants - ALL_CAPABILITIES)
    if unknown:
        raise CapabilityError(
            f"unknown capabilities {unknown}; ABI v1 has {', '.join(sorted(ALL_CAPABILITIES))}"
        )
    return grants
