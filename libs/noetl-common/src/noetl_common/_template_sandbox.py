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
"""

from __future__ import annotations

import math
import re
import types
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from functools import update_wrapper
from string import Formatter
from typing import Any, cast

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import SandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import Markup

from ._template_budget import ACTIVE, SLOT_BYTES, Budget, active, clock, tick, ticks

__all__ = ["BudgetedEnvironment"]

_SEQUENCES = (str, bytes, bytearray, list, tuple)
#: Types whose text is short whatever the value (a float prints in at most 24 characters).
_SHORT = frozenset({float, bool, type(None)})
_VIEWS: tuple[type, ...] = (list, tuple, Set, deque, type({}.keys()), type({}.values()), type({}.items()))


def text_size(value: Any, budget: Budget, indent: int = 0) -> int:
    """An estimate from above of ``len(str(value))``, without building it; stops past the limit.

    ``indent``: the text is pretty-printed with this indent per level (``tojson``).
    """
    cls = value.__class__
    if cls is str:
        return len(value)
    if cls is int:
        return value.bit_length() // 3 + 2
    if cls in _SHORT:
        return 32
    cap = budget.max_size
    size = 0
    walked = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, Mapping):
            children = (part for pair in item.items() for part in pair)
            size += 2 + 2 * len(item)
        elif isinstance(item, _VIEWS):
            children = cast(Iterable[Any], item)
        elif isinstance(item, Namespace):
            children = (object.__getattribute__(item, "_Namespace__attrs"),)  # its repr shows them
        else:
            size += _leaf_size(item)
            children = ()
        size += 2 + depth * indent
        for child in children:
            cls = child.__class__
            # strings and numbers inline: most containers hold nothing else
            if cls is str:
                size += len(child) + 4 + depth * indent
            elif cls is int:
                size += child.bit_length() // 3 + 4 + depth * indent
            elif cls in _SHORT:
                size += 26 + depth * indent
            else:
                stack.append((child, depth + 1))
            if size > cap:
                return size
        walked += 1
        if not walked & 255:
            budget.tick()
    return size


def _leaf_size(item: Any) -> int:
    if isinstance(item, str):
        return len(item) + 4
    if isinstance(item, bytes | bytearray):
        return 4 * len(item) + 3  # every byte may print as \xNN
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    return 32  # loop, macro and undefined objects: a short repr


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _length(value: Any) -> int | None:
    try:
        return len(value)
    except TypeError:
        return None


def _counted(items: Iterable[Any], budget: Budget) -> Iterator[Any]:
    for item in items:
        budget.charge(1)
        yield item


def _timed(items: Any, budget: Budget) -> Iterator[Any]:
    deadline, charged = budget.deadline, len(items)
    for index, item in enumerate(items):
        if not index & 7:  # every 8th item: the body's own hooks look at the clock too
            if clock() > deadline:
                budget.late()
            if index >= charged:  # the loop's body made the list longer
                budget.charge(8)
        yield item


class _LoopItems:
    """A sized loop iterable, charged up front; keeps ``loop.length`` cheap and the deadline checked."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Any, budget: Budget) -> None:
        self._items = items
        self._budget = budget

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return _timed(self._items, self._budget)


def iterate(value: Any, budget: Budget) -> Any:
    """``value`` to be iterated, charged: a sized one by its length now, any other item by item."""
    size = _length(value)
    if size is None:
        return _counted(value, budget)
    budget.charge(size)
    return value


def materialize(value: Any, budget: Budget) -> list[Any]:
    """``value``'s items as a list, charged (a method that iterates its argument)."""
    if isinstance(value, list):
        budget.charge(len(value))
        return value
    return list(iterate(value, budget))


def _joined_size(items: list[Any], separator: Any, budget: Budget) -> int:
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, _SEQUENCES) else 0
    for item in items:
        size += len(item) if isinstance(item, str | bytes | bytearray) else text_size(item, budget)
        if size > budget.max_size:
            break
    return size


# -- printf-style and str.format --------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def _number(digits: str, budget: Budget) -> int:
    # nine digits already pass any limit; int() of more could itself be slow
    return int(digits) if len(digits) < 10 else budget.max_size + 1


def check_percent(budget: Budget, template: str, values: Any) -> None:
    """Refuse ``template % values`` whose widths, precisions and values would build too much."""
    size = len(template)
    star = False
    for match in _PERCENT_SPEC.finditer(template):
        for group in match.groups():
            if group == "*":
                star = True
            elif group:
                size += _number(group, budget)
    parts = values.values() if isinstance(values, Mapping) else values if isinstance(values, tuple) else (values,)
    for part in parts:
        size += text_size(part, budget)
        if star and isinstance(part, int):
            size += max(part, 0)
    budget.fits(size)


class _FieldSizes:
    """Measures each ``str.format`` field before it is formatted."""

    _size = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = active()
        size = text_size(value, budget)
        match = _FORMAT_SPEC.match(format_spec)
        if match is not None:
            size += sum(_number(group, budget) for group in match.groups() if group)
        self._size += size
        budget.fits(self._size)
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _Formatter(_FieldSizes, SandboxedFormatter):
    pass


