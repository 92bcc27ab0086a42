"""``noetl execute --watch``: follow an execution's event stream and show its steps.

The stream is ``GET /api/executions/{id}/stream`` (Server-Sent Events, resumable with
``Last-Event-ID``: a dropped connection is reopened where it stopped). On a terminal the
view is live (one line per step, redrawn in place); otherwise one plain line per change,
which suits logs and pipes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from ._api import Api, CliError

TERMINAL_EVENTS = {
    "playbook.completed": "COMPLETED",
    "playbook.failed": "FAILED",
    "playbook.cancelled": "CANCELLED",
}
#: reconnect attempts in a row before giving up on the stream
MAX_RECONNECTS = 5


def stream_events(
    api: Api, execution_id: int | str, deadline: float, after: int = 0
) -> Iterator[dict[str, Any]]:
    """The execution's events from the SSE stream until its terminal event (or ``deadline``).

    Raises :class:`TimeoutError` at ``deadline``; reconnects after a dropped connection."""
    last = after
    failures = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        headers = {**api.auth_headers, "Accept": "text/event-stream"}
        if last:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(10.0, read=min(remaining, 60.0))
        try:
            with httpx.stream(
                "GET", f"{api.server}/api/executions/{execution_id}/stream", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 300:
                    response.read()
                    raise CliError(
                        f"HTTP {response.status_code}: {response.text[:300]}", response.status_code
                    )
                data: list[str] = []
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line == "" and data:
                        event = json.loads("\n".join(data))
                        data = []
                        failures = 0
                        last = int(event["event_id"])
                        yield event
                        if event.get("event_type") in TERMINAL_EVENTS:
                            return
                    if time.monotonic() >= deadline:
                        raise TimeoutError
            # the server closed the stream: it ends only after the terminal event, so resume
        except httpx.ReadTimeout:
            continue
        except httpx.TransportError as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise CliError(f"lost the event stream of execution {execution_id}: {exc}") from None
            time.sleep(min(2.0, 0.1 * 2**failures))


@dataclass
class StepLine:
    """What the view knows about one step."""

    name: str
    state: str = "waiting"
    started: int = 0
    finished: int = 0
    failed: int = 0
    first_seen: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    error: str | None = None

    def render(self) -> str:
        counts = f" {self.finished}/{self.started}" if self.started > 1 else ""
        took = f" {self.ended_at - self.first_seen:.2f}s" if self.ended_at is not None else ""
        error = f"  {self.error}" if self.error else ""
        return f"{_MARK.get(self.state, '?')} {self.name:<32} {self.state}{counts}{took}{error}"


_MARK = {"running": "…", "completed": "✓", "failed": "✗", "skipped": "-", "entered": "·", "waiting": " "}


class Watcher:
    """Turns events into step lines: live (redrawn) on a TTY, plain lines otherwise."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out = out
        self.live = live
        self.steps: dict[str, StepLine] = {}
        self._drawn = 0
        self.status: str | None = None
        self.error: str | None = None

    def _step(self, name: str) -> StepLine:
        if name not in self.steps:
            self.steps[name] = StepLine(name)
        return self.steps[name]

    def feed(self, event: dict[str, Any]) -> None:
        kind, name = str(event.get("event_type")), event.get("step")
        context = event.get("context") or {}
        line: StepLine | None = None
        if kind == "step.enter" and name:
            line = self._step(name)
            line.state = "skipped" if event.get("status") == "SKIPPED" else "entered"
            if line.state == "entered" and line.started:
                line = None  # another loop iteration or run: the command events tell
        elif kind == "command.started" and name:
            line = self._step(name)
            line.started += 1
            line.state = "running"
        elif kind == "command.completed" and name:
            line = self._step(name)
            line.finished += 1
            line.state = "completed" if line.finished >= line.started else "running"
            line.ended_at = time.monotonic()
        elif kind == "command.failed" and name:
            line = self._step(name)
            line.failed += 1
            line.state = "failed"
            line.ended_at = time.monotonic()
            error = context.get("error")
            line.error = str(error.get("message") if isinstance(error, dict) else error)[:200]
        elif kind in TERMINAL_EVENTS:
            self.status = TERMINAL_EVENTS[kind]
            error = context.get("error") or context.get("reason")
            self.error = None if error is None else str(error)[:500]
        if line is not None:
            self._show(line)

    def _show(self, line: StepLine) -> None:
        if not self.live:
            self.out.write(f"{time.strftime('%H:%M:%S')} {line.render()}\n")
            self.out.flush()
            return
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the first step line, clear below
        for step in self.steps.values():
            self.out.write(step.render() + "\n")
        self._drawn = len(self.steps)
        self.out.flush()


def watch(api: Api, execution_id: int | str, out: TextIO, *, live: bool, timeout: float) -> dict[str, Any]:
    """Show the execution's steps until it ends; return its final view (``GET /api/executions/{id}``).

    Raises :class:`TimeoutError` when it has not ended within ``timeout`` seconds."""
    watcher = Watcher(out, live)
    for event in stream_events(api, execution_id, time.monotonic() + timeout):
        watcher.feed(event)
    final = api.execution(execution_id)
    status = final.get("status")
    error = f": {final.get('error')}" if final.get("error") else ""
    out.write(f"{status} execution {execution_id}{error}\n")
    out.flush()
    return final
