"""The python tool's sandbox: tasks run in confined child processes, one playbook's each.

A zygote process (a clean interpreter with an allow-listed environment) forks children
ahead of time; each serves the tasks of one playbook under resource limits, its own pid
namespace and an unprivileged uid (when the worker is root) and Landlock (where the kernel
has it), then exits. Worker and child exchange msgpack frames, never pickle. Trust model:
``docs/security.md`` §5 and ``docs/worker.md``.
"""

from ._capture import MAX_LINES
from ._confine import set_dumpable
from ._errors import SandboxError
from ._pool import DEFAULT_ENV_ALLOW, SandboxPool
from ._task import execute_python, import_libs, task_libs, task_source
from ._wire import LogLine, Reply, SandboxLimits

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "MAX_LINES",
    "LogLine",
    "Reply",
    "SandboxError",
    "SandboxLimits",
    "SandboxPool",
    "execute_python",
    "import_libs",
    "make_undumpable",
    "task_libs",
    "task_source",
]


def make_undumpable() -> bool:
    """Make this process non-dumpable (its environ and memory closed to same-uid processes).

    False when the kernel refused (not Linux)."""
    try:
        set_dumpable(False)
    except (OSError, AttributeError):
        return False
    return True
