"""``spec.policy.admit``: a step's admission rules, read and checked as upstream NoETL does.

Upstream validates ``admit: {mode, rules: [{when, then: {allow}}, {else: {then: {allow}}}]}``
and its engine admits every step whatever the rules say; so does this suite (the rules are
kept on the model, their conditions checked for syntax at register time).
"""

from __future__ import annotations

from typing import Any

from ._errors import PlaybookError
from ._fields import condition
from ._model import Admit

_FIELD = "spec.policy.admit"


def admit_rules(raw: Any, step: str) -> list[Admit]:
    """The rules of ``spec.policy.admit`` (none when absent), in order."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise PlaybookError("spec.policy.admit must be a mapping", step=step, field=_FIELD)
    mode = raw.get("mode", "exclusive")
    if mode not in ("exclusive", "inclusive"):
        raise PlaybookError(
            f"admit mode must be exclusive or inclusive, got {mode!r}", step=step, field=f"{_FIELD}.mode"
        )
    items = raw.get("rules", [])
    if not isinstance(items, list):
        raise PlaybookError("spec.policy.admit.rules must be a list", step=step, field=f"{_FIELD}.rules")
    return [_rule(item, step, f"{_FIELD}.rules[{i}]") for i, item in enumerate(items)]


def _rule(item: Any, step: str, field: str) -> Admit:
    if not isinstance(item, dict):
        raise PlaybookError("an admit rule must be a mapping", step=step, field=field)
    when: str | None = None
    body = item
    if "else" in item:
        body = item["else"] if isinstance(item["else"], dict) else {}
        field = f"{field}.else"
    else:
        if "when" not in item:
            raise PlaybookError("an admit rule needs 'when' or is an 'else'", step=step, field=field)
        when = condition(item["when"], step, f"{field}.when")
    then = body.get("then")
    if not isinstance(then, dict) or not isinstance(then.get("allow"), bool):
        raise PlaybookError("an admit rule needs then: {allow: true|false}", step=step, field=f"{field}.then")
    return Admit(when=when, allow=then["allow"])
