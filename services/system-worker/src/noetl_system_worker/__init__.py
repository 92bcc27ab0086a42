"""JetStream pull worker that claims commands and runs their tool pipelines.

The same package serves the ``shared``, ``python`` and ``system`` pools; the pool is
configuration (``WORKER_POOL_NAME``).
"""

from ._api import ClientPool, ControlPlane
from ._config import WorkerConfig
from ._pipeline import PipelineRunner, StepOutcome, backoff_delay
from ._python_tool import PythonToolError, SandboxedPython, run_python
from ._tools import Tool, ToolRegistry, UnknownToolError, run_noop
from ._worker import Worker
from .sandbox import SandboxError, SandboxLimits, SandboxPool, execute_python

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
    "ToolRegistry",
    "UnknownToolError",
    "Worker",
    "WorkerConfig",
    "backoff_delay",
    "execute_python",
    "run_noop",
    "run_python",
]
