"""http pagination (upstream's ``retry`` with ``next_call`` / ``collect``) against a local paged
server in this test: pages follow each other inside one task, bounded in pages and bytes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from noetl_common import CommandSpec, Rule, TaskSpec
from noetl_dev.testing import JsonHandler, local_http, url_of
from noetl_system_worker import PipelineRunner, default_registry
from noetl_system_worker._egress import EgressPolicy, parse_networks
from noetl_system_worker._runtime import ToolRuntime, current_runtime
from noetl_system_worker.tools import _http_pages

LOOPBACK = EgressPolicy.configured(allow=parse_networks("127.0.0.0/8"))


class Paged(JsonHandler):
    """``/items?page=N&size=S`` (3 pages of 2 items; ``/fail`` answers 503 on page 2);
    ``/cursor[/<n>]`` links each page to the next by URL until 3."""

    calls: Counter[str] = Counter()

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        page = int(query.get("page", "1"))
        self.calls[url.path] += 1
        if url.path.startswith("/cursor"):
            n = int(url.path.rsplit("/", 1)[1]) if url.path.count("/") > 1 else 1
            base = f"http://{self.headers['Host']}/cursor"
            body: Any = {"n": n, "meta": {"seen": n}, "next": f"{base}/{n + 1}" if n < 3 else None}
        else:
            body = {
                "data": [{"id": (page - 1) * 2 + i} for i in range(2)],
                "paging": {"page": page, "hasMore": page < 3, "token": self.headers.get("X-Token")},
            }
        code = 503 if url.path == "/fail" and page == 2 else 200
        self.send_json(code, body)


@pytest.fixture
def base() -> Iterator[str]:
    Paged.calls.clear()
    with local_http(Paged, ThreadingHTTPServer) as server:
        yield url_of(server)


async def run(
    config: dict[str, Any], rules: list[Rule] | None = None, context: dict[str, Any] | None = None
) -> Any:
    current_runtime.set(ToolRuntime(egress=LOOPBACK))
    task = TaskSpec(name="fetch", kind="http", config=config, rules=rules or [])
    return await PipelineRunner(default_registry()).run(
        CommandSpec(tasks=[task], args={}, context=context or {})
    )


def paged(then: dict[str, Any], when: str = "{{ response.paging.hasMore }}") -> list[dict[str, Any]]:
    return [{"when": "{{ error.status >= 500 }}", "then": {"max_attempts": 3}}, {"when": when, "then": then}]


async def test_pages_are_fetched_and_collected_inside_one_task(base: str) -> None:
    then = {
        "max_attempts": 10,
        "next_call": {
            "params": {"page": "{{ response.paging.page + 1 }}"},
            "headers": {"X-Token": "t{{ _retry.index }}"},
        },
        "collect": {"strategy": "append", "path": "data", "into": "pages"},
    }
    rules = [Rule(when=None, do="continue", set={"ctx.pages": "{{ output.data.meta.iterations }}"})]

    out = await run({"url": f"{base}/items", "params": {"page": 1}, "retry": paged(then)}, rules, {"ctx": {}})

    assert out.ok, out.error
    assert out.result["data"] == [{"id": i} for i in range(6)]
    assert out.result["meta"] == {
        "iterations": 3,
        "collect_strategy": "append",
        "status_codes": [200, 200, 200],
    }
    assert out.result["status"] == "success" and out.result["status_code"] == 200
    assert out.set == {"ctx.pages": 3} and Paged.calls["/items"] == 3


async def test_max_attempts_bounds_the_pages(base: str) -> None:
    then = {
        "max_attempts": 2,
        "next_call": {"params": {"page": "{{ page.paging.page + 1 }}"}},
        "collect": {"path": "data"},
    }

    out = await run({"url": f"{base}/items", "retry": paged(then, "{{ true }}")})

    assert out.ok and out.result["meta"]["iterations"] == 2 and Paged.calls["/items"] == 2
    assert [row["id"] for row in out.result["data"]] == [0, 1, 2, 3]


async def test_bodies_over_the_byte_bound_fail_the_task(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http_pages, "MAX_TOTAL_BYTES", 150)
    then = {"next_call": {"params": {"page": "{{ response.paging.page + 1 }}"}}, "collect": {"path": "data"}}

    out = await run({"url": f"{base}/items", "retry": paged(then)})

    assert not out.ok and "pages over 150 bytes" in out.error["message"] and Paged.calls["/items"] == 2
    assert out.error["kind"] == "tool_error"


async def test_next_call_url_and_the_merge_and_replace_strategies(base: str) -> None:
    merge = {"next_call": {"url": "{{ response.next }}"}, "collect": {"strategy": "merge", "path": "meta"}}
    replace = {**merge, "collect": {"strategy": "replace", "path": "n"}}

    merged = await run({"url": f"{base}/cursor", "retry": paged(merge, "{{ response.next is not none }}")})
    replaced = await run({"url": f"{base}/cursor", "retry": paged(replace, "{{ response.next }}")})

    assert merged.ok and merged.result["data"] == {"seen": 3} and merged.result["meta"]["iterations"] == 3
    assert replaced.ok and replaced.result["data"] == 3


async def test_a_page_answering_an_error_ends_the_task_with_that_error(base: str) -> None:
    then = {"next_call": {"params": {"page": "{{ response.paging.page + 1 }}"}}, "collect": {"path": "data"}}

    out = await run({"url": f"{base}/fail", "retry": paged(then)})

    assert not out.ok and out.error["code"] == "HTTP_503" and out.error["retryable"] is True
    assert Paged.calls["/fail"] == 2


async def test_without_a_pagination_policy_retry_is_left_to_the_rules(base: str) -> None:
    out = await run({"url": f"{base}/items", "retry": [{"when": "{{ true }}", "then": {"max_attempts": 3}}]})

    assert out.ok and out.result["body"]["paging"]["page"] == 1 and Paged.calls["/items"] == 1


async def test_a_bad_pagination_policy_is_a_tool_error(base: str) -> None:
    out = await run({"url": f"{base}/items", "retry": paged({"max_attempts": 5000, "collect": {}})})

    assert not out.ok and "max_attempts" in out.error["message"] and Paged.calls["/items"] == 0


async def test_next_call_headers_are_rendered_per_page(base: str) -> None:
    then = {
        "next_call": {
            "params": {"page": "{{ response.paging.page + 1 }}"},
            "headers": {"X-Token": "t{{ _retry.index }}"},
        },
        "collect": {"path": "paging.token"},
    }

    out = await run({"url": f"{base}/items", "headers": {"X-Token": "first"}, "retry": paged(then)})

    assert out.ok and out.result["data"] == ["first", "t1", "t2"]
