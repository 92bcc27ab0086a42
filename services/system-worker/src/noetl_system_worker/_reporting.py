"""Reporting a command to the control-api: event POSTs retried until accepted, terminal
batches travelling together (``_batching``), and results too big for an event stored by
reference (architecture.md §5.6).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec
import structlog
from noetl_common import ApiError, ApiUnreachable, ClaimReply, EagerRequest, Event, EventsReply, StepLogs
from noetl_common.arrow_limits import check_table
from noetl_common.results import encode_result

from ._api import ControlPlane
from ._batching import TerminalBatcher
from ._config import WorkerConfig
from ._metrics import EVENT_POST_RETRIES
from ._pipeline import StepOutcome
from ._runtime import ToolRuntime

#: Backoff of a retried event POST: starts here, doubles, capped at the maximum.
POST_RETRY_INITIAL_SECONDS = 0.2
POST_RETRY_MAX_SECONDS = 10.0
#: Statuses that mean "not now, try later" (besides any 5xx).
_RETRY_LATER = frozenset({408, 425, 429})


class StaleAttemptError(Exception):
    """The control-api answered 409: another attempt owns this command now."""


class EventRejectedError(Exception):
    """The control-api refused an event for good (a 4xx other than 409)."""


class MintEvent(Protocol):
    """Makes one event of a claimed command, with a fresh event id and the claim's meta."""

    def __call__(self, event_type: str, status: str, context: dict[str, Any] | None = None, /) -> Event: ...


def retryable(exc: BaseException) -> bool:
    """True when a call that raised ``exc`` may succeed if tried again later."""
    if isinstance(exc, ApiError):
        return exc.status_code in _RETRY_LATER or exc.status_code >= 500
    return isinstance(exc, ApiUnreachable | OSError | asyncio.TimeoutError)


def jsonable(value: Any) -> Any:
    """Task results are arbitrary Python; events must be JSON. Unknown types become str."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=str))


def failure_events(event: MintEvent, error: dict[str, Any]) -> list[Event]:
    """The terminal batch of a failed command: ``call.error`` then ``command.failed``."""
    error = jsonable(error)
    return [
        event("call.error", "FAILED", {"error": error}),
        event("command.failed", "FAILED", {"error": error}),
    ]


class Reporter:
    """Sends a worker's events: one :class:`TerminalBatcher` per control-api, retried POSTs."""

    def __init__(self, config: WorkerConfig, log: structlog.typing.FilteringBoundLogger) -> None:
        self._config = config
        self._log = log
        self._batchers: dict[int, TerminalBatcher] = {}  # by id() of the client: clients live on

    async def post(
        self,
        api: ControlPlane,
        events: list[Event],
        log: structlog.typing.FilteringBoundLogger,
        eager: EagerRequest | None = None,
        logs: list[StepLogs] | None = None,
    ) -> EventsReply:
        """POST events (with the step logs of their commands) until accepted; retries reuse
        the same event ids (idempotent)."""
        delay = POST_RETRY_INITIAL_SECONDS
        while True:
            try:
                if logs:
                    return await api.post_events(events, eager, logs)
                if eager is None:
                    return await api.post_events(events)
                return await api.post_events(events, eager)
            except ApiError as exc:
                if exc.status_code == 409:
                    raise StaleAttemptError(str(exc)) from exc
                if not retryable(exc):
                    raise EventRejectedError(str(exc)) from exc
                wait = exc.retry_after if exc.retry_after is not None else delay
                error = str(exc)
            except Exception as exc:
                if not retryable(exc):
                    raise
                wait, error = delay, repr(exc)
            EVENT_POST_RETRIES.labels(self._config.pool).inc()
            log.warning(
                "event_post_failed",
                error=error,
                retry_in=wait,
                events=[e.event_type for e in events],
            )
            await asyncio.sleep(wait)  # backoff between retries
            delay = min(delay * 2, POST_RETRY_MAX_SECONDS)

    async def submit_terminal(
        self, api: ControlPlane, events: list[Event], *, eager: bool, logs: StepLogs | None = None
    ) -> ClaimReply | None:
        """Send one command's terminal batch (and its step log), with those of commands
        finishing meanwhile; returns the command eager dispatch handed over, if any."""
        return await self._batcher(api).submit(events, eager=eager, logs=logs)

    def _batcher(self, api: ControlPlane) -> TerminalBatcher:
        """The terminal-event batcher of one control-api (see ``_batching``)."""
        batcher = self._batchers.get(id(api))
        if batcher is None:

            async def post(
                events: list[Event], eager: EagerRequest | None, logs: list[StepLogs]
            ) -> EventsReply:
                return await self.post(api, events, self._log, eager, logs)

            batcher = self._batchers[id(api)] = TerminalBatcher(
                post,
                worker_id=self._config.worker_id,
                pool=self._config.pool,
                max_batch=self._config.event_batch_max,
            )
        return batcher

    async def aclose(self) -> None:
        """Stop every batcher; terminal batches still queued are not sent."""
        for batcher in self._batchers.values():
            await batcher.aclose()

    async def completed_context(
        self, api: ControlPlane, execution_id: int, outcome: StepOutcome, runtime: ToolRuntime
    ) -> dict[str, Any]:
        """``{result, set?}`` with secrets redacted; while the context is too big for an event,
        its largest piece (the result, or one ``set`` value) is stored (architecture.md §5.6) and
        the event carries the reference instead (tabular → Arrow IPC)."""
        value = outcome.result
        if type(value).__module__.startswith("pyarrow") and hasattr(value, "to_pylist"):
            # a pyarrow Table: rows (stored again as Arrow when big), once it is known to fit
            check_table(value, self._config.arrow_limits)
            value = value.to_pylist()
        context: dict[str, Any] = {"result": runtime.redact(jsonable(value))}
        # iter.* writes are the pipeline's own; the orchestrator ignores them, so they stay here
        patch = {k: v for k, v in outcome.set.items() if not k.startswith("iter.")}
        if patch:
            context["set"] = runtime.redact(jsonable(patch))
        stored: set[tuple[str, str | None]] = set()
        while len(msgspec.json.encode(context)) > self._config.result_inline_max_bytes:
            pieces = [(("result", None), context["result"])]
            pieces += [(("set", k), v) for k, v in context.get("set", {}).items()]
            sizes = [(len(msgspec.json.encode(v)), where, v) for where, v in pieces if where not in stored]
            if not sizes:
                break  # everything is a reference already; the API will say what is too big
            _, where, piece = max(sizes, key=lambda item: item[0])
            data, media_type = encode_result(piece)
            ref = await api.put_result(execution_id, data, media_type)
            if where[1] is None:
                context["result"] = ref
            else:
                context["set"][where[1]] = ref
            stored.add(where)
        return context
