"""The ``system_cleanup`` tool: run the control-api's retention policy (system pool only).

It calls ``POST /api/internal/cleanup/purge {"policy": true}`` with this worker's own client:
the server it reaches is the one this command came from (``NOETL_SERVER_URL`` or an allowed
``server_url``), never a URL from the task or the payload, and the ages come from the
control-api's retention settings, never from the caller. A ``system_*`` kind runs only in a
``system/`` playbook, on the system pool, whose token alone may purge (docs/security.md). The
only input it takes is ``limit``, which can only make a sweep smaller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._runtime import runtime
from ._base import ToolError

MAX_LIMIT = 1_000_000


async def run_system_cleanup(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """One retention sweep; the reply's counts are the result."""
    body: dict[str, Any] = {"policy": True}
    if config.get("limit") is not None:
        limit = config["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"system_cleanup: limit must be an integer within 1..{MAX_LIMIT}")
        body["limit"] = limit
    request = getattr(runtime().api, "request", None)
    if request is None:
        raise ToolError("system_cleanup: this worker has no control-api")
    return await request("POST", "/api/internal/cleanup/purge", body, dict)
