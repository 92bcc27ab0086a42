"""What one template render may spend, and the running account the sandbox hooks keep.

The control-api renders templates inside its event loop while it holds an execution's
row lock, and a worker renders task configs inside its own loop, so a template must
never be able to freeze or exhaust either. Each ``render``/``evaluate`` call gets a
fresh :class:`Budget` from its :class:`TemplateLimits`; the sandbox (``_template_sandbox``)
charges it, and going over raises :class:`TemplateBudgetError` naming the limit.

The active budget lives in a context variable, so renders in concurrent threads or
tasks never share one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import NoReturn

import msgspec

from ._config import env_float, env_int

MiB = 1024 * 1024
#: A list slot is one reference: a list of n items costs 8·n bytes.
SLOT_BYTES = 8
#: All the strings and lists one call builds may add up to this many times the output limit:
#: a loop that builds many strings each under the limit still cannot fill the memory.
BUILT_FACTOR = 16

clock = time.monotonic


class TemplateError(ValueError):
    """A template that does not parse, names something fixed that does not exist, or fails.

    ``field`` is where inside the rendered value the failing template sits (``url``,
    ``headers.Authorization``, ``items[2]``), or None when the value was the template.
    """

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.field: str | None = None

    def at(self, prefix: str) -> str:
        """``prefix`` joined with :attr:`field`: ``args.url``, ``config.items[2]``, or ``prefix``."""
        if not self.field:
            return prefix
        return f"{prefix}{self.field}" if self.field.startswith("[") else f"{prefix}.{self.field}"

    def within(self, key: str | int) -> TemplateError:
        """Record that the failing template sits under ``key`` (a mapping key or list index)."""
        part = f"[{key}]" if isinstance(key, int) else str(key)
        if self.field:
            part += self.field if self.field.startswith("[") else f".{self.field}"
        self.field = part
        return self


class TemplateBudgetError(TemplateError):
    """A template went over its budget; the message names the limit (and its setting)."""


class TemplateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The budget of one render or evaluate call (one field of a playbook).

    ``max_int_bits`` is 4096: far above any id, timestamp or amount a playbook handles,
    yet small enough that every operation on such an integer takes microseconds and it
    still prints (1,234 digits) under Python's own 4,300-digit conversion limit.
    ``max_depth`` bounds macro and recursive-loop nesting well inside Python's stack.
    """

    max_iterations: int = 100_000
    max_output_bytes: int = MiB
    max_int_bits: int = 4096
    max_seconds: float = 0.25
    max_depth: int = 50

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TemplateLimits:
        """Read ``NOETL_TEMPLATE_*``; raises ConfigError naming a bad variable."""
        default = cls()
        return cls(
            max_iterations=env_int(
                "NOETL_TEMPLATE_MAX_ITERATIONS", default.max_iterations, minimum=1, env=env
            ),
            max_output_bytes=env_int(
                "NOETL_TEMPLATE_MAX_OUTPUT_BYTES", default.max_output_bytes, minimum=1024, env=env
            ),
            max_int_bits=env_int("NOETL_TEMPLATE_MAX_INT_BITS", default.max_int_bits, minimum=64, env=env),
            max_seconds=env_float("NOETL_TEMPLATE_MAX_SECONDS", default.max_seconds, minimum=0.001, env=env),
        )


DEFAULT_LIMITS = TemplateLimits()


class Budget:
    """The running account of one call. Counters only grow, so a limit once hit stays hit."""

    __slots__ = (
        "built",
        "deadline",
        "depth",
        "iterations",
        "limits",
        "max_built",
        "max_iterations",
        "max_size",
        "output",
        "spent",
    )

    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.deadline = clock() + limits.max_seconds
        self.max_iterations = limits.max_iterations
        self.max_size = limits.max_output_bytes
        self.max_built = limits.max_output_bytes * BUILT_FACTOR
        self.iterations = 0
        self.output = 0
        self.built = 0
        self.depth = 0
        self.spent: str | None = None

    def fail(self, what: str) -> NoReturn:
        self.spent = f"template budget exceeded: {what}"
        raise TemplateBudgetError(self.spent)

    def late(self) -> NoReturn:
        self.fail(f"took longer than {self.limits.max_seconds:g} s (NOETL_TEMPLATE_MAX_SECONDS)")

    def tick(self) -> None:
        if clock() > self.deadline:
            self.late()

    def charge(self, n: int) -> None:
        """Count ``n`` iterations (loop items, items a filter or method goes through, calls)."""
        self.iterations += n
        if self.iterations > self.max_iterations:
            self.fail(f"more than {self.max_iterations} loop iterations (NOETL_TEMPLATE_MAX_ITERATIONS)")
        if clock() > self.deadline:
            self.late()

    def fits(self, size: int, what: str = "a string", exact: bool = True) -> None:
        """Refuse, before it is built, one object of ``size`` bytes over the output limit.

        ``exact``: ``size`` is the object's size, not an estimate that stopped counting.
        """
        if size > self.max_size:
            shown = f"{what} of {size} bytes" if exact else what
            self.fail(f"{shown} would be larger than {self.max_size} bytes (NOETL_TEMPLATE_MAX_OUTPUT_BYTES)")

    def fits_items(self, count: int) -> None:
        if count * SLOT_BYTES > self.max_size:
            self.fail(
                f"a list of {count} items would be larger than {self.max_size} bytes "
                f"at {SLOT_BYTES} bytes an item (NOETL_TEMPLATE_MAX_OUTPUT_BYTES)"
            )

    def add_built(self, size: int) -> None:
        """Account an object of ``size`` bytes just built; all of them together are bounded too."""
        self.fits(size)
        self.built += size
        if self.built > self.max_built:
            self.fail(
                f"strings and lists built add up to more than {self.max_built} bytes "
                f"({BUILT_FACTOR} times NOETL_TEMPLATE_MAX_OUTPUT_BYTES)"
            )

    def add_output(self, size: int) -> None:
        """Account ``size`` bytes of rendered text (macro and ``set`` block text included)."""
        self.output += size
        if self.output > self.max_size:
            self.fail(f"output larger than {self.max_size} bytes (NOETL_TEMPLATE_MAX_OUTPUT_BYTES)")

    def int_bits(self, bits: int) -> None:
        if bits > self.limits.max_int_bits:
            self.fail(
                f"an integer of about {bits} bits would be larger than "
                f"{self.limits.max_int_bits} bits (NOETL_TEMPLATE_MAX_INT_BITS)"
            )

    def enter(self) -> None:
        """One level deeper into a macro or a recursive loop; each call also counts as an iteration."""
        self.depth += 1
        if self.depth > self.limits.max_depth:
            self.fail(f"macros or recursive loops nested deeper than {self.limits.max_depth}")
        self.charge(1)

    def finish(self) -> None:
        """Raise if a limit was hit even though the template swallowed the error."""
        if self.spent is not None:
            raise TemplateBudgetError(self.spent)


ACTIVE: ContextVar[Budget | None] = ContextVar("noetl_template_budget", default=None)

#: The hottest hooks (attribute and item access) look at the clock on every 64th call only:
#: ``if not next(ticks) & 63: tick()``. Shared by all threads, which only shifts when each looks.
ticks = itertools.count()


def tick() -> None:
    """Raise if the active call is past its deadline."""
    budget = ACTIVE.get()
    if budget is not None and clock() > budget.deadline:
        budget.late()


def active() -> Budget:
    """The budget of the call in progress; a fresh default one outside any call."""
    budget = ACTIVE.get()
    return budget if budget is not None else Budget(DEFAULT_LIMITS)
