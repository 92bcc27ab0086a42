"""Every log line of the control-api names its event ``<subject>_<what_happened>`` in snake_case
(``token_created``, ``oidc_token_refused``); the details go in key=value fields."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import noetl_control_api

_LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
_EVENT_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def _log_events(source: Path) -> list[tuple[int, str]]:
    events = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _LEVELS
            and isinstance(node.func.value, ast.Name)
            and "log" in node.func.value.id
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            events.append((node.lineno, node.args[0].value))
    return events


def test_log_events_are_snake_case_subject_then_what_happened() -> None:
    package = Path(noetl_control_api.__file__).parent
    found = {
        f"{path.relative_to(package)}:{line}": event
        for path in package.rglob("*.py")
        for line, event in _log_events(path)
    }
    assert len(found) >= 15  # the scan sees the package's log calls
    assert {where: event for where, event in found.items() if not _EVENT_NAME.fullmatch(event)} == {}
