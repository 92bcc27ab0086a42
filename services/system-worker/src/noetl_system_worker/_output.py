"""A task's ``output:`` block (upstream's ``tool.output``): ``select`` picks fields of its result.

Read from upstream's worker (``_normalize_output_config`` and ``ResultHandler.process_result``):
``select`` is a list of paths (a string, or ``{path, as}``); the result becomes the picked
fields — keyed by ``as``, else by the path's last segment — beside ``_inline``, the whole
result. Paths are dotted keys with list indexes (``data.items[0].name``, ``rows.0``); a path
that leads nowhere is left out, and a picked string over 500 characters is cut to 500 plus
``...``. ``store`` chooses upstream's storage tier for a result too big for an event: this
suite has one tier, the control-api's result store, which takes every such result whatever
its ``kind`` (checked when the playbook is registered). An ``output`` that is not a mapping is
the tool's own key (the wasm tool's output format), left to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Longest picked string kept whole, as upstream's extractor cuts them.
MAX_PICKED_CHARS = 500
#: Most paths one ``select`` may name (the control-api refuses more at register time).
MAX_SELECT_PATHS = 100


def output_block(config: dict[str, Any]) -> Mapping[str, Any] | None:
    """Take the ``output`` mapping out of a rendered task config (tools never see it)."""
    block = config.get("output")
    if not isinstance(block, Mapping):
        return None
    del config["output"]
    return block


def _paths(select: Any) -> list[tuple[str, str]]:
    """``(path, key)`` pairs of a ``select`` list; items that name no path are skipped."""
    pairs: list[tuple[str, str]] = []
    for item in select[:MAX_SELECT_PATHS] if isinstance(select, list) else []:
        path, alias = (item, None) if isinstance(item, str) else (None, None)
        if isinstance(item, Mapping):
            path, alias = item.get("path"), item.get("as")
        if not isinstance(path, str) or not path.strip():
            continue
        path = path.strip().removeprefix("$").removeprefix(".")
        key = alias if isinstance(alias, str) and alias else path.split(".")[-1].split("[")[0]
        pairs.append((path, key))
    return pairs


def _get(data: Any, path: str) -> Any:
    """The value at a dotted path with ``[n]`` indexes; None when it leads nowhere."""
    current = data
    for part in path.replace("]", "").split("."):
        name, _, index = part.partition("[")
        if name:
            if isinstance(current, Mapping):
                current = current.get(name)
            elif isinstance(current, list) and name.isdigit():
                current = current[int(name)] if int(name) < len(current) else None
            else:
                return None
        if index:
            if not (isinstance(current, list) and index.isdigit() and int(index) < len(current)):
                return None
            current = current[int(index)]
    return current


def select_output(result: Any, block: Mapping[str, Any]) -> Any:
    """The task's result after its ``output.select`` (unchanged when there is none)."""
    pairs = _paths(block.get("select"))
    if not pairs:
        return result
    picked: dict[str, Any] = {}
    for path, key in pairs:
        value = _get(result, path)
        if value is None:
            continue
        if isinstance(value, str) and len(value) > MAX_PICKED_CHARS:
            value = value[:MAX_PICKED_CHARS] + "..."
        picked[key] = value
    return {**picked, "_inline": result}
