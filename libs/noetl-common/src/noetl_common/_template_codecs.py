"""Encoding filters playbooks use beside Jinja2's own: ``b64encode``, ``b64decode``, ``fromjson``.

``tojson`` is Jinja2's (sorted keys, HTML-safe escapes), as upstream NoETL renders it. Each
filter here checks the size of what it builds before building it and charges the budget for
it, so a template cannot turn a small value into a large one through them. The sandbox wraps
them like Jinja2's filters (``budgeted_filter``): a non-string input is measured before it
is printed, and the string a filter returns is counted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from ._template_budget import SLOT_BYTES, TemplateError, active
from ._tree import tree_depths

#: Deepest JSON ``fromjson`` accepts: far above real payloads, far below Python's recursion limit.
MAX_JSON_DEPTH = 100


def _text(value: Any) -> str:
    """What a filter encodes: a string as it is, bytes as UTF-8, anything else as its text."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def b64encode(value: Any) -> str:
    """Base64 of the UTF-8 bytes of ``value`` (a non-string is encoded as its text, as upstream)."""
    budget = active()
    data = _text(value).encode("utf-8")
    budget.fits(4 * ((len(data) + 2) // 3), "the base64 text")
    return base64.b64encode(data).decode("ascii")


def b64decode(value: Any) -> str:
    """The UTF-8 text whose base64 is ``value``; anything else is a template error."""
    try:
        return base64.b64decode(_text(value).encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise TemplateError(f"b64decode: not base64 of UTF-8 text ({exc})") from None


def fromjson(value: Any) -> Any:
    """The value JSON text ``value`` stands for; malformed or too deeply nested JSON is an error."""
    budget = active()
    text = _text(value)
    budget.fits(len(text), "the JSON text")
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise TemplateError(f"fromjson: not JSON text ({exc})") from None
    # walk it once: bounds its depth and charges one iteration per node
    nodes = 0
    for depth in tree_depths(parsed):
        nodes += 1
        if depth > MAX_JSON_DEPTH:
            raise TemplateError(f"fromjson: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    budget.charge(nodes)
    budget.add_built(nodes * SLOT_BYTES)
    return parsed


#: Filter name → function, added to the sandbox's filters.
CODEC_FILTERS: dict[str, Callable[[Any], Any]] = {
    "b64encode": b64encode,
    "b64decode": b64decode,
    "fromjson": fromjson,
}
