"""JetStream pull worker that claims commands and runs their tool pipelines.

The same package serves the ``shared``, ``python`` and ``system`` pools; the pool is
configuration (``WORKER_POOL_NAME``).
"""

from ._api import ClientPool, ControlPlane
from ._config import WorkerConfig
from ._pipeline import PipelineRunner, StepOutcome, backoff_delay
from ._worker import Worker
from .sandbox import SandboxError, SandboxLimits, SandboxPool, execute_python
from .tools import (
    PythonToolError,
    SandboxedPython,
    Tool,
    ToolError,
    ToolRegistry,
    UnknownToolError,
    default_registry,
    run_noop,
    run_python,
)

__all__ = [
    "ClientPool",
    "ControlPlane",
    "PipelineRunner",
    "PythonToolError",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "SandboxedPython",
    "StepOutcome",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "UnknownToolError",
    "Worker",
    "WorkerConfig",
    "backoff_delay",
    "default_registry",
    "execute_python",
    "run_noop",
    "run_python",
]
