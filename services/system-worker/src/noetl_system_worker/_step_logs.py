"""Step logs: what a command's python tasks printed and logged, sent with its terminal events.

Each sandboxed task answers with its lines (already bounded by its child, see
``sandbox/_capture.py``); they are collected here as the tasks end, as the child reported
them: a hostile child may lie about anything, so streams, levels and times are checked and
the lines kept are bounded again. When the command ends, :meth:`StepLog.wire` scrubs them
with the command's secrets, bounds them to ``WORKER_STEP_LOG_MAX_BYTES`` (whole lines, the
first that fit) and ends them with a marker line when anything was dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from noetl_common import StepLogLine, StepLogs

from .sandbox import MAX_LINES, LogLine

#: The default of ``WORKER_STEP_LOG_MAX_BYTES``.
DEFAULT_LOG_MAX_BYTES = 64 * 1024
_STREAMS = frozenset({"stdout", "stderr", "log"})
_Stream = Literal["stdout", "stderr", "log"]


@dataclass(frozen=True)
class _Line:
    task: int
    stream: str
    level: str | None
    at: float
    text: str


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class StepLog:
    """The output lines of one command attempt (all of its python tasks, in order)."""

    def __init__(self, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lines: list[_Line] = []
        self._bytes = 0
        self._tasks = 0
        self.dropped_bytes = 0

    def add(self, lines: Sequence[LogLine], dropped_bytes: int, *, since: float) -> None:
        """One task's lines and the bytes its child dropped; ``since``: when the task started."""
        self._tasks += 1
        now = time.time()
        self.dropped_bytes += max(0, int(dropped_bytes))
        for line in lines:
            # Postgres text holds no NUL character: shown, as the CLI shows control characters
            text = line.text.replace("\x00", "\\x00")
            size = len(text.encode("utf-8", "replace"))
            if self._bytes + size > self.max_bytes or len(self._lines) >= MAX_LINES:
                self.dropped_bytes += size
                continue
            stream = line.stream if line.stream in _STREAMS else "stdout"
            level = line.level[:16] if stream == "log" and isinstance(line.level, str) else None
            at = line.at if isinstance(line.at, float) and since <= line.at <= now else now
            self._lines.append(_Line(self._tasks, stream, level, at, text))
            self._bytes += size

    def _scrubbed(self, scrub: Callable[[str], str]) -> list[_Line]:
        """The lines with ``scrub`` applied to each run of lines of one task and stream, joined:
        a secret spanning lines (a PEM key printed whole) is recognised as a whole."""
        out: list[_Line] = []
        i = 0
        while i < len(self._lines):
            first = self._lines[i]
            j = i + 1
            key = (first.task, first.stream, first.level)
            while (
                j < len(self._lines)
                and (self._lines[j].task, self._lines[j].stream, self._lines[j].level) == key
            ):
                j += 1
            run = self._lines[i:j]
            texts = scrub("\n".join(line.text for line in run)).split("\n")
            for k, text in enumerate(texts):
                # fewer lines when a redacted secret spanned some: each keeps a time of its run
                out.append(_Line(first.task, first.stream, first.level, run[min(k, len(run) - 1)].at, text))
            i = j
        return out

    def wire(self, command_id: int, scrub: Callable[[str], str]) -> StepLogs | None:
        """The scrubbed, bounded lines to send; None when the command printed nothing."""
        if not self._lines and not self.dropped_bytes:
            return None
        kept: list[StepLogLine] = []
        size, dropped, full = 0, self.dropped_bytes, False
        for line in self._scrubbed(scrub):
            cost = len(line.text.encode("utf-8", "replace"))
            # redaction may lengthen the text: the first line that no longer fits ends what is kept
            full = full or size + cost > self.max_bytes or len(kept) >= MAX_LINES
            if full:
                dropped += cost
                continue
            size += cost
            stream = cast(_Stream, line.stream)
            kept.append(StepLogLine(stream=stream, at=_iso(line.at), text=line.text, level=line.level))
        if dropped:
            kept.append(
                StepLogLine(
                    stream="log",
                    level="WARNING",
                    at=_iso(time.time()),
                    text=f"[{dropped} more bytes of output dropped: over WORKER_STEP_LOG_MAX_BYTES"
                    f"={self.max_bytes}]",
                    truncated=True,
                )
            )
        return StepLogs(command_id=command_id, lines=kept)
