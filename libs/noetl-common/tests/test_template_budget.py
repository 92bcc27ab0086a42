"""Template budgets: every kind of bomb is refused by its limit, ordinary templates still render.

A bomb is refused by counting, before its work is done: the tests give the deadline an
hour, so a refusal that names another limit cannot come from the clock.
"""

from __future__ import annotations

from typing import Any

import pytest
from noetl_common import ConfigError
from noetl_common.templating import (
    TemplateBudgetError,
    TemplateError,
    TemplateLimits,
    check_syntax,
    evaluate,
    render,
)

NO_CLOCK = TemplateLimits(max_seconds=3600.0)
ROWS = [{"id": i, "name": f"row {i}"} for i in range(10_000)]
CONTEXT: dict[str, Any] = {"rows": ROWS, "s": "x" * 1000, "workload": {"n": 3}, "ctx": {}}

ITERATIONS = "NOETL_TEMPLATE_MAX_ITERATIONS"
OUTPUT = "NOETL_TEMPLATE_MAX_OUTPUT_BYTES"
INT_BITS = "NOETL_TEMPLATE_MAX_INT_BITS"


def refused(template: Any, *, limits: TemplateLimits = NO_CLOCK, condition: bool = False) -> str:
    with pytest.raises(TemplateBudgetError) as info:
        if condition:
            evaluate(template, CONTEXT, limits)
        else:
            render(template, CONTEXT, limits)
    return info.value.message


@pytest.mark.parametrize(
    "condition",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}true",
        "{{ range(100000) | map('string') | join | length > 0 and range(100000) | list | length > 0 }}",
        "range(100000) | select('odd') | list | length > range(100000) | reject('odd') | list | length",
    ],
)
def test_nested_ranges_in_an_arc_condition_are_refused_by_the_iteration_limit(condition: str) -> None:
    message = refused(condition, condition=True)
    assert "more than 100000 loop iterations" in message and ITERATIONS in message
    assert message.startswith(("template ", "condition ")) and "failed" in message


def test_nested_loops_over_context_lists_are_counted() -> None:
    message = refused("{% for a in rows %}{% for b in rows %}{{ a.id }}{% endfor %}{% endfor %}")
    assert ITERATIONS in message


def test_a_range_longer_than_the_whole_budget_is_refused_when_made() -> None:
    assert ITERATIONS in refused("{{ range(10**9) | length }}")


# Each would build 10**11 bytes or more: without the check before building, Python fails
# with a MemoryError (or a ValueError) instead of the budget's error.
@pytest.mark.parametrize(
    "template",
    [
        # methods
        "{{ 'x'.ljust(10**12) }}",
        "{{ 'x'.center(10**12) }}",
        "{{ '1'.zfill(10**12) }}",
        "{{ ('\t' * 1000).expandtabs(10**9) }}",
        "{{ ('x' * 1000000).replace('x', 'y' * 1000000) }}",
        "{{ ('x' * 1000000).replace('', 'y' * 1000000) }}",
        "{{ ('x' * 1000000).join(range(100000)) }}",
        "{{ ('x' * 1000000).translate({120: 'y' * 1000000}) }}",
        "{{ '{:>999999999999}'.format(1) }}",
        "{{ ('{0}' * 100000).format(s * 1000) }}",
        "{{ (1).to_bytes(10**12, 'big') }}",
        # filters
        "{{ 'x' | center(10**12) }}",
        "{{ ('a\n' * 100000) | indent(10**7) }}",
        "{{ ('a ' * 100000) | wordwrap(1, wrapstring='x' * 1000000) }}",
        "{{ ('x' * 1000000) | replace('x', 'y' * 1000000) }}",
        "{{ range(100000) | join('x' * 1000000) }}",
        "{{ ([s * 1000] * 100000) | join(',') }}",
        "{{ '%999999999999d' | format(1) }}",
        # operators
        "{{ '%999999999999d' % 1 }}",
        "{{ '%.99999999999f' % 1.5 }}",
        "{{ ('%999999d' * 100000) % ((1,) * 100000) }}",
        "{{ 'x' * 10**12 }}",
        "{{ [1] * 10**12 }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    ],
)
def test_string_amplification_is_refused_before_the_string_is_built(template: str) -> None:
    message = refused(template)
    assert OUTPUT in message and "would be larger than 1048576 bytes" in message


def test_strings_built_in_a_loop_are_bounded_together() -> None:
    template = "{% set l = [] %}{% for i in range(100000) %}{% set _ = l.append(s * 1000) %}{% endfor %}"
    assert "add up to more than" in refused(template)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{{ s }}{% endfor %}",
        "{% for i in range(100000) %}" + "y" * 100 + "{% endfor %}",
        "{% macro m() %}{% for i in range(2000) %}{{ s }}{% endfor %}{% endmacro %}{{ m() | length }}",
    ],
)
def test_rendered_output_is_bounded_before_it_is_joined(template: str) -> None:
    assert f"output larger than 1048576 bytes ({OUTPUT})" in refused(template)


