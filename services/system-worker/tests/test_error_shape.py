"""A task's error in upstream's shape ``{kind, retryable, code, message}``: what rules read in
``output.error`` and what a failed command reports (a local HTTP server, no external network)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from noetl_common import CommandSpec, Rule, TaskSpec
from noetl_dev.testing import JsonHandler, local_http, url_of
from noetl_system_worker import PipelineRunner, default_registry
from noetl_system_worker._egress import EgressPolicy, parse_networks
from noetl_system_worker._runtime import ToolRuntime, current_runtime

LOOPBACK = EgressPolicy.configured(allow=parse_networks("127.0.0.0/8"))


class Status(JsonHandler):
    """``/<code>`` answers with that status and an empty JSON body."""

    def do_GET(self) -> None:
        code = int(self.path.strip("/"))
        self.send_json(code, {})


@pytest.fixture
def http_url() -> Iterator[str]:
    with local_http(Status, ThreadingHTTPServer) as server:
        yield url_of(server)


async def run(*tasks: TaskSpec, context: dict[str, Any] | None = None) -> Any:
    async def no_sleep(_delay: float) -> None:
        return None

    current_runtime.set(ToolRuntime(egress=LOOPBACK))
    runner = PipelineRunner(default_registry(), sleep=no_sleep)
    return await runner.run(CommandSpec(tasks=list(tasks), args={}, context=context or {}))


def py(name: str, code: str, rules: list[Rule] | None = None) -> TaskSpec:
    return TaskSpec(name=name, kind="python", config={"code": code}, rules=rules or [])


#: Records what the rules saw on each attempt in ``ctx.seen`` and retries what is retryable.
RETRY_RETRYABLE = [
    Rule(
        when="{{ output.status == 'error' and output.error.retryable }}",
        do="retry",
        attempts=3,
        set={"ctx.seen": "{{ output.error }}"},
    ),
    Rule(when="{{ output.status == 'error' }}", do="fail", set={"ctx.seen": "{{ output.error }}"}),
]


@pytest.mark.parametrize(
    ("status", "retryable", "runs"),
    [(503, True, 3), (429, True, 3), (500, True, 3), (404, False, 1), (401, False, 1)],
)
async def test_http_status_errors_carry_kind_retryable_code(
    http_url: str, status: int, retryable: bool, runs: int
) -> None:
    task = TaskSpec(name="fetch", kind="http", config={"url": f"{http_url}/{status}"}, rules=RETRY_RETRYABLE)

    out = await run(task)

    assert not out.ok and out.task_runs == runs
    seen = out.set["ctx.seen"]
    assert {k: seen[k] for k in ("kind", "retryable", "code", "status_code")} == {
        "kind": "tool_error",
        "retryable": retryable,
        "code": f"HTTP_{status}",
        "status_code": status,
    }
    assert out.error["kind"] == "tool_error" and out.error["retryable"] is retryable
    assert out.error["code"] == f"HTTP_{status}" and out.error["task"] == "fetch"


async def test_a_python_exception_is_a_tool_error_not_retryable() -> None:
    out = await run(py("boom", "raise KeyError('id')", RETRY_RETRYABLE))

    assert not out.ok and out.task_runs == 1
    assert out.error == {
        "message": "'id'",
        "type": "KeyError",
        "task": "boom",
        "kind": "tool_error",
        "retryable": False,
        "code": None,
    }


async def test_a_result_with_status_error_and_error_fields_is_an_error() -> None:
    code = (
        "result = {'status': 'error', 'error_kind': 'rate_limit', 'retryable': _attempt < 2,"
        " 'code': 'QUOTA', 'error': 'slow down'}"
        " if _attempt < 3 else {'status': 'ok', 'n': _attempt}"
    )
    task = TaskSpec(
        name="call",
        kind="python",
        config={"code": code, "args": {"_attempt": "{{ _attempt }}"}},
        rules=RETRY_RETRYABLE,
    )

    out = await run(task)

    # attempt 1: retryable → retry; attempt 2: not retryable → the fail rule
    assert not out.ok and out.task_runs == 2
    assert out.error == {
        "message": "slow down",
        "type": "ToolResultError",
        "task": "call",
        "kind": "rate_limit",
        "retryable": False,
        "code": "QUOTA",
    }


async def test_a_plain_status_error_result_stays_data() -> None:
    out = await run(py("t", "result = {'status': 'error', 'detail': 'a value, not a failure'}"))

    assert out.ok and out.result == {"status": "error", "detail": "a value, not a failure"}


async def test_retries_exhausted_keep_the_last_errors_shape(http_url: str) -> None:
    rules = [Rule(when="{{ output.error.retryable }}", do="retry", attempts=2)]
    out = await run(TaskSpec(name="f", kind="http", config={"url": f"{http_url}/502"}, rules=rules))

    assert not out.ok and out.task_runs == 2
    assert out.error["message"].startswith("task 'f': retries exhausted after 2 attempt(s): HTTP 502")
    assert (out.error["kind"], out.error["retryable"], out.error["code"]) == ("tool_error", True, "HTTP_502")


async def test_pipeline_errors_are_config_or_logic() -> None:
    template = await run(TaskSpec(name="t", kind="python", config={"code": "result = 1", "x": "{{ 1 + }}"}))
    unknown = await run(TaskSpec(name="u", kind="nope", config={}))
    by_rule = await run(py("r", "result = 1", [Rule(when=None, do="fail")]))

    assert (template.error["kind"], template.error["retryable"]) == ("config", False)
    assert unknown.error["kind"] == "config" and unknown.error["type"] == "UnknownToolError"
    assert by_rule.error["kind"] == "logic" and by_rule.error["task"] == "r"


# -- output.select ---------------------------------------------------------------------------


async def test_output_select_picks_fields_beside_the_whole_result() -> None:
    code = "result = {'data': {'id': 7, 'items': [{'name': 'a'}, {'name': 'b'}], 'next': None}, 'long': 'x' * 600}"
    select = [
        "data.id",
        {"path": "$.data.items[1].name", "as": "second"},
        "data.items.0",
        "data.next",
        "nope.x",
        "long",
    ]
    seen = Rule(when=None, do="continue", set={"ctx.picked": "{{ output.data.second }}"})
    task = TaskSpec(
        name="t", kind="python", config={"code": code, "output": {"select": select}}, rules=[seen]
    )
    after = py("after", "result = {'id': prev['id'], 'inline': prev['_inline']['data']['id']}")
    after.config["args"] = {"prev": "{{ _prev }}"}

    out = await run(task, after)

    assert out.ok and out.set == {"ctx.picked": "b"} and out.result == {"id": 7, "inline": 7}


async def test_output_select_result_shape() -> None:
    code = "result = {'data': {'id': 7, 'items': [{'name': 'a'}]}, 'long': 'x' * 600}"
    select = ["data.id", {"path": "$.data.items[0].name", "as": "first"}, "data.items.0", "nope.x", "long"]

    out = await run(TaskSpec(name="t", kind="python", config={"code": code, "output": {"select": select}}))

    full = {"data": {"id": 7, "items": [{"name": "a"}]}, "long": "x" * 600}
    assert out.result == {
        "id": 7,
        "first": "a",
        "0": {"name": "a"},
        "long": "x" * 500 + "...",
        "_inline": full,
    }


async def test_http_output_select_keeps_output_http_on_the_response(http_url: str) -> None:
    rules = [Rule(when=None, do="continue", set={"ctx.status": "{{ output.http.status }}"})]
    config = {"url": f"{http_url}/200", "output": {"select": ["status_code"], "store": {"kind": "kv"}}}

    out = await run(TaskSpec(name="f", kind="http", config=config, rules=rules))

    assert out.ok and out.set == {"ctx.status": 200}
    assert out.result["status_code"] == 200 and out.result["_inline"]["status_code"] == 200


async def test_an_output_that_is_no_mapping_stays_the_tools_key() -> None:
    from noetl_system_worker._output import output_block

    config: dict[str, Any] = {"output": "arrow-ipc"}
    assert output_block(config) is None and config == {"output": "arrow-ipc"}
