"""HTTP pagination inside one task: upstream's ``retry`` policy with ``next_call`` / ``collect``.

Read from upstream's ``core/runtime/retry.py``. ``retry`` is a list of ``{when, then}``; the
first policy whose ``then`` has ``next_call`` or ``collect`` drives the pages::

    retry:
      - when: "{{ response.paging.hasMore }}"
        then:
          max_attempts: 10                      # pages at most (upstream's default 100)
          next_call: {params: {page: "{{ response.paging.page + 1 }}"}, headers: {}, url: ...}
          collect: {strategy: append, path: data, into: pages}

Each page: fetch, take ``collect.path`` (dotted) of the decoded body, aggregate it
(``append`` extends a list with a list page or appends it, ``replace`` keeps the last,
``merge`` updates a mapping), then evaluate ``when`` over the task's context plus
``response`` / ``page`` (the decoded body), ``result`` (``{status_code, headers, body}``),
``attempt``, ``_retry: {index, count}`` and ``<into>`` (pages aggregated before this one).
It holds: render ``next_call`` over the same names, lay its ``params`` / ``headers`` over the
request's and replace its ``url``, and fetch again. The task's result is upstream's
``{status: success, data: <aggregate>, meta: {iterations, collect_strategy}}`` plus the last
page's ``status_code`` and ``headers`` (so ``outcome.http.status`` reads the last answer).

Bounded: at most ``max_attempts`` pages (1..:data:`MAX_PAGES`) and :data:`MAX_TOTAL_BYTES`
of bodies across all of them (each page keeps the http tool's own body bound); a page that
answers non-2xx ends the task with that error (its rules may retry the whole task).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from noetl_common.templating import DEFAULT_LIMITS, evaluate, render

from ._base import ToolError

DEFAULT_PAGES = 100
#: Most pages one task may fetch, whatever ``max_attempts`` says.
MAX_PAGES = 1000
#: Most bytes of decoded bodies all pages of one task may add up to.
MAX_TOTAL_BYTES = 64 * 1024 * 1024
STRATEGIES = frozenset({"append", "replace", "merge"})

Fetch = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


def pagination_policy(retry: Any) -> Mapping[str, Any] | None:
    """The first ``{when, then}`` of ``retry`` whose ``then`` has ``next_call`` or ``collect``."""
    if not isinstance(retry, list):
        return None
    for policy in retry:
        then = policy.get("then") if isinstance(policy, Mapping) else None
        if isinstance(then, Mapping) and ("next_call" in then or "collect" in then) and "when" in policy:
            return policy
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _pick(body: Any, path: Any) -> Any:
    if not isinstance(path, str) or not path:
        return body
    for part in path.split("."):
        if not isinstance(body, Mapping):
            return None
        body = body.get(part)
    return body


def _aggregate(total: Any, page: Any, strategy: str) -> Any:
    if strategy == "replace":
        return page
    if strategy == "merge":
        if total is None:
            return page
        return {**total, **page} if isinstance(total, Mapping) and isinstance(page, Mapping) else total
    total = [] if total is None else total
    return [*total, *page] if isinstance(page, list) else [*total, page]


def _next_request(
    config: dict[str, Any], next_call: Mapping[str, Any], names: Mapping[str, Any]
) -> dict[str, Any]:
    """The request of the next page: ``next_call`` rendered and laid over this one."""
    rendered = render(dict(next_call), names, DEFAULT_LIMITS)
    following = dict(config)
    for key in ("params", "headers"):
        if isinstance(rendered.get(key), Mapping):
            following[key] = {**(config.get(key) or {}), **rendered[key]}
    if rendered.get("url"):
        following["url"] = str(rendered["url"])
    return following


async def paginate(
    config: dict[str, Any], policy: Mapping[str, Any], ctx: Mapping[str, Any], fetch: Fetch
) -> dict[str, Any]:
    """Fetch pages while the pagination policy's ``when`` holds; see the module docstring."""
    then: Mapping[str, Any] = policy["then"]
    collect: Mapping[str, Any] = _mapping(then.get("collect"))
    strategy = str(collect.get("strategy") or "append")
    if strategy not in STRATEGIES:
        raise ValueError(f"http tool: collect.strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
    into = str(collect.get("into") or "pages")
    limit = then.get("max_attempts", DEFAULT_PAGES)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGES:
        raise ValueError(
            f"http tool: max_attempts of a pagination policy must be 1..{MAX_PAGES}, got {limit!r}"
        )
    next_call = _mapping(then.get("next_call"))
    request = {k: v for k, v in config.items() if k != "retry"}
    total: Any = None
    size = 0
    codes: list[int] = []
    for index in range(1, limit + 1):
        names = {**ctx, "_retry": {"index": index, "count": index}, "attempt": index, into: total}
        result = await fetch(request)
        size += len(msgspec.json.encode(result.get("body")))
        if size > MAX_TOTAL_BYTES:
            raise ToolError(
                f"http tool: pages over {MAX_TOTAL_BYTES} bytes after {index} page(s)", type_name="HttpError"
            )
        codes.append(result["status_code"])
        total = _aggregate(total, _pick(result.get("body"), collect.get("path")), strategy)
        names.update(response=result.get("body"), page=result.get("body"), result=result, success=True)
        if index == limit or not evaluate(str(policy["when"]), names, DEFAULT_LIMITS):
            break
        request = _next_request(request, next_call, names)
    return {
        "status": "success",
        "data": total,
        "status_code": codes[-1],
        "headers": result.get("headers") or {},
        "meta": {"iterations": len(codes), "collect_strategy": strategy, "status_codes": codes},
    }
