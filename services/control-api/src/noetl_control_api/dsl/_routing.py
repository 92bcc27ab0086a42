"""Where a step goes next: its ``next`` arcs (either form) and its ``loop``."""

from __future__ import annotations

from typing import Any

from noetl_common.templating import has_template

from ._errors import PlaybookError
from ._fields import condition, inputs, mapping, scoped_set
from ._model import Arc, Loop, Next


def next_of(raw: Any, step: str, step_spec: dict[str, Any]) -> Next | None:
    """The step's ``next``: a step name, a list of arcs, one arc, or ``{spec: {mode}, arcs}``."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return Next(mode=_earlier_mode(step, step_spec, []), arcs=[Arc(step=raw)])
    if isinstance(raw, list):
        arcs = [_arc(item, step, f"next[{i}]") for i, item in enumerate(raw)]
        return Next(mode=_earlier_mode(step, step_spec, arcs), arcs=arcs)
    if isinstance(raw, dict) and "arcs" in raw:
        spec = mapping(raw.get("spec"))
        mode = spec.get("mode", "exclusive")
        if mode not in ("exclusive", "inclusive"):
            raise PlaybookError(
                f"next mode must be exclusive or inclusive, got {mode!r}", step=step, field="next.spec.mode"
            )
        on_no_match = spec.get("on_no_match", "complete")
        if on_no_match not in ("complete", "quiet"):
            raise PlaybookError(
                f"on_no_match must be complete or quiet, got {on_no_match!r}",
                step=step,
                field="next.spec.on_no_match",
            )
        items = raw["arcs"]
        if not isinstance(items, list):
            raise PlaybookError("next.arcs must be a list", step=step, field="next.arcs")
        arcs = [_arc(item, step, f"next[{i}]") for i, item in enumerate(items)]
        return Next(mode=mode, arcs=arcs, after_error=True, on_no_match=on_no_match)
    if isinstance(raw, dict) and "step" in raw:
        arc = _arc(raw, step, "next")
        return Next(mode=_earlier_mode(step, step_spec, [arc]), arcs=[arc])
    raise PlaybookError(
        "next must be a step name, a list of {step, when, args}, or {spec: {mode}, arcs: [...]}",
        step=step,
        field="next",
    )


def _earlier_mode(step: str, step_spec: dict[str, Any], arcs: list[Arc]) -> Any:
    mode = step_spec.get("next_mode")
    if mode is None:
        return "exclusive" if any(arc.when is not None for arc in arcs) else "inclusive"
    if mode not in ("exclusive", "inclusive"):
        raise PlaybookError(
            f"next_mode must be exclusive or inclusive, got {mode!r}", step=step, field="spec.next_mode"
        )
    return mode


def _arc(raw: Any, step: str, field: str) -> Arc:
    if isinstance(raw, str):
        return Arc(step=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("step"), str):
        raise PlaybookError("an arc needs a target 'step'", step=step, field=field)
    return Arc(
        step=raw["step"],
        when=condition(raw.get("when"), step, f"{field}.when"),
        args=inputs(raw, step, f"{field}."),
        set=scoped_set(raw, step, f"{field}.set", allowed=frozenset({"ctx", "vars"})),
    )


def loop_of(raw: Any, step: str) -> Loop | None:
    """``loop: {in, iterator, spec: {mode, max_in_flight}}`` (mode and max_in_flight also bare)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PlaybookError("loop must be a mapping with in and iterator", step=step, field="loop")
    if raw.get("in") is None:
        raise PlaybookError("loop needs 'in' (the collection to iterate)", step=step, field="loop.in")
    iterator = raw.get("iterator")
    if not isinstance(iterator, str) or not iterator.isidentifier():
        raise PlaybookError(
            "loop needs 'iterator' (a name for the current item)", step=step, field="loop.iterator"
        )
    spec = mapping(raw.get("spec"))
    mode = spec.get("mode", raw.get("mode", "sequential"))
    if mode not in ("sequential", "parallel"):
        raise PlaybookError(
            f"loop mode must be sequential or parallel, got {mode!r}", step=step, field="loop.spec.mode"
        )
    max_in_flight = spec.get("max_in_flight", raw.get("max_in_flight"))
    if isinstance(max_in_flight, str) and not has_template(max_in_flight):
        max_in_flight = int(max_in_flight) if max_in_flight.strip().isdigit() else 0
    if max_in_flight is not None and not isinstance(max_in_flight, str):
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise PlaybookError(
                "max_in_flight must be a positive integer or a template that renders to one",
                step=step,
                field="loop.spec.max_in_flight",
            )
    return Loop(items=raw["in"], iterator=iterator, mode=mode, max_in_flight=max_in_flight)
