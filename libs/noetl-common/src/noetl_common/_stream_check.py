"""How an existing JetStream stream differs from the suite's declared configuration.

Streams are created by whichever service starts first and never updated by a service that
finds one: a stream that differs has been changed by an operator (or by a service given other
settings), and overwriting it at every start would silently undo that. A difference is
*unsafe* when the suite's guarantees do not hold on the stream as it is — fewer replicas,
other subjects, another retention, discard or storage policy, a shorter max age or duplicate
window, a tighter limit, a sealed stream — and *safe* when the stream is only more generous
(more replicas, a longer max age, looser limits ...). :func:`stream_differences` says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nats.js.api import StreamConfig

from ._config import ConfigError


@dataclass(frozen=True, slots=True)
class StreamDifference:
    """One setting of an existing stream that is not the declared one."""

    stream: str
    setting: str
    found: Any
    declared: Any
    unsafe: bool

    def describe(self) -> str:
        return f"{self.stream}.{self.setting} is {self.found!r}, declared {self.declared!r}"


class StreamConfigConflict(ConfigError):
    """An existing stream differs from the declared configuration in a way the suite cannot
    run on; the service refuses to start (exit 2) rather than overwrite it."""

    def __init__(self, differences: list[StreamDifference]) -> None:
        self.differences = differences
        super().__init__(
            "JetStream stream differs from the declared configuration: "
            + "; ".join(d.describe() for d in differences)
            + " (change the stream, e.g. with `nats stream edit`, or the service's settings;"
            " services never overwrite an existing stream)"
        )


def _unlimited(value: float | int | None) -> bool:
    """JetStream spells "no limit" as -1 (counts) or 0 (durations)."""
    return value is None or value <= 0


def _value(value: Any) -> Any:
    """Enum members compared and shown by their wire value."""
    return getattr(value, "value", value)


def _same(found: float | int | None, declared: float | int | None) -> bool:
    if _unlimited(found) and _unlimited(declared):
        return True
    if _unlimited(found) or _unlimited(declared):
        return False
    assert found is not None and declared is not None
    return math.isclose(found, declared, rel_tol=1e-9, abs_tol=1e-6)


def _shorter(found: float | int | None, declared: float | int | None) -> bool:
    """``found`` is a tighter limit than ``declared`` (no limit is the loosest)."""
    if _unlimited(found):
        return False
    return _unlimited(declared) or (found is not None and declared is not None and found < declared)


#: settings where only the same value is safe
_EXACT = ("retention", "discard", "storage")
#: limits and durations where less than declared is unsafe and more is safe
_AT_LEAST = (
    "max_age",
    "duplicate_window",
    "max_msgs",
    "max_bytes",
    "max_msg_size",
    "max_msgs_per_subject",
    "max_consumers",
)


def stream_differences(found: StreamConfig, declared: StreamConfig) -> list[StreamDifference]:
    """Every declared setting that ``found`` (the existing stream's) does not match, each
    marked unsafe or safe."""
    name = declared.name or "?"
    out: list[StreamDifference] = []

    def differ(setting: str, have: Any, want: Any, unsafe: bool) -> None:
        out.append(StreamDifference(name, setting, _value(have), _value(want), unsafe))

    if sorted(found.subjects or []) != sorted(declared.subjects or []):
        differ("subjects", sorted(found.subjects or []), sorted(declared.subjects or []), True)
    for setting in _EXACT:
        have, want = getattr(found, setting), getattr(declared, setting)
        if want is not None and _value(have) != _value(want):
            differ(setting, have, want, True)
    have_replicas, want_replicas = found.num_replicas or 1, declared.num_replicas or 1
    if have_replicas != want_replicas:
        differ("num_replicas", have_replicas, want_replicas, have_replicas < want_replicas)
    for setting in _AT_LEAST:
        have, want = getattr(found, setting), getattr(declared, setting)
        if not _same(have, want):
            differ(setting, have, want, _shorter(have, want))
    if found.sealed:
        differ("sealed", True, False, True)
    return out
