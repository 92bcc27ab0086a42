"""Bench section ``templates``: ns per render of typical playbook templates, in-process.

    .venv/bin/python bench/templates.py

The templates the orchestrator and the worker render most: one ``{{ expr }}`` (a step
result read back), a 20-key ``args`` mapping (half single expressions, half text), a
``{% for %}`` over 100 items, and a bare ``when`` condition. CPU time, best of several
rounds, so other load on the machine counts as little as it can. To compare two
revisions, run it against each one's ``noetl_common`` (``git archive REV
libs/noetl-common | tar -x -C DIR``, then ``PYTHONPATH=DIR/libs/noetl-common/src``).
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable
from typing import Any

from noetl_common.templating import evaluate, render

ROUNDS = 9

CONTEXT: dict[str, Any] = {
    "workload": {f"k{i}": i for i in range(20)} | {"items": [{"name": f"n{i}", "v": i} for i in range(100)]},
    "start": {"result": {"n": 7}},
    "ctx": {},
    "args": {},
}
ARGS = {f"a{i}": f"{{{{ workload.k{i} }}}}" if i % 2 else f"id-{{{{ workload.k{i} }}}}/x" for i in range(20)}
LOOP = "{% for x in workload['items'] %}{{ x.name }}={{ x.v }},{% endfor %}"

CASES: dict[str, tuple[Callable[[], Any], int]] = {
    "{{ start.result.n }}": (lambda: render("{{ start.result.n }}", CONTEXT), 20_000),
    "args: 20 keys": (lambda: render(ARGS, CONTEXT), 2_000),
    "for loop, 100 items": (lambda: render(LOOP, CONTEXT), 2_000),
    "when: start.result.n > 3": (lambda: evaluate("start.result.n > 3", CONTEXT), 20_000),
}


def main() -> None:
    for name, (case, number) in CASES.items():
        case()  # compiled and cached before timing
        best = min(timeit.repeat(case, number=number, repeat=ROUNDS, timer=time.process_time)) / number
        print(f"{name:28s} {best * 1e9:10.0f} ns")


if __name__ == "__main__":
    main()