class _EscapeFormatter(_FieldSizes, SandboxedEscapeFormatter):
    pass


# -- methods of builtin types ----------------------------------------------------------------

_Args = tuple[Any, ...]
_MethodCheck = Callable[[Budget, Any, _Args, dict[str, Any]], _Args]
_TEXT = (str, bytes, bytearray)


def _pad(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    width = _arg(args, kwargs, 0, "width", 0)
    if isinstance(owner, _TEXT) and isinstance(width, int):
        budget.fits(width)
    return args


def _expandtabs(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    tabsize = _arg(args, kwargs, 0, "tabsize", 8)
    if isinstance(owner, _TEXT) and isinstance(tabsize, int):
        tab: Any = "\t" if isinstance(owner, str) else b"\t"
        budget.fits(len(owner) + owner.count(tab) * max(tabsize, 0))
    return args


def _replace(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
    count = _arg(args, kwargs, 2, "count", -1)
    if isinstance(owner, _TEXT) and isinstance(old, _TEXT) and isinstance(new, _TEXT):
        budget.fits(_replaced_size(owner, old, new, count))
    return args


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _join(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    if not isinstance(owner, _TEXT) or not args:
        return args
    items = materialize(args[0], budget)
    budget.fits(_joined_size(items, owner, budget))
    return (items, *args[1:])


def _translate(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    table = _arg(args, kwargs, 0, "table", None)
    if isinstance(owner, str) and isinstance(table, Mapping):
        budget.charge(len(table))
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        budget.fits(len(owner) * max(longest, 1))
    return args


def _to_bytes(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    length = _arg(args, kwargs, 0, "length", 1)
    if isinstance(owner, int) and isinstance(length, int):
        budget.fits(length)
    return args


def _extend(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    if not isinstance(owner, list) or not args:
        return args
    items = materialize(args[0], budget)
    budget.fits_items(len(owner) + len(items))
    return (items, *args[1:])


def _grow(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    if isinstance(owner, list):
        budget.fits_items(len(owner) + 1)
    return args


def _walk_owner(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    if isinstance(owner, list | tuple | dict):
        budget.charge(len(owner))
    return args


def _walk_argument(budget: Budget, owner: Any, args: _Args, kwargs: dict[str, Any]) -> _Args:
    if (owner is dict or isinstance(owner, dict)) and args:
        return (_entries(args[0], budget), *args[1:])
    return args


def _entries(value: Any, budget: Budget) -> Any:
    """What ``dict(value)`` / ``d.update(value)`` goes through, charged: a mapping as it is."""
    if isinstance(value, Mapping):
        budget.charge(len(value))
        return value
    return materialize(value, budget)


_METHODS: dict[str, _MethodCheck] = {
    "ljust": _pad,
    "rjust": _pad,
    "center": _pad,
    "zfill": _pad,
    "expandtabs": _expandtabs,
    "replace": _replace,
    "join": _join,
    "translate": _translate,
    "to_bytes": _to_bytes,
    "extend": _extend,
    "append": _grow,
    "insert": _grow,
    "copy": _walk_owner,
    "count": _walk_owner,
    "index": _walk_owner,
    "remove": _walk_owner,
    "sort": _walk_owner,
    "reverse": _walk_owner,
    "update": _walk_argument,
    "fromkeys": _walk_argument,
}


# -- filters -----------------------------------------------------------------------------------

#: (budget, what the filter gets before its value, value, other args, kwargs) → the call's
#: new value, args and kwargs, or an error when it would cost too much.
_FilterCheck = Callable[[Budget, _Args, Any, _Args, dict[str, Any]], tuple[Any, _Args, dict[str, Any]]]

#: Filters that cost O(1) whatever their input: left as Jinja2 has them.
_PLAIN_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "filesizeformat", "first", "float", "int", "last", "length"}
    | {"random", "round"}
)
#: Filters that go through every item of their input.
_ITERATING_FILTERS = frozenset(
    {"batch", "dictsort", "groupby", "items", "list", "map", "max", "min", "reject", "rejectattr"}
    | {"reverse", "select", "selectattr", "slice", "sort", "sum", "unique", "xmlattr"}
)


def _filter_center(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    width = _arg(args, kwargs, 0, "width", 80)
    if isinstance(width, int):
        budget.fits(width)
    return value, args, kwargs


def _filter_indent(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    width = _arg(args, kwargs, 0, "width", 4)
    if isinstance(width, int):
        budget.fits(width)
    indent = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if isinstance(value, str):
        budget.fits(len(value) + (len(value.splitlines()) + 1) * (indent + 1))
    return value, args, kwargs


def _filter_wordwrap(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    width = _arg(args, kwargs, 0, "width", 79)
    wrap = _arg(args, kwargs, 2, "wrapstring", None)
    if isinstance(value, str) and isinstance(width, int) and isinstance(wrap, str):
        # textwrap breaks a line at most at each whitespace and every `width` characters
        spaces = len(value) - len("".join(value.split()))
        breaks = 3 * spaces + len(value) // max(width, 1) + 2
        budget.fits(len(value) + breaks * len(wrap))
    return value, args, kwargs


def _filter_format(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    if isinstance(value, str):
        check_percent(budget, value, kwargs or args)
    return value, args, kwargs


def _filter_replace(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    old, new = _arg(args, kwargs, 0, "old", None), _arg(args, kwargs, 1, "new", None)
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        count = _arg(args, kwargs, 2, "count", None)
        budget.fits(_replaced_size(value, old, new, -1 if count is None else count))
    return value, args, kwargs


def _filter_join(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    items = materialize(value, budget)
    attribute = _arg(args, kwargs, 1, "attribute", None)
    if attribute is not None:
        # pick the attribute here, so the sizes below are those of what is joined
        get = make_attrgetter(lead[0].environment, attribute)
        items = [get(item) for item in items]
        args, kwargs = args[:1], {k: v for k, v in kwargs.items() if k != "attribute"}
    budget.fits(_joined_size(items, _arg(args, kwargs, 0, "d", ""), budget))
    return items, args, kwargs


def _filter_batch(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    size = _arg(args, kwargs, 0, "linecount", 0)
    if isinstance(size, int):
        budget.fits_items(size)  # the last batch is padded to this size
    return value, args, kwargs


def _filter_slice(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    slices = _arg(args, kwargs, 0, "slices", 0)
    if isinstance(slices, int):
        budget.charge(max(slices, 0))  # one pass per slice, even an empty one
    return value, args, kwargs


def _filter_tojson(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    indent = _arg(args, kwargs, 0, "indent", None)
    budget.fits(text_size(value, budget, indent if isinstance(indent, int) else 0), "the JSON text", False)
    return value, args, kwargs


def _filter_pprint(
    budget: Budget, lead: _Args, value: Any, args: _Args, kwargs: dict[str, Any]
) -> tuple[Any, _Args, dict[str, Any]]:
    budget.fits(text_size(value, budget, 1), "the text of a value", False)
    return value, args, kwargs


_FILTER_CHECKS: dict[str, _FilterCheck] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "format": _filter_format,
    "replace": _filter_replace,
    "join": _filter_join,
    "batch": _filter_batch,
    "slice": _filter_slice,
    "tojson": _filter_tojson,
    "pprint": _filter_pprint,
}
#: Filters whose check measures or materializes the value itself.
_SELF_MEASURED = frozenset({"join", "tojson", "pprint"})


def _account(budget: Budget, result: Any) -> None:
    """Count a string or list just built (a list by its references) towards the budget."""
    if isinstance(result, str | bytes | bytearray):
        budget.add_built(len(result))
    elif isinstance(result, list | tuple):
        budget.add_built(len(result) * SLOT_BYTES)


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # a filter taking the context, eval context or environment gets it before the value
    at = 0 if getattr(func, "jinja_pass_arg", None) is None else 1
    iterating = name in _ITERATING_FILTERS
    measured = name in _SELF_MEASURED
    check = _FILTER_CHECKS.get(name)

    def run(*args: Any, **kwargs: Any) -> Any:
        budget = active()
        budget.tick()
        if len(args) > at:
            lead, value, rest = args[:at], args[at], args[at + 1 :]
            if iterating:
                value = iterate(value, budget)
            elif not measured and value.__class__ is not str:
                budget.fits(text_size(value, budget), "the text of a value", False)  # the filter prints it
            if check is not None:
                value, rest, kwargs = check(budget, lead, value, rest, kwargs)
            args = (*lead, value, *rest)
        result = func(*args, **kwargs)
        _account(budget, result)
        return result

    return update_wrapper(run, func)  # keeps jinja_pass_arg


# -- the code generator ----------------------------------------------------------------------


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
        for name, func in list(self.filters.items()):
            if name not in _PLAIN_FILTERS:
                self.filters[name] = _budgeted_filter(name, func)

    # -- what the generated code calls --------------------------------------------------------

    def budget_items(self, value: Any) -> Any:
        """A ``{% for %}`` iterable: sized ones are charged up front, others item by item."""
        budget = active()
        size = _length(value)
        if size is None:
            return _counted(value, budget)
        budget.charge(size)
        return _LoopItems(value, budget)

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
            _account(active(), value)  # a slice is a copy
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
            if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
                _fits_sequence(budget, left, len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            check_percent(budget, left, right)
        result = self.binop_table[operator](left, right)
        _account(budget, result)
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
        check = _METHODS.get(getattr(__obj, "__name__", "")) if owner is not None else None
        if check is not None:
            args = check(budget, owner, args, kwargs)
        elif __obj is dict and args:
            args = (_entries(args[0], budget), *args[1:])
        result = super().call(__context, __obj, *args, **kwargs)
        if check is not None or isinstance(owner, _TEXT):
            _account(budget, result)  # what a text method or a checked method built
        return result

    def _nested(self, budget: Budget, context: Any, obj: Any, args: _Args, kwargs: dict[str, Any]) -> Any:
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
            _EscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) else _Formatter(self)
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
        if isinstance(sequence, _SEQUENCES) and isinstance(times, int):
            _fits_sequence(budget, sequence, len(sequence) * max(times, 0))
