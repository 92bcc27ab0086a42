"""How a step fails: the exception that ends a decision, and the message a failed task leaves."""

from __future__ import annotations

from noetl_common import TaskError


class StepFailure(Exception):
    """Ends the current decision: the step failed, and with it the playbook."""

    def __init__(self, step: str | None, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


def failure_message(step: str, iteration: int | None, error: TaskError | None) -> str:
    """``step 'a' iteration 2 failed (task 'fetch'): TimeoutError: ...``: the execution's error."""
    error = error or TaskError()
    where = f"step {step!r}" + (f" iteration {iteration}" if iteration is not None else "")
    task = f" (task {error.task!r})" if error.task else ""
    kind = f"{error.kind}: " if error.kind else ""
    message = error.message if error.message is not None else "no error message"
    return f"{where} failed{task}: {kind}{message}"
