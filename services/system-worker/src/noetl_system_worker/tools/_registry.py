"""The tool registry: ``kind → tool`` and ``kind → outcome.<kind> helper``, and the tools this
worker ships (:func:`default_registry`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from ._base import Helper, Tool, UnknownToolError
from ._duckdb import duckdb_helper, run_duckdb
from ._http import http_helper, run_http
from ._nats import nats_helper, run_nats
from ._noop import run_noop
from ._playbook import playbook_helper, run_playbook
from ._postgres import postgres_helper, run_postgres
from ._python import SandboxedPython, run_python
from ._secrets import run_secrets, secrets_helper
from ._system_cleanup import run_system_cleanup
from ._wasm import WasmTool

if TYPE_CHECKING:
    from .._config import WorkerConfig
    from ..sandbox import SandboxPool
    from ..wasm import ModuleCache


class ToolRegistry:
    """Maps a task ``kind`` to the coroutine that runs it."""

    def __init__(self, tools: Mapping[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = dict(tools or {})
        self._helpers: dict[str, Helper] = {}

    def register(self, kind: str, tool: Tool, helper: Helper | None = None) -> None:
        """Add or replace the tool for ``kind`` (and its ``outcome.<kind>`` helper)."""
        self._tools[kind] = tool
        if helper is not None:
            self._helpers[kind] = helper
        else:
            self._helpers.pop(kind, None)

    def helper(self, kind: str) -> Helper | None:
        """The ``outcome.<kind>`` helper of ``kind``, if it has one."""
        return self._helpers.get(kind)

    def get(self, kind: str) -> Tool:
        """The tool for ``kind``; UnknownToolError naming the kind when there is none."""
        try:
            return self._tools[kind]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(f"unknown tool kind {kind!r} (this worker runs: {known})") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._tools

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tools))


def default_registry(
    config: WorkerConfig | None = None,
    *,
    sandbox: SandboxPool | None = None,
    plugins: ModuleCache | None = None,
) -> ToolRegistry:
    """The tools this worker ships: python, noop, http, postgres, duckdb, nats, secrets,
    playbook, system_cleanup, and wasm when there is a plug-in cache.

    ``python`` runs in a confined child of ``sandbox`` when one is given
    (``WORKER_PYTHON_ISOLATION=process``), else in a worker thread. ``wasm`` calls the
    modules ``plugins`` keeps compiled, within ``config``'s Arrow limits.
    """
    registry = ToolRegistry(
        {"python": SandboxedPython(sandbox) if sandbox is not None else run_python, "noop": run_noop}
    )
    registry.register("http", run_http, http_helper)
    registry.register("postgres", run_postgres, postgres_helper)
    registry.register("duckdb", run_duckdb, duckdb_helper)
    registry.register("nats", run_nats, nats_helper)
    registry.register("secrets", run_secrets, secrets_helper)
    registry.register("playbook", run_playbook, playbook_helper)
    registry.register("system_cleanup", run_system_cleanup)
    if plugins is not None:
        pool = config.pool if config is not None else plugins.pool
        limits = config.arrow_limits if config is not None else None
        registry.register("wasm", WasmTool(plugins, pool=pool, arrow_limits=limits))
    return registry
