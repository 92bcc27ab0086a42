"""The ``noop`` tool: hands its inputs on (a placeholder step, a join)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def run_noop(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """The ``noop`` tool: returns its inputs, or None when it has none."""
    return args or None
