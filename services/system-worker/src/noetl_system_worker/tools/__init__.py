"""The worker's built-in tools besides ``python`` and ``noop``; one module per kind.

Each module exposes ``run_<kind>(config, args, ctx)`` and, where rules benefit,
``<kind>_helper(result)`` for ``outcome.<kind>.*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._duckdb import duckdb_helper, run_duckdb
from ._http import HttpStatusError, http_helper, run_http
from ._nats import nats_helper, run_nats
from ._playbook import playbook_helper, run_playbook
from ._postgres import postgres_helper, run_postgres
from ._secrets import run_secrets, secrets_helper
from ._system_cleanup import run_system_cleanup

if TYPE_CHECKING:
    from .._tools import ToolRegistry


def register_builtin(registry: ToolRegistry) -> None:
    """Add http, postgres, duckdb, nats, secrets, playbook and system_cleanup to ``registry``."""
    registry.register("http", run_http, http_helper)
    registry.register("postgres", run_postgres, postgres_helper)
    registry.register("duckdb", run_duckdb, duckdb_helper)
    registry.register("nats", run_nats, nats_helper)
    registry.register("secrets", run_secrets, secrets_helper)
    registry.register("playbook", run_playbook, playbook_helper)
    registry.register("system_cleanup", run_system_cleanup)


__all__ = [
    "HttpStatusError",
    "duckdb_helper",
    "http_helper",
    "nats_helper",
    "playbook_helper",
    "postgres_helper",
    "register_builtin",
    "run_duckdb",
    "run_http",
    "run_nats",
    "run_playbook",
    "run_postgres",
    "run_secrets",
    "run_system_cleanup",
    "secrets_helper",
]
