"""``GET /api/executions/{id}/logs``: what an execution's python steps printed and logged."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ..application import LogPage, StepLogService, client_id
from ._auth import action


class StepLogController(Controller):
    """Step logs, a page at a time (docs/contracts.md)."""

    tags = ["executions"]

    @get("/api/executions/{execution_id:str}/logs", opt=action("execution.read"))
    async def logs(
        self,
        execution_id: FromPath[str],
        step_logs: NamedDependency[StepLogService],
        step: FromQuery[str | None] = None,
        after: FromQuery[int] = 0,
        limit: FromQuery[int] = 1000,
    ) -> LogPage:
        """Lines with ``seq > after`` (of ``step`` only, when given), oldest first, at most
        ``limit`` (1..5000); follow with ``after`` = the last ``seq`` seen. ``next_after`` is
        null when no more lines exist now. Role: whoever may read the execution."""
        return await step_logs.page(client_id(execution_id, "execution_id"), step=step, after=after, limit=limit)
