"""The worker's tools: the shape every tool has, the registry, and one module per kind.

``_base`` holds the :class:`Tool` call shape, :class:`ToolError` and the command a tool
runs for; ``_registry`` maps kinds to tools and builds the shipped set
(:func:`default_registry`). Each tool module exposes ``run_<kind>(config, args, ctx)`` (or
a callable class) and, where rules benefit, ``<kind>_helper(result)`` for ``outcome.<kind>.*``.
"""

from ._base import CommandScope, Helper, Tool, ToolError, UnknownToolError, current_command
from ._duckdb import duckdb_helper, run_duckdb
from ._http import HttpStatusError, http_helper, run_http
from ._keychain import keychain_names, keychain_values
from ._nats import nats_helper, run_nats
from ._noop import run_noop
from ._playbook import playbook_helper, run_playbook
from ._postgres import postgres_helper, run_postgres
from ._python import PythonToolError, SandboxedPython, run_python
from ._registry import ToolRegistry, default_registry
from ._secrets import run_secrets, secrets_helper
from ._system_cleanup import run_system_cleanup
from ._wasm import WasmConfigError, WasmTool, decode_output, encode_input

__all__ = [
    "CommandScope",
    "Helper",
    "HttpStatusError",
    "PythonToolError",
    "SandboxedPython",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "UnknownToolError",
    "WasmConfigError",
    "WasmTool",
    "current_command",
    "decode_output",
    "default_registry",
    "duckdb_helper",
    "encode_input",
    "http_helper",
    "keychain_names",
    "keychain_values",
    "nats_helper",
    "playbook_helper",
    "postgres_helper",
    "run_duckdb",
    "run_http",
    "run_nats",
    "run_noop",
    "run_playbook",
    "run_postgres",
    "run_python",
    "run_secrets",
    "run_system_cleanup",
    "secrets_helper",
]
