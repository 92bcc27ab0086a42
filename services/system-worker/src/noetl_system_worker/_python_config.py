"""The python tool's settings (``WORKER_PYTHON_*``, ``WORKER_SANDBOX_*``): isolation and limits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from noetl_common import ConfigError, env_float, env_int, env_opt, env_str

from .sandbox import DEFAULT_ENV_ALLOW, SandboxLimits

ISOLATIONS = ("process", "thread")
#: Imported once by the zygote, so a task that uses them pays no import.
DEFAULT_PRELOAD = (
    "base64", "collections", "copy", "csv", "dataclasses", "datetime", "decimal", "functools",
    "hashlib", "hmac", "io", "itertools", "json", "math", "operator", "random", "re", "statistics",
    "string", "textwrap", "time", "typing", "urllib.parse", "uuid", "zoneinfo",
    # the worker's own libraries a task is likeliest to import: each fresh child would pay
    # 50-100 ms of CPU for them, and an execution's first task always runs in a fresh one
    "psycopg", "pyarrow",
)  # fmt: skip
#: Prefixes of the suite's own settings, which a task must never be handed.
_SUITE_PREFIXES = ("NOETL_", "NATS_", "WORKER_", "WASM_")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _names(raw: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return default
    return tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))


@dataclass(frozen=True, kw_only=True)
class PythonSettings:
    """How python tasks run: ``isolation`` and, for ``process``, the sandbox's pool and limits."""

    isolation: str = "process"
    warm: int = 2
    #: children kept idle for their playbook's next task (0: one child per task)
    keep: int = 8
    keep_seconds: float = 30.0
    timeout_seconds: float = 3600.0
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    limits: SandboxLimits = field(default_factory=lambda: SandboxLimits(preload=DEFAULT_PRELOAD))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PythonSettings:
        """Parse and validate; a bad value raises ConfigError naming the variable."""
        isolation = env_str("WORKER_PYTHON_ISOLATION", "process", env=env).strip().lower()
        if isolation not in ISOLATIONS:
            raise ConfigError(f"WORKER_PYTHON_ISOLATION must be process or thread, got {isolation!r}")
        allow = _names(env_opt("WORKER_PYTHON_ENV_ALLOW", env=env), DEFAULT_ENV_ALLOW)
        for name in allow:
            if not _NAME.fullmatch(name):
                raise ConfigError(f"WORKER_PYTHON_ENV_ALLOW holds an invalid variable name {name!r}")
            if name.startswith(_SUITE_PREFIXES):
                raise ConfigError(
                    f"WORKER_PYTHON_ENV_ALLOW may not pass the suite's own setting {name!r} to tasks; "
                    "give a task a value through NOETL_KEYCHAIN_ENV_VARS and the secrets tool"
                )
        preload = _names(env_opt("WORKER_PYTHON_PRELOAD", env=env), DEFAULT_PRELOAD)
        for module in preload:
            if not _MODULE.fullmatch(module):
                raise ConfigError(f"WORKER_PYTHON_PRELOAD holds an invalid module name {module!r}")
        limits = SandboxLimits(
            cpu_seconds=env_int("WORKER_PYTHON_CPU_SECONDS", 600, minimum=1, env=env),
            memory_bytes=env_int("WORKER_PYTHON_MEMORY_BYTES", 2 * 1024**3, minimum=64 * 1024**2, env=env),
            max_open_files=env_int("WORKER_PYTHON_MAX_OPEN_FILES", 256, minimum=16, maximum=1 << 20, env=env),
            file_max_bytes=env_int("WORKER_PYTHON_FILE_MAX_BYTES", 256 * 1024**2, minimum=0, env=env),
            max_processes=env_int("WORKER_PYTHON_MAX_PROCESSES", 256, minimum=1, env=env),
            output_max_bytes=env_int(
                "WORKER_PYTHON_OUTPUT_MAX_BYTES", 16 * 1024**2, minimum=1024, maximum=1024**3, env=env
            ),
            log_max_bytes=env_int(
                "WORKER_STEP_LOG_MAX_BYTES", 64 * 1024, minimum=1024, maximum=1024**2, env=env
            ),
            uid=env_int("WORKER_SANDBOX_UID", 61000, minimum=1, maximum=2**31 - 2, env=env),
            gid=env_int("WORKER_SANDBOX_GID", 61000, minimum=1, maximum=2**31 - 2, env=env),
            preload=preload,
        )
        return cls(
            isolation=isolation,
            warm=env_int("WORKER_PYTHON_WARM", 2, minimum=0, maximum=256, env=env),
            keep=env_int("WORKER_PYTHON_KEEP", 8, minimum=0, maximum=1024, env=env),
            keep_seconds=env_float("WORKER_PYTHON_KEEP_SECONDS", 30.0, minimum=0.1, env=env),
            timeout_seconds=env_float("WORKER_PYTHON_TIMEOUT_SECONDS", 3600.0, minimum=0.1, env=env),
            env_allow=allow,
            limits=limits,
        )
