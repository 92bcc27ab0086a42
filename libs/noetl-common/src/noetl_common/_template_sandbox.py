"""Jinja2's sandbox with every render charged to the active budget (``_template_budget``).

Where the cost is paid:

* the code generator wraps every ``{% for %}`` iterable (``budget_items``), the operands
  of ``~`` (``budget_parts``) and every output value that is not a string or a number
  (``budget_out``); rendered pieces are summed before they are joined (``concat``);
* the sandbox hooks (``call``, ``getattr``, ``getitem``, ``call_binop``) check the
  deadline, and refuse a repetition, a padding, a replace, a join, a ``%`` or
  ``format`` whose result would be too large, or an integer product or power too long,
  before Python builds it in one go;
* every filter that iterates or builds text is wrapped to count and measure the same way;
* macro calls and recursive loops count as iterations and are nested only so deep.

A container turned into text (``{{ rows }}``, ``'%s' % x``, ``x | string``) is measured by
walking it first: a list holding one large string many times prints larger than it weighs.

The checks live beside this module: sizes and charging in ``_template_measure``, methods of
builtin types in ``_template_methods``, filters in ``_template_filters``, ``%`` and
``str.format`` in ``_template_formats``.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable
from functools import update_wrapper
from string import Formatter
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from ._template_budget import ACTIVE, Budget, active, tick, ticks
from ._template_codecs import CODEC_FILTERS
from ._template_filters import PLAIN_FILTERS, budgeted_filter
from ._template_formats import MeasuringEscapeFormatter, MeasuringFormatter, check_percent
from ._template_measure import SEQUENCES, TEXT, Args, LoopItems, account, counted, len_or_none, text_size
from ._template_methods import METHOD_CHECKS, entries

__all__ = ["BudgetedEnvironment"]


class _CodeGenerator(CodeGenerator):
    """Generates code that charges loops and measures what it turns into text.

    Output stays as cheap as Jinja2 makes it: a value that is a string or a number is
    output as it is (its size is checked where the pieces are joined, ``concat``); any
    other value goes through ``budget_out`` first, since a container can print far
    larger than it weighs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_items: set[int] = set()  # ids of the iterables of {% for %} nodes
        self._outputs: list[str] = []  # the temporary holding each output value being written

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_items.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_items:
            return super().visit(node, *args, **kwargs)
        self.write("environment.budget_items(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"{join}(environment.budget_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        name = self.temporary_identifier()
        self._outputs.append(name)
        self.write(f"({name} if ({name} := ")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        name = self._outputs.pop()
        self.write(f").__class__ in environment.budget_flat else environment.budget_out({name}))")
        super()._output_child_post(node, frame, finalize)


def _budget_range(*args: int) -> range:
    numbers = range(*args)
    budget = active()
    if len(numbers) > budget.max_iterations:
        budget.fail(
            f"range of {len(numbers)} numbers, more than {budget.max_iterations} loop iterations "
            "(NOETL_TEMPLATE_MAX_ITERATIONS)"
        )
    return numbers


class BudgetedEnvironment(SandboxedEnvironment):
    """A sandboxed environment whose templates spend the active budget (see the module doc)."""

    code_generator_class = _CodeGenerator
    #: Output values of these types print at most a few thousand characters.
    budget_flat = frozenset({str, int, float, bool, type(None)})
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _budget_range
        self.globals.pop("lipsum", None)  # its paragraph count is a text amplifier, and no playbook needs it
        self.filters.update(CODEC_FILTERS)
        for name, func in list(self.filters.items()):
            if name not in PLAIN_FILTERS:
                self.filters[name] = budgeted_filter(name, func)

    # -- what the generated code calls --------------------------------------------------------

    def budget_items(self, value: Any) -> Any:
        """A ``{% for %}`` iterable: sized ones are charged up front, others item by item."""
        budget = active()
        size = len_or_none(value)
        if size is None:
            return counted(value, budget)
        budget.charge(size)
        return LoopItems(value, budget)

    def budget_parts(self, parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of ``~``, measured before they are joined."""
        budget = active()
        size = 0
        for part in parts:
            size += len(part) if part.__class__ is str else text_size(part, budget)
        budget.add_built(size)
        return parts

    def budget_out(self, value: Any) -> Any:
        """A value to be output that may print far larger than it weighs: measured first."""
        budget = active()
        budget.fits(text_size(value, budget), "the text of a value", False)
        return value

    def concat(self, pieces: Iterable[str]) -> str:
        """Join rendered pieces (a template's, a macro's, a ``set`` block's) once their size is known."""
        if not isinstance(pieces, list):
            pieces = list(pieces)
        (ACTIVE.get() or active()).add_output(sum(map(len, pieces)))
        return "".join(pieces)

    # -- sandbox hooks --------------------------------------------------------------------------

    def getitem(self, obj: Any, argument: Any) -> Any:
        if not next(ticks) & 63:
            tick()
        value = super().getitem(obj, argument)
        if argument.__class__ is slice:
            account(active(), value)  # a slice is a copy
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        if not next(ticks) & 63:
            tick()
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = active()
        budget.tick()
        if operator == "*":
            _check_product(budget, left, right)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                budget.int_bits(int(right * math.log2(abs(left))) + 1)  # before computing it
        elif operator == "+":
            if isinstance(left, SEQUENCES) and isinstance(right, SEQUENCES):
                _fits_sequence(budget, left, len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            check_percent(budget, left, right)
        result = self.binop_table[operator](left, right)
        account(budget, result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = active()
        budget.tick()
        if isinstance(__obj, Macro):
            return __self._nested(budget, __context, __obj, args, kwargs)
        if isinstance(__obj, LoopContext):
            # a recursive loop calling itself: its items are counted like the outer loop's
            if args:
                args = (__self.budget_items(args[0]), *args[1:])
            return __self._nested(budget, __context, __obj, args, kwargs)
        owner = getattr(__obj, "__self__", None)
        check = METHOD_CHECKS.get(getattr(__obj, "__name__", "")) if owner is not None else None
        if check is not None:
            args = check(budget, owner, args, kwargs)
        elif __obj is dict and args:
            args = (entries(args[0], budget), *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        if check is not None or isinstance(owner, TEXT):
            account(budget, result)  # what a text method or a checked method built
        return result

    def _nested(self, budget: Budget, context: Any, obj: Any, args: Args, kwargs: dict[str, Any]) -> Any:
        budget.enter()
        try:
            return super().call(context, obj, *args, **kwargs)
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` / ``format_map`` through a formatter that measures every field."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        owner: Any = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: Formatter = (
            MeasuringEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else MeasuringFormatter(self)
        )
        str_type: type[str] = type(owner)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            result = str_type(formatter.vformat(owner, args, kwargs))
            active().add_built(len(result))
            return result

        return update_wrapper(wrapper, value)


def _fits_sequence(budget: Budget, sample: Any, length: int) -> None:
    if isinstance(sample, list | tuple):
        budget.fits_items(length)
    else:
        budget.fits(length)


def _check_product(budget: Budget, left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        budget.int_bits(left.bit_length() + right.bit_length())
        return
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, SEQUENCES) and isinstance(times, int):
            _fits_sequence(budget, sequence, len(sequence) * max(times, 0))
