"""Poison messages (architecture.md §5.7): a notification that is undecodable, on its last
allowed delivery, or naming a command whose claim the API refuses as invalid, is not run.
Its command is failed through the control-api, the message is copied to ``NOETL_DLQ`` and
terminated.

Failing the command is retried (the message kept in progress) for as long as the API is
unreachable: an outage must not leave a dead-lettered command open. Only a stop request cuts
it short; the copy in the DLQ then says the failure is unreported.
"""

from __future__ import annotations

import asyncio

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from noetl_common import ApiError, dlq_subject, wait_or_stop

from ._api import ApiFor
from ._config import WorkerConfig
from ._metrics import count_command
from ._reporting import POST_RETRY_INITIAL_SECONDS, POST_RETRY_MAX_SECONDS, retryable
from ._running_command import keep_in_progress

#: Headers of a message parked in NOETL_DLQ (the projector uses the same names).
HEADER_ORIGINAL_SUBJECT = "Noetl-Original-Subject"
HEADER_ERROR = "Noetl-Error"
HEADER_REASON = "Noetl-Reason"


def event_id_of(data: bytes) -> tuple[int, str | None] | None:
    """The claim key of a notification that did not decode as a whole, when it still names one."""
    try:
        raw = msgspec.json.decode(data)
    except Exception:
        return None
    if not isinstance(raw, dict):
        return None
    event_id = raw.get("event_id")
    if isinstance(event_id, str) and event_id.isdigit():
        event_id = int(event_id)
    if isinstance(event_id, bool) or not isinstance(event_id, int) or not 0 < event_id < 2**63:
        return None
    return event_id, None  # its server_url is not trusted: the default API is asked


class DeadLetters:
    """Parks poison messages of one worker; ``js`` is set once the worker is connected, and
    ``stop`` (the worker's stop request) ends the retries of an unreachable API."""

    def __init__(
        self,
        config: WorkerConfig,
        api_for: ApiFor,
        log: structlog.typing.FilteringBoundLogger,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._config = config
        self._api_for = api_for
        self._log = log
        self._stop = stop or asyncio.Event()
        self.js: JetStreamContext | None = None

    async def park(
        self,
        msg: Msg,
        error: str,
        reason: str,
        command: tuple[int, str | None] | None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        """Fail the command through the API, copy ``msg`` to NOETL_DLQ, terminate it.

        ``command`` is ``(event_id, server_url)`` when known. A command that had finished
        meanwhile is just acked: nothing is lost, nothing to park.
        """
        log = log or self._log
        failed = "unknown command"
        if command is not None:
            keepalive = asyncio.create_task(keep_in_progress(msg, self._config.heartbeat_interval, log))
            try:
                failed = await self._fail_command(command[0], command[1], error, log)
            finally:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
            if failed == "finished":
                log.info("dead_letter_skipped", reason=reason, command="finished", outcome="acked")
                await msg.ack()
                count_command(self._config.pool, "conflict")
                return
        headers = {
            HEADER_ORIGINAL_SUBJECT: msg.subject,
            HEADER_ERROR: " ".join(error.split())[:1000],
            HEADER_REASON: reason,
        }
        try:
            seq = msg.metadata.sequence.stream
            headers["Nats-Msg-Id"] = f"NOETL_COMMANDS:{seq}"  # dedup a second parking of the same message
        except Exception:
            seq = None
        try:
            assert self.js is not None
            await self.js.publish(dlq_subject(msg.subject), msg.data, headers=headers)
        except Exception as exc:
            # the command is failed (or unknown); losing the copy must not loop the message
            log.error("dead_letter_publish_failed", subject=msg.subject, error=repr(exc))
        await msg.term()
        count_command(self._config.pool, "dead_lettered")
        log.error(
            "command_dead_lettered",
            subject=msg.subject,
            seq=seq,
            reason=reason,
            error=error,
            command=failed,
        )

    async def _fail_command(
        self, event_id: int, server_url: str | None, error: str, log: structlog.typing.FilteringBoundLogger
    ) -> str:
        """``failed`` | ``finished`` | why it could not be reported (retried with backoff while
        the API is unreachable, until it answers or the worker stops)."""
        api = self._api_for(server_url)
        delay = POST_RETRY_INITIAL_SECONDS
        while True:
            try:
                reply = await api.fail_command(event_id, error, self._config.worker_id)
                return "failed" if reply.get("failed") else "finished"
            except ApiError as exc:
                if exc.status_code == 404:
                    return "unknown command"
                if not retryable(exc):
                    log.error("command_fail_refused", error=str(exc))
                    return f"refused: {exc}"
                wait = exc.retry_after if exc.retry_after is not None else delay
                last = str(exc)
            except Exception as exc:
                wait, last = delay, repr(exc)
            log.warning("command_fail_post_failed", error=last, retry_in=wait)
            if await wait_or_stop(self._stop, wait):
                log.error("command_fail_unreported", error=last, reason="stopping")
                return f"unreported: {last}"
            delay = min(delay * 2, POST_RETRY_MAX_SECONDS)
