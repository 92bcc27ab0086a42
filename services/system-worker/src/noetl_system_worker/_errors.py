"""A task's error in upstream NoETL's shape: ``{kind, retryable, code, message}`` (plus ``type``
and ``task``), as rules read it in ``output.error`` and routing reads it in ``error``.

Read from upstream's task sequence executor: a tool that raised or returned an error is a
``tool_error``; an HTTP status error carries ``code: HTTP_<status>`` and is retryable on 429
and 5xx only; a tool result ``{status: error}`` with ``error_kind`` / ``retryable`` / ``code``
is an error with those fields. Errors of the pipeline itself (a template, an unknown kind, a
jump target) are ``config``; a rule's ``fail`` without an error and a runaway cycle ``logic``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tools import PythonToolError, ToolError

TOOL_ERROR = "tool_error"
#: Keys that make a tool result ``{status: error, ...}`` an error outcome rather than data.
_RESULT_ERROR_KEYS = ("error_kind", "retryable", "code")


def pipeline_error(
    message: str,
    type_name: str,
    task: str | None,
    *,
    kind: str,
    retryable: bool = False,
    code: str | None = None,
) -> dict[str, Any]:
    """An error of the pipeline or a tool, in the shape rules and routing read."""
    error: dict[str, Any] = {
        "message": message,
        "type": type_name,
        "kind": kind,
        "retryable": retryable,
        "code": code,
    }
    if task is not None:
        error["task"] = task
    return error


def _status_code(result: Any) -> int | None:
    """The HTTP status of a tool result (``status_code``, else ``data.status_code``)."""
    if not isinstance(result, Mapping):
        return None
    raw = result.get("status_code")
    data = result.get("data")
    if raw is None and isinstance(data, Mapping):
        raw = data.get("status_code") or data.get("status")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    return None


def _http_fields(status: int | None) -> dict[str, Any]:
    """``retryable`` and ``code`` upstream infers from an HTTP status (429 and 5xx retry)."""
    if status is None:
        return {"retryable": False, "code": None}
    return {"retryable": status == 429 or status >= 500, "code": f"HTTP_{status}", "status_code": status}


def exception_error(exc: BaseException, task: str | None) -> dict[str, Any]:
    """The error of a tool that raised ``exc``."""
    type_name = exc.type_name if isinstance(exc, PythonToolError | ToolError) else type(exc).__name__
    error = pipeline_error(str(exc) or type_name, type_name, task, kind=TOOL_ERROR)
    if isinstance(exc, ToolError):
        error.update(_http_fields(_status_code(exc.result)))
    return error


def result_error(value: Any) -> dict[str, Any] | None:
    """The error a tool *returned*: ``{status: error}`` with ``error_kind``, ``retryable`` or
    ``code``; None for any other result (a plain ``status: error`` stays data, as it always was)."""
    if not isinstance(value, Mapping) or value.get("status") != "error":
        return None
    if not any(key in value for key in _RESULT_ERROR_KEYS):
        return None
    status = _status_code(value)
    fields = _http_fields(status)
    if value.get("retryable") is not None:
        fields["retryable"] = bool(value["retryable"])
    if value.get("code") is not None:
        fields["code"] = str(value["code"])
    message = value.get("error") or value.get("message") or "Tool returned error status"
    kind = value.get("error_kind") or TOOL_ERROR
    error = pipeline_error(str(message), "ToolResultError", None, kind=str(kind))
    error.update(fields)
    return error