@pytest.mark.parametrize(
    "template",
    [
        "{% set a = ['x' * 100000] * 100 %}list: {{ [a] * 100 }}",
        "{% set a = ['x' * 100000] * 100 %}{{ [a, a] | string }}",
        "{% set a = ['x' * 100000] * 100 %}{{ '%s' % [a, a] }}",
        "{% set a = ['x' * 100000] * 100 %}{{ 'a' ~ a }}",
        "{% set a = ['x' * 100000] * 100 %}{{ a | tojson }}",
    ],
)
def test_a_container_holding_one_large_string_many_times_is_measured_before_it_prints(template: str) -> None:
    assert OUTPUT in refused(template)


def test_a_native_value_holding_the_same_data_many_times_is_refused() -> None:
    assert "holds the same data many times" in refused("{{ ['x' * 100000] * 100 }}")
    # the same data once is passed through whatever its size
    assert render("{{ rows }}", CONTEXT, NO_CLOCK) == ROWS


@pytest.mark.parametrize(
    "template",
    [
        "{{ (10**9999)**9999 }}",
        "{{ 2 ** 100000000 }}",
        "{% set ns = namespace(n=3) %}{% for i in range(100) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    ],
)
def test_integer_towers_are_refused_before_they_are_computed(template: str) -> None:
    message = refused(template)
    assert INT_BITS in message and "larger than 4096 bits" in message


@pytest.mark.parametrize(
    "template",
    [
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "{% set l = [] %}{% set _ = l.append(l) %}{% for x in l recursive %}{{ loop(x) }}{% endfor %}",
    ],
)
def test_recursion_is_bounded_in_depth(template: str) -> None:
    assert "nested deeper than 50" in refused(template)


def test_wide_macro_recursion_is_bounded_by_the_calls_it_makes() -> None:
    template = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(30) }}"
    assert ITERATIONS in refused(template)


def test_slow_work_the_counters_miss_is_stopped_by_the_deadline() -> None:
    # each `in` scans a million items in C without a hook; the deadline stops the loop
    context = {"big": list(range(1_000_000))}
    with pytest.raises(TemplateBudgetError, match=r"took longer than 0\.05 s \(NOETL_TEMPLATE_MAX_SECONDS\)"):
        template = "{% for i in range(50000) %}{% if -1 in big %}x{% endif %}{% endfor %}"
        render(template, context, TemplateLimits(max_seconds=0.05))


def test_the_error_names_where_the_template_sits_in_the_value() -> None:
    value = {"headers": {"a": "{{ 1 }}", "b": ["ok", "{{ 'x' * 10**9 }}"]}}
    with pytest.raises(TemplateBudgetError) as info:
        render(value, CONTEXT)
    assert info.value.field == "headers.b[1]"
    assert info.value.at("args") == "args.headers.b[1]"
    assert info.value.expression == "{{ 'x' * 10**9 }}"
    with pytest.raises(TemplateError) as plain:
        render(["{{ nowhere }}"], CONTEXT)
    assert plain.value.at("config") == "config[0]"


def test_limits_are_per_call_and_configurable() -> None:
    loop = "{% for r in rows %}{{ r.id }}{% endfor %}"
    for _ in range(15):  # 15 times 10,000 items: each call has its own 100,000
        assert render(loop, CONTEXT).startswith("0123")
    assert ITERATIONS in refused(loop, limits=TemplateLimits(max_iterations=9_999))
    assert "larger than 1024 bytes" in refused("{{ s ~ s }}", limits=TemplateLimits(max_output_bytes=1024))


