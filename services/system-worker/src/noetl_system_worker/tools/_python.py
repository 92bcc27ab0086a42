"""The ``python`` tool, with upstream NoETL's conventions (conformance C2; see ``sandbox/_task.py``).

Two ways to run it (``WORKER_PYTHON_ISOLATION``): ``process`` (the default) runs each task in
a confined child process of the sandbox that serves one playbook (:class:`SandboxedPython`); ``thread``
runs it in a thread of the worker with the worker's privileges (:func:`run_python`), for
trusted deployments and the benchmark's comparison. Trust model: ``docs/worker.md``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from .._runtime import runtime
from ..sandbox import SandboxError, SandboxPool, execute_python, import_libs, task_libs, task_source


class PythonToolError(Exception):
    """The task's code raised; ``type`` is the original exception's class name."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _guarded(code: str, inputs: Mapping[str, Any], modules: Mapping[str, Any]) -> tuple[bool, Any]:
    # BaseException: SystemExit or KeyboardInterrupt raised by task code must fail the
    # task, not end the worker thread silently.
    try:
        return True, execute_python(code, inputs, modules)
    except BaseException as exc:
        return False, exc


async def run_python(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """The ``python`` tool in a worker thread (``WORKER_PYTHON_ISOLATION=thread``).

    ``libs`` modules are globals too (not in ``input_data``); an input of the same name wins.
    """
    code = task_source(config)
    ok, value = await asyncio.to_thread(_guarded, code, args, import_libs(task_libs(config)))
    if ok:
        return value
    message = str(value) or type(value).__name__
    raise PythonToolError(message, type(value).__name__) from value


class SandboxedPython:
    """The ``python`` tool in a sandbox child (``WORKER_PYTHON_ISOLATION=process``).

    What the child printed and logged (bounded by it) comes back in its reply, whether the
    task succeeded or not, and joins the command's step log (``_step_logs``)."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
        code, libs = task_source(config), task_libs(config)
        try:
            # one playbook's tasks share a child: the playbook's author wrote all of them, and
            # every execution of it runs that author's code anyway
            rt = runtime()
            started = time.time()
            reply = await self.pool.run(code, args, libs, rt.catalog_path)
        except SandboxError as exc:
            raise PythonToolError(str(exc), exc.type_name) from None
        rt.step_log.add(reply.logs, reply.logs_dropped, since=started)
        if reply.ok:
            return reply.result
        raise PythonToolError(reply.error_message or reply.error_type, reply.error_type or "Exception")
