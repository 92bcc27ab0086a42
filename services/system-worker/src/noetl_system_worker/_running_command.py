"""One claimed command on this worker, from its claim to the ack of its NATS message.

A message is acked only after its terminal event was accepted by the control-api
(architecture.md §5): until then ``msg.in_progress()`` keeps JetStream from redelivering it
and ``command.heartbeat`` events renew the claim's lease. ``command.started`` is minted
when the command starts but posted only once the tool has run for
:data:`STARTED_POST_DELAY_SECONDS`; a quicker tool sends it at the head of its terminal
batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from nats.aio.msg import Msg
from noetl_common import ApiError, ClaimReply, CommandSpec, Event, EventsReply, utc_now_iso

from ._api import ControlPlane
from ._config import WorkerConfig
from ._errors import pipeline_error
from ._metrics import count_command
from ._pipeline import PipelineRunner, StepOutcome
from ._reporting import EventRejectedError, Reporter, StaleAttemptError, failure_events
from ._runtime import ToolRuntime, current_runtime
from ._step_logs import StepLog
from .tools import CommandScope, current_command

#: Redelivery delay of a message whose terminal event the control-api refused for good.
DEFAULT_NAK_DELAY_SECONDS = 2.0
#: A tool still running after this long has its command.started posted on its own; a quicker
#: one sends it in its terminal batch (the claim's lease covers the command meanwhile).
STARTED_POST_DELAY_SECONDS = 0.05


class Delivery:
    """The NATS message behind a running command, settled (acked or nak'd) once.

    An eager command (handed over in the reply to the previous command's terminal event)
    starts with no message; its own notification, when this worker fetches it meanwhile,
    is attached here so it is kept in progress and acked after the terminal event, like
    any other (ack-after-terminal holds for it too).
    """

    def __init__(self, msg: Msg | None) -> None:
        self.msg = msg
        self.settled = False
        #: the command's terminal event was accepted by the control-api: it is finished
        self.finished = False

    async def in_progress(self) -> None:
        """Hold off JetStream's redelivery, while the message is not settled."""
        if self.msg is not None and not self.settled:
            await self.msg.in_progress()

    async def ack(self, *, sync: bool = False) -> None:
        """Settle for good; ``sync`` waits for the server to confirm."""
        self.settled = True
        if self.msg is not None:
            await (self.msg.ack_sync() if sync else self.msg.ack())

    async def nak(self, delay: float) -> None:
        """Settle by asking for redelivery in ``delay`` seconds."""
        self.settled = True
        if self.msg is not None:
            await self.msg.nak(delay=delay)


async def keep_in_progress(
    msg: Msg | Delivery, interval: float, log: structlog.typing.FilteringBoundLogger
) -> None:
    """Tell JetStream every ``interval`` that the message is still being worked on."""
    while True:
        await asyncio.sleep(interval)
        try:
            await msg.in_progress()
        except Exception as exc:
            log.warning("command_in_progress_failed", error=repr(exc))


def _stop_on_stale(task: asyncio.Task[EventsReply], lease_lost: asyncio.Event) -> None:
    """A ``command.started`` refused as stale: abandon the pipeline it runs beside."""
    if not task.cancelled() and isinstance(task.exception(), StaleAttemptError):
        lease_lost.set()


class RunningCommand:
    """Runs one claimed command and reports it: keep-alives and lease renewal, the deferred
    ``command.started``, the pipeline, the terminal batch, then the ack (or nak)."""

    def __init__(
        self,
        claim: ClaimReply,
        api: ControlPlane,
        delivery: Delivery,
        *,
        config: WorkerConfig,
        runner: PipelineRunner,
        reporter: Reporter,
        log: structlog.typing.FilteringBoundLogger,
        accepting: Callable[[], bool],
    ) -> None:
        self.claim = claim
        self.delivery = delivery
        self._api = api
        self._config = config
        self._runner = runner
        self._reporter = reporter
        self._log = log
        #: whether the worker still takes new work (no eager command once it is stopping)
        self._accepting = accepting
        self._meta = {"attempt": claim.attempt, "command_id": claim.command_id}
        self._lease_lost = asyncio.Event()

    def _event(self, event_type: str, status: str, context: dict[str, Any] | None = None) -> Event:
        # event_id is minted once per event, so a retried POST of the same object is idempotent.
        return Event(
            execution_id=self.claim.execution_id,
            event_type=event_type,
            event_id=self._config.snowflake.next_id(),
            step=self.claim.step,
            status=status,
            created_at=utc_now_iso(),
            context=context,
            worker_id=self._config.worker_id,
            meta=self._meta,
        )

    async def run(self) -> ClaimReply | None:
        """Run the command and report it; returns the next command when the control-api
        handed one over (eager dispatch)."""
        claim, api, log, event, lease_lost = self.claim, self._api, self._log, self._event, self._lease_lost
        keepalive = [
            asyncio.create_task(keep_in_progress(self.delivery, self._config.heartbeat_interval, log)),
            asyncio.create_task(self._heartbeat_events()),
        ]
        # command.started is minted now but posted only once the tool has run for
        # STARTED_POST_DELAY_SECONDS: a quick tool sends it at the head of its terminal batch
        # (one round trip per step, not two); a slow one has it posted while it runs, and the
        # terminal batch waits for that POST. Either way the API records started first.
        started_event = event("command.started", "RUNNING", {"tool_kind": claim.tool_kind})
        posting = asyncio.Event()

        async def post_started() -> EventsReply:
            await asyncio.sleep(STARTED_POST_DELAY_SECONDS)
            posting.set()
            return await self._reporter.post(api, [started_event], log)

        started = asyncio.create_task(post_started())
        started.add_done_callback(lambda task: _stop_on_stale(task, lease_lost))
        try:
            # tools that report through the API (the wasm tool's intents) find the command here
            scope = current_command.set(CommandScope(api, claim.execution_id, claim.step, event))
            # credentials, keychain and secret redaction for this command's tools
            runtime = self._runtime()
            runtime_token = current_runtime.set(runtime)
            try:
                outcome = await self._run_pipeline(claim.command, claim.step)
            finally:
                current_runtime.reset(runtime_token)
                current_command.reset(scope)
            leading: list[Event] = []
            if posting.is_set():
                await started  # raises StaleAttemptError / EventRejectedError as the awaited POST did
            else:
                started.cancel()
                leading.append(started_event)
            if outcome is None:
                raise StaleAttemptError("lease lost while the pipeline ran")
            context: dict[str, Any] | None = None
            if outcome.ok:
                try:
                    context = await self._reporter.completed_context(
                        api, claim.execution_id, outcome, runtime
                    )
                except Exception as exc:  # refused (e.g. 413 over the API's body limit) or unreachable
                    message = f"the result store refused the result: {exc}"
                    error = pipeline_error(message, "ResultStoreError", None, kind="storage")
                    outcome = StepOutcome("failed", error=error, task_runs=outcome.task_runs)
            if context is not None:
                terminal = [
                    *leading,
                    event("call.done", "COMPLETED", {"result": context["result"]}),
                    event("command.completed", "COMPLETED", context),
                ]
            else:
                terminal = leading + failure_events(event, runtime.redact(outcome.error or {}))
            after: ClaimReply | None = None
            try:
                # no eager command once stopping: the worker is draining, not taking new work;
                # sent together with the terminal batches of commands finishing meanwhile
                wanted = self._config.eager_dispatch and self._accepting()
                # the step's output travels in the same POST (no round trip of its own), scrubbed
                # with every secret the command resolved
                logs = runtime.step_log.wire(claim.command_id, runtime.scrub_text)
                after = await self._reporter.submit_terminal(api, terminal, eager=wanted, logs=logs)
            except EventRejectedError as exc:
                if not outcome.ok:
                    raise
                # The result itself was refused (e.g. too large): report the step as failed
                # rather than leaving the command to be redelivered and rerun.
                message = f"control-api refused the result: {exc}"
                error = pipeline_error(message, "EventRejected", None, kind="storage")
                await self._reporter.post(api, leading + failure_events(event, error), log)
                outcome = StepOutcome("failed", error=error)
            self.delivery.finished = True
            try:
                # with a next command in hand, do not wait for the ack's round trip
                await self.delivery.ack(sync=after is None)
            except Exception as exc:
                # The command is recorded; a redelivery will meet a 409 at claim and be dropped.
                log.warning("command_ack_failed", error=repr(exc), terminal_event="accepted")
            count_command(self._config.pool, outcome.status)
            log.info("command_finished", status=outcome.status, task_runs=outcome.task_runs)
            return after
        except StaleAttemptError as exc:
            log.warning("command_attempt_stale", outcome="dropped", reason=str(exc))
            await self.delivery.ack()
            count_command(self._config.pool, "stale_attempt")
        except EventRejectedError as exc:
            log.error("terminal_event_rejected", outcome="redelivery_requested", error=str(exc))
            await self.delivery.nak(DEFAULT_NAK_DELAY_SECONDS)
            count_command(self._config.pool, "rejected")
        finally:
            for task in (*keepalive, started):
                task.cancel()
            await asyncio.gather(*keepalive, started, return_exceptions=True)
        return None

    def _runtime(self) -> ToolRuntime:
        claim, config = self.claim, self._config
        return ToolRuntime(
            api=self._api,
            execution_id=claim.execution_id,
            event_id=claim.event_id,
            worker_id=config.worker_id,
            catalog_path=claim.catalog_path,
            keychain_env_vars=config.keychain_env_vars,
            nats_url=config.nats_url,
            nats_user=config.nats_user,
            nats_password=config.nats_password,
            egress=config.http_egress,
            duckdb_directories=config.duckdb_directories,
            step_log=StepLog(config.python.limits.log_max_bytes),
        )

    async def _run_pipeline(self, spec: CommandSpec, step: str) -> StepOutcome | None:
        """Run the pipeline; None when the lease was lost meanwhile (the run is abandoned)."""
        run = asyncio.ensure_future(self._runner.run(spec, step))
        lost = asyncio.ensure_future(self._lease_lost.wait())
        try:
            done, _ = await asyncio.wait(
                {run, lost}, timeout=spec.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if run in done:
                return run.result()
            if lost in done:
                return None
            message = f"command timed out after {spec.timeout_seconds:g} s"
            return StepOutcome("failed", error=pipeline_error(message, "TimeoutError", None, kind="timeout"))
        finally:
            for fut in (run, lost):
                fut.cancel()
            await asyncio.gather(run, lost, return_exceptions=True)

    async def _heartbeat_events(self) -> None:
        """Renew the claim's lease with ``command.heartbeat`` events; a 409 means it is lost."""
        # A server with a lease shorter than our interval still gets ~3 renewals per lease.
        interval = min(self._config.heartbeat_interval, max(0.05, self.claim.lease_seconds / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await self._api.post_events([self._event("command.heartbeat", "RUNNING")])
            except ApiError as exc:
                if exc.status_code == 409:
                    self._lease_lost.set()
                    return
                self._log.warning("command_heartbeat_failed", error=str(exc))
            except Exception as exc:
                self._log.warning("command_heartbeat_failed", error=repr(exc))
