"""Which event loop a service runs on: uvloop unless ``NOETL_EVENT_LOOP=asyncio``.

The services are CPU-bound on small machines and spend much of it in the loop's own
select/callback machinery around psycopg, nats and httpx I/O; uvloop (libuv) does that
part in C. Measured in docs/performance.md ("Event loop"). ``asyncio`` is the operator's
way back to the stock loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from ._config import ConfigError, env_str

EVENT_LOOPS = ("uvloop", "asyncio")


def event_loop_name(env: Mapping[str, str] | None = None) -> str:
    """``NOETL_EVENT_LOOP``: ``uvloop`` (default) or ``asyncio``; anything else is a ConfigError."""
    value = env_str("NOETL_EVENT_LOOP", "uvloop", env=env).lower()
    if value not in EVENT_LOOPS:
        raise ConfigError(f"NOETL_EVENT_LOOP must be uvloop or asyncio, got {value!r}")
    return value


def event_loop_factory(env: Mapping[str, str] | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """The ``loop_factory`` for ``asyncio.Runner`` that ``NOETL_EVENT_LOOP`` selects."""
    if event_loop_name(env) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop
