"""How a sandboxed python task failed, in words the step error can carry."""

from __future__ import annotations

import os
import signal

from ._wire import Exited, SandboxLimits
from ._zygote import EXIT_UNCONFINED


class SandboxError(Exception):
    """A python task the sandbox ended (killed, crashed, over a limit); ``type_name`` for the step error."""

    def __init__(self, message: str, type_name: str = "SandboxError") -> None:
        super().__init__(message)
        self.type_name = type_name


def describe_exit(exited: Exited | None, limits: SandboxLimits) -> SandboxError:
    """The task error for a child that ended without answering."""
    if exited is None:
        return SandboxError("python task's sandbox process ended without an answer")
    status = exited.status
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        if code == EXIT_UNCONFINED:
            return SandboxError(
                "python task's sandbox process could not confine itself; the task did not run"
            )
        return SandboxError(f"python task exited with code {code} before it answered")
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    if signum in (signal.SIGXCPU, signal.SIGKILL) and exited.cpu_seconds >= limits.cpu_seconds:
        return SandboxError(
            f"python task used its {limits.cpu_seconds} CPU seconds (WORKER_PYTHON_CPU_SECONDS)",
            "TimeoutError",
        )
    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    if signum == signal.SIGKILL:
        return SandboxError(
            "python task's process was killed (SIGKILL): out of memory "
            f"(WORKER_PYTHON_MEMORY_BYTES is {limits.memory_bytes}) or killed from outside"
        )
    return SandboxError(f"python task's process crashed ({name})")
