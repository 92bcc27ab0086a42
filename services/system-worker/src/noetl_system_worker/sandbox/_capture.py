"""What a python task prints and logs, captured line by line within a byte budget.

``sys.stdout``, ``sys.stderr`` and the root logger of a sandboxed child write here while a
task runs. Output is cut to lines; the first lines that fit in ``max_bytes`` (UTF-8) and
:data:`MAX_LINES` are kept whole, and from the first one that does not fit on everything is
dropped and only counted. A line is never cut: a part of a secret left at a cut could not be
recognised and redacted later by the worker. Stdlib and msgspec only (the zygote imports it).
"""

from __future__ import annotations

import io
import logging
import sys
import time

from ._wire import LogLine

#: Most lines one task keeps (each is a row of the execution's log).
MAX_LINES = 10_000
STREAMS = ("stdout", "stderr", "log")


class TaskOutput:
    """The lines of one task, in the order they were completed, and how much was dropped."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.lines: list[LogLine] = []
        self.kept_bytes = 0
        self.dropped_bytes = 0
        self.full = False

    def add(self, stream: str, text: str, level: str | None = None) -> None:
        """Keep one whole line, or count it as dropped once the budget is spent."""
        data = text.encode("utf-8", "backslashreplace")  # a lone surrogate could not be sent
        size = len(data)
        if not self.full and (self.kept_bytes + size > self.max_bytes or len(self.lines) >= MAX_LINES):
            self.full = True
        if self.full:
            self.dropped_bytes += size
            return
        self.kept_bytes += size
        self.lines.append(LogLine(stream, time.time(), data.decode("utf-8"), level))


class StreamCapture(io.TextIOBase):
    """A ``sys.stdout`` / ``sys.stderr`` that hands complete lines to a :class:`TaskOutput`.

    The pending (unterminated) part is bounded too: past the budget it is dropped, not kept."""

    def __init__(self, output: TaskOutput, stream: str) -> None:
        self._output = output
        self._stream = stream
        self._pending: list[str] = []
        self._pending_chars = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        parts = text.split("\n")
        for done in parts[:-1]:
            self._pending.append(done)
            self._emit()
        tail = parts[-1]
        if tail:
            if self._pending_chars + len(tail) > self._output.max_bytes:
                # longer than the whole budget: it cannot be kept whole, so it is dropped
                self._output.full = True
            self._pending.append(tail)
            self._pending_chars += len(tail)
            if self._output.full:
                self._emit()
        return len(text)

    def _emit(self) -> None:
        line = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self._output.add(self._stream, line)

    def close_line(self) -> None:
        """The task ended: an unterminated last line is a line too."""
        if self._pending:
            self._emit()


class LogCapture(logging.Handler):
    """The root logger's handler while a task runs: each record a ``log`` line with its level."""

    def __init__(self, output: TaskOutput) -> None:
        super().__init__(logging.DEBUG)
        self.output = output
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        for line in text.split("\n"):
            self.output.add("log", line, record.levelname[:16])


class Captured:
    """Everything one task prints or logs: install, run the task, then :meth:`finish`."""

    def __init__(self, max_bytes: int) -> None:
        self.output = TaskOutput(max_bytes)
        self.stdout = StreamCapture(self.output, "stdout")
        self.stderr = StreamCapture(self.output, "stderr")
        self.handler = LogCapture(self.output)

    def install(self) -> None:
        sys.stdout, sys.stderr = self.stdout, self.stderr
        root = logging.getLogger()
        # a task that ran before in this process may have changed them: each starts the same
        root.handlers = [self.handler]
        root.setLevel(logging.INFO)
        logging.disable(logging.NOTSET)

    def finish(self) -> tuple[list[LogLine], int]:
        """Restore the process's streams; the lines kept and the bytes dropped."""
        self.stdout.close_line()
        self.stderr.close_line()
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        logging.getLogger().handlers = []
        return self.output.lines, self.output.dropped_bytes
