"""The ``playbook`` tool: run a catalog playbook as a child execution, waiting for it or not.

Config: ``path`` (catalog path, required), ``version`` (optional), ``return_step``
(optional), ``wait`` (optional). The task's rendered ``args`` / ``input`` are the child's
payload.

Without ``return_step`` (and without ``wait: true``) the child is started and left to run, as
upstream NoETL does: the task's result is at once ``{status: started, execution_id, path,
async: true}`` and the parent never learns how the child ends. With ``return_step``, or
``wait: true`` to wait for the child's final result, the task waits, as follows.

The task starts the child through the public ``POST /api/execute`` with
``parent_execution_id`` set to the running execution, so the link is recorded in the
child's ``playbook.started`` event and in ``noetl.execution``. It then waits for the
child's terminal state (``GET /api/executions/{id}?wait=``, a read the API holds until the
child ends; the command's lease is kept alive meanwhile like any long task, and the step
``timeout`` bounds the wait). A COMPLETED child gives the result of its ``return_step`` when set
(else the child's final result); a FAILED or CANCELLED child fails the task with the
child's error, naming the child execution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from .._runtime import runtime
from ._base import ToolError

#: Terminal execution statuses, as ``GET /api/executions/{id}`` reports them.
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: How long one status read is held by the API while the child runs (``?wait=``).
WAIT_SECONDS = 25.0
#: Pause between two reads that came back RUNNING: from the first to the cap, doubling.
POLL_FIRST_SECONDS = 0.05
POLL_CAP_SECONDS = 1.0


async def run_playbook(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Start the child execution; wait for it and return its ``return_step`` (or final) result,
    or, without ``return_step`` and ``wait``, return at once what was started."""
    path = config.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError("playbook tool: set 'path' (the child's catalog path)")
    rt = runtime()
    api = rt.api
    request = getattr(api, "request", None)
    if request is None:
        raise ToolError("playbook tool: this worker has no control-api to start a child execution")
    body: dict[str, Any] = {"path": path, "payload": dict(args)}
    if config.get("version") is not None:
        body["version"] = config["version"]
    if rt.execution_id is not None:
        body["parent_execution_id"] = str(rt.execution_id)
    started = await request("POST", "/api/execute", body, dict)
    child_id = str(started["execution_id"])
    return_step = config.get("return_step")
    if not return_step and config.get("wait") is not True:
        return {"status": "started", "execution_id": child_id, "path": path, "async": True}
    delay = POLL_FIRST_SECONDS
    while True:
        # held by the API until the child ends or the wait runs out (then asked again)
        current = await request(
            "GET", f"/api/executions/{child_id}?wait={WAIT_SECONDS:g}", None, dict, timeout=WAIT_SECONDS + 10
        )
        if current is not None and current.get("status") in TERMINAL:
            break
        await asyncio.sleep(delay)  # a server that answered RUNNING at once is not asked in a hot loop
        delay = min(POLL_CAP_SECONDS, delay * 2)
    status = current["status"]
    if status != "COMPLETED":
        error = current.get("error")
        raise ToolError(
            f"child execution {child_id} ({path}) ended {status}: {error}",
            result={"execution_id": child_id, "status": status, "error": error},
            type_name="ChildExecutionFailed",
        )
    results = current.get("results") or {}
    if isinstance(return_step, str) and return_step:
        if return_step not in results:
            raise ToolError(
                f"child execution {child_id} ({path}) completed without running return_step {return_step!r}",
                result={"execution_id": child_id, "status": status},
                type_name="ReturnStepMissing",
            )
        return results[return_step]
    return current.get("result")


def playbook_helper(result: Any) -> dict[str, Any]:
    """``outcome.playbook``: the child's ``execution_id`` and ``status`` when the task failed."""
    found = result if isinstance(result, Mapping) else {}
    return {"execution_id": found.get("execution_id"), "status": found.get("status")}