def test_ordinary_templates_render_as_before() -> None:
    rows = ROWS[:1000]
    context = {**CONTEXT, "rows": rows, "tree": [{"n": 1, "kids": [{"n": 2, "kids": []}]}]}
    assert render("{% for r in rows %}{{ r.id }},{% endfor %}", context) == "".join(
        f"{i}," for i in range(1000)
    )
    assert (
        render("{% for r in rows %}{% if loop.last %}{{ loop.length }}{% endif %}{% endfor %}", context)
        == "1000"
    )
    assert render("{{ rows | map(attribute='id') | sum }}", context) == sum(range(1000))
    assert render("{{ rows[:3] | join(', ', attribute='name') }}", context) == "row 0, row 1, row 2"
    assert render("{{ rows | selectattr('id', 'lt', 2) | map(attribute='id') | list }}", context) == [0, 1]
    assert render("{{ (rows | groupby('id') | list)[1].grouper }}", context) == 1
    assert render("{% for t in tree recursive %}{{ t.n }}{{ loop(t.kids) }}{% endfor %}", context) == "12"
    assert (
        render("{% macro m(x) %}<{{ x }}{{ caller() }}>{% endmacro %}{% call m(1) %}c{% endcall %}", {})
        == "<1c>"
    )
    assert (
        render("{{ '%s-%03d' % ('a', 7) }} {{ '{:>4}|{}'.format(1, 'b') }} {{ 'a' ~ 2 }}", {})
        == "a-007    1|b a2"
    )
    appended = "{% set ns = namespace(l=[]) %}{% for i in range(3) %}{% set _ = ns.l.append(i) %}{% endfor %}"
    assert render(appended + "{{ ns.l }}", {}) == "[0, 1, 2]"
    assert render("{{ 2 ** 64 * 3 + 1 }}", {}) == 2**64 * 3 + 1
    updated = (
        "{% set d = dict({'a': 1}, b=2) %}{% set _ = d.update({'c': 3}) %}{% set _ = d.update([('e', 5)]) %}"
    )
    assert render(updated + "{{ d }}", {}) == "{'a': 1, 'b': 2, 'c': 3, 'e': 5}"
    assert (
        render("{{ {}.fromkeys(['x', 'y'], 0) }}|{{ 'a-b'.split('-') | join('+') }}", {})
        == "{'x': 0, 'y': 0}|a+b"
    )
    assert (
        render("{{ workload.n * 'ab' }}|{{ [1, 2] + [3] }}|{{ 'x' | center(5) }}", CONTEXT)
        == "ababab|[1, 2, 3]|  x  "
    )
    assert render("{{ {'b': 1, 'a': [1, 2]} | tojson }}", {}) == '{"a": [1, 2], "b": 1}'
    assert evaluate("rows | length == 1000 and rows[0].id == 0", context)


def test_compiling_does_not_build_a_constant_bomb() -> None:
    # compiling folds constant expressions by running their filters: under a budget too, so
    # the gigabyte is neither built at register time nor baked into the compiled template
    check_syntax("{{ 'y' | center(1000000000) }}")
    assert "a string of 1000000000 bytes" in refused("{{ 'y' | center(1000000000) }}")
    # and a fold refused at compile time is not charged to a render that never reaches it
    assert render("{{ ('z' | center(1000000000)) if false else 1 }}", {}) == 1
    assert render("a{{ ('z' | center(1000000000)) if false else 1 }}", {}) == "a1"


def test_limits_read_from_the_environment() -> None:
    env = {
        "NOETL_TEMPLATE_MAX_ITERATIONS": "500",
        "NOETL_TEMPLATE_MAX_OUTPUT_BYTES": "65536",
        "NOETL_TEMPLATE_MAX_INT_BITS": "128",
        "NOETL_TEMPLATE_MAX_SECONDS": "2.5",
    }
    assert TemplateLimits.from_env(env) == TemplateLimits(
        max_iterations=500, max_output_bytes=65536, max_int_bits=128, max_seconds=2.5
    )
    assert TemplateLimits.from_env({}) == TemplateLimits()
    with pytest.raises(ConfigError, match="NOETL_TEMPLATE_MAX_SECONDS"):
        TemplateLimits.from_env({"NOETL_TEMPLATE_MAX_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="NOETL_TEMPLATE_MAX_ITERATIONS"):
        TemplateLimits.from_env({"NOETL_TEMPLATE_MAX_ITERATIONS": "0"})
