"""The one internal playbook model both DSL generations parse into (msgspec structs)."""

from __future__ import annotations

import functools
from typing import Any, Literal

import msgspec
from noetl_common import TaskSpec
from noetl_common.templating import names_read

from ._keychain import KeychainEntry

NextMode = Literal["exclusive", "inclusive"]
LoopMode = Literal["sequential", "parallel"]
#: What a step whose arcs all fail to hold does: ``complete`` (its branch ends and may end the
#: run, its result the execution's) or ``quiet`` (its branch ends, the run's result is not its).
NoMatch = Literal["complete", "quiet"]


class Arc(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One outgoing transition. ``when`` None always holds; ``set`` keys are scoped (``ctx.k``)."""

    step: str
    when: str | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    set: dict[str, Any] = msgspec.field(default_factory=dict)


class Next(msgspec.Struct, omit_defaults=True, kw_only=True):
    """A step's routing: ``exclusive`` fires the first arc that holds, ``inclusive`` all.

    ``after_error``: the arcs are also evaluated after the step's call failed, with ``event``
    and ``error`` in scope (the current form, ``next: {spec, arcs}``, as upstream routes errors
    to recovery steps); the earlier list form keeps "a failed step fires no arcs"."""

    mode: NextMode
    arcs: list[Arc]
    after_error: bool = False
    on_no_match: NoMatch = "complete"


class Loop(msgspec.Struct, omit_defaults=True, kw_only=True):
    """``loop: {in, iterator, spec: {mode, max_in_flight}}``; ``items`` is the ``in`` template."""

    items: Any
    iterator: str
    mode: LoopMode = "sequential"
    #: a positive integer, or a template rendered when the loop starts
    max_in_flight: int | str | None = None


class Admit(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One ``spec.policy.admit`` rule: ``when`` None is the ``else``; ``allow`` what it decides."""

    allow: bool
    when: str | None = None


class Step(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One workflow step; ``tasks`` empty means no tool, ``next`` None means no explicit routing."""

    name: str
    tasks: list[TaskSpec] = msgspec.field(default_factory=list)
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    when: str | None = None
    next: Next | None = None
    loop: Loop | None = None
    set: dict[str, Any] = msgspec.field(default_factory=dict)
    #: ``spec.policy.admit.rules``, first match wins (validated, not applied: docs/compatibility.md)
    admit: list[Admit] = msgspec.field(default_factory=list)
    desc: str | None = None
    #: wall-clock bound of one run of the step's pipeline (``timeout:`` or ``spec.timeout``), seconds
    timeout: float | None = None

    @property
    def has_tool(self) -> bool:
        """True when the step runs a command."""
        return bool(self.tasks)


class Playbook(msgspec.Struct, omit_defaults=True, kw_only=True, dict=True):
    """A parsed, validated playbook; ``steps`` keep workflow order, ``entry_step`` is the entry.

    Treated as immutable once built: lookups by step name (and the orchestrator's routing
    graph) are computed on first use and kept on the instance (``dict=True``)."""

    name: str
    path: str
    steps: list[Step]
    workload: dict[str, Any] = msgspec.field(default_factory=dict)
    executor: dict[str, Any] | None = None
    api_version: str = "noetl.io/v2"
    #: ``executor.spec.entry_step``, else ``start``, else the first step
    entry_step: str = "start"
    #: ``executor.spec.final_step``: entered once when nothing else is left to run
    final_step: str | None = None
    #: what registration let through (unknown keys under ``NOETL_DSL_UNKNOWN_KEYS=warn``)
    warnings: list[str] = msgspec.field(default_factory=list)
    #: wall-clock bound of each execution (root ``timeout:``), seconds; the sweeper fails an
    #: execution still running past it (docs/sweeper.md)
    timeout: float | None = None
    #: the root ``keychain:`` block: definitions of the secrets its tasks read
    keychain: list[KeychainEntry] = msgspec.field(default_factory=list)

    @functools.cached_property
    def _names_read(self) -> dict[int, frozenset[str] | None]:
        return {}

    def names_read_by(self, step: Step) -> frozenset[str] | None:
        """The names the templates and conditions of ``step``'s tasks may read (None: any),
        worked out once per step of this playbook."""
        cache = self._names_read
        key = id(step)  # the playbook holds its steps: an id is not reused while it lives
        if key not in cache:
            cache[key] = names_read(msgspec.to_builtins(step.tasks))
        return cache[key]

    @functools.cached_property
    def _by_name(self) -> dict[str, Step]:
        by_name: dict[str, Step] = {}
        for step in self.steps:
            by_name.setdefault(step.name, step)  # the first of a repeated name, as a scan would
        return by_name

    def step(self, name: str) -> Step:
        """The step called ``name``; KeyError when there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(name) from None

    def has_step(self, name: str) -> bool:
        """True when the workflow has a step called ``name``."""
        return name in self._by_name

    def keychain_entry(self, name: str) -> KeychainEntry | None:
        """The root ``keychain:`` entry called ``name``, if the playbook declares one."""
        return next((entry for entry in self.keychain if entry.name == name), None)
