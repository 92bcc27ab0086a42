"""TaskError: the wire shape ``{message, type?, task?}`` and the lenient reading of recorded errors."""

from __future__ import annotations

import msgspec
from noetl_common import TaskError


def test_the_wire_shape_is_message_type_task() -> None:
    error = TaskError(message="boom", kind="TimeoutError", task="fetch")
    assert error.to_json() == {"message": "boom", "type": "TimeoutError", "task": "fetch"}
    assert TaskError(message="gone", kind="DeadLettered").to_json() == {
        "message": "gone",
        "type": "DeadLettered",
    }
    assert msgspec.json.decode(msgspec.json.encode(error), type=TaskError) == error


def test_parse_reads_what_workers_recorded() -> None:
    assert TaskError.parse({"message": "x", "type": "E", "task": "t", "extra": 1}) == TaskError(
        message="x", kind="E", task="t"
    )
    assert TaskError.parse({}) == TaskError()
    assert TaskError.parse({"type": "", "task": None}) == TaskError()


def test_parse_never_refuses_a_recorded_error() -> None:
    assert TaskError.parse("plain text") == TaskError(message="plain text")
    assert TaskError.parse(42) == TaskError(message="42")
    assert TaskError.parse({"message": None, "type": 7}) == TaskError(message="None", kind="7")


def test_upstream_error_shape_travels_as_kind_retryable_code() -> None:
    error = TaskError(
        message="HTTP 503", kind="HttpStatusError", category="tool_error", retryable=True, code="HTTP_503"
    )
    wire = error.to_json()
    assert wire == {
        "message": "HTTP 503",
        "type": "HttpStatusError",
        "kind": "tool_error",
        "retryable": True,
        "code": "HTTP_503",
    }
    assert TaskError.parse(wire) == error
    assert msgspec.json.decode(msgspec.json.encode(error), type=TaskError) == error


def test_scope_always_has_kind_retryable_code() -> None:
    assert TaskError(message="old").scope() == {
        "message": "old",
        "kind": "unknown",
        "retryable": False,
        "code": None,
    }
    assert TaskError.parse({"retryable": "yes", "code": ""}) == TaskError()
    assert TaskError.parse({"retryable": False, "code": 429}).scope()["code"] == "429"
