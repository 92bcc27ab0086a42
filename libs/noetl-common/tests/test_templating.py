"""Template rendering: native types, key-before-attribute, the undefined rule, conditions."""

from __future__ import annotations

from typing import Any

import pytest
from noetl_common.templating import TemplateError, check_syntax, evaluate, has_template, names_read, render

CONTEXT: dict[str, Any] = {
    "message": "hi",
    "workload": {"message": "hi", "n": 3, "nested": {"a": 1}},
    "start": {"items": [1, 2], "n": 1, "values": "v"},
    "wrapped": {"result": {"n": 9}},
    "skipped": None,
    "ctx": {"count": 2},
    "args": {},
    "execution_id": 42,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ workload.n }}", 3),
        ("{{ start.items }}", [1, 2]),
        ("{{ start.values }}", "v"),
        ("  {{ start }}\n", {"items": [1, 2], "n": 1, "values": "v"}),
        ("{{ start.result.n }}", 1),
        ("{{ wrapped.result.n }}", 9),
        ("{{ execution_id }}", 42),
        ("{{ ctx.count * 2 }}", 4),
        ("{{ [start.n, ctx.count] }}", [1, 2]),
        ("{{ workload.nested | default({}) }}", {"a": 1}),
        ("{{ workload.absent | default('d') }}", "d"),
        ("{{ unknown_name | default(0) }}", 0),
        ("{{ message }}", "hi"),
    ],
)
def test_single_expression_keeps_native_type(template: str, expected: Any) -> None:
    assert render(template, CONTEXT) == expected


def test_mixed_strings_render_to_text() -> None:
    assert render("{{ execution_id }}:{{ start.n }}", CONTEXT) == "42:1"
    assert render("n={{ workload.n }}", CONTEXT) == "n=3"
    assert render("{{ start.n }}{{ start.n }}", CONTEXT) == "11"


def test_render_recurses_and_passes_other_values_through() -> None:
    value = {"a": ["{{ start.n }}", 5, None, {"b": "{{ message }}"}], "c": True, "d": "plain"}
    assert render(value, CONTEXT) == {"a": [1, 5, None, {"b": "hi"}], "c": True, "d": "plain"}


@pytest.mark.parametrize(
    "template",
    [
        "{{ ctx.missing }}",
        "{{ start.missing }}",
        "{{ skipped }}",
        "{{ skipped.category }}",
        "{{ skipped.a.b.c }}",
    ],
)
def test_run_produced_data_that_is_missing_is_none(template: str) -> None:
    assert render(template, CONTEXT) is None


def test_run_produced_missing_data_renders_empty_inside_text_and_false_in_tests() -> None:
    assert render("x{{ ctx.missing }}y", CONTEXT) == "xy"
    assert render("{{ skipped.category if skipped else 'low' }}", CONTEXT) == "low"
    assert render("{{ ctx.missing == none }}", CONTEXT) is True


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{{ job.uuid }}", "job"),
        ("{{ workload.absent }}", "absent"),
        ("prefix {{ nowhere }}", "nowhere"),
        ("{{ nowhere if true else 1 }}", "nowhere"),
    ],
)
def test_names_fixed_before_the_run_raise(template: str, needle: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, CONTEXT)
    assert needle in str(info.value)
    assert info.value.expression == template


def test_sandbox_blocks_unsafe_attributes() -> None:
    with pytest.raises(TemplateError):
        render("{{ start.__class__.__mro__[1].__subclasses__() }}", CONTEXT)


def test_syntax_errors_name_the_template() -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        check_syntax("{{ a + }}")
    with pytest.raises(TemplateError, match="does not parse"):
        check_syntax("x {% if %}")
    check_syntax("{{ a.b | default(1) }}")
    check_syntax("a > 1 and b")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("{{ start.n == 1 }}", True),
        ("start.n == 1", True),
        ("{{ start.n > 5 }}", False),
        (True, True),
        (False, False),
        ("{{ 'false' }}", False),
        ("{{ ctx.missing }}", False),
        ("{{ ctx.missing in [500, 502] }}", False),
        ("{{ start.n }} and {{ ctx.count }}", True),
        ("{{ ctx.missing == true }}", False),
    ],
)
def test_evaluate(expr: Any, expected: bool) -> None:
    assert evaluate(expr, CONTEXT) is expected


def test_evaluate_raises_on_fixed_undefined_names() -> None:
    with pytest.raises(TemplateError, match="threshold"):
        evaluate("{{ start.n > threshold }}", CONTEXT)
    with pytest.raises(TemplateError, match="threshold"):
        evaluate("threshold > 1", CONTEXT)


def test_has_template() -> None:
    assert has_template("a {{ b }}") and has_template("{% if x %}{% endif %}")
    assert not has_template("plain { text }")


def test_whitespace_control_markers_still_give_native_values() -> None:
    assert render("{{- start.items -}}", CONTEXT) == [1, 2]
    assert render("{{ -start.n }}", CONTEXT) == -1


def test_keys_shadow_dict_methods_but_methods_remain_without_a_key() -> None:
    context = {"r": {"keys": 1, "items": [3], "n": 2}}
    assert render("{{ r.keys }}", context) == 1
    assert render("{{ r.items }}", context) == [3]
    assert render("{{ r.get('n') }}", context) == 2
    assert render("{{ r.values() | list | length }}", context) == 3


@pytest.mark.parametrize("template", ["{{ 'x' * 10**9 }}", "{{ [1] * 100000000 }}", "{{ 10 ** 100000 }}"])
def test_expressions_that_would_exhaust_memory_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, {})


def test_ordinary_arithmetic_still_works() -> None:
    assert render("{{ 'ab' * 3 }}", {}) == "ababab"
    assert render("{{ 2 ** 10 }}", {}) == 1024
    assert render("{{ 1.5 * 2 }}", {}) == 3.0


def test_names_read_are_enough_to_render_and_evaluate_the_same() -> None:
    config = {
        "url": "{{ base }}/{{ start.id }}",
        "body": ["{% for row in rows %}{{ row }}{% endfor %}", {"deep": "{% set k = 1 %}{{ k + n }}"}],
        "retry": [{"when": "response.more and page < workload.max", "plain": "not a condition at all"}],
        "code": "result = x * 2",
    }
    read = names_read(config)
    assert read is not None
    assert {"base", "start", "rows", "n", "response", "page", "workload"} <= read
    assert not {"k", "row", "unused", "x"} & read
    everything = {
        "base": "http://h", "start": {"id": 7}, "rows": [1, 2], "n": 1, "workload": {"max": 3},
        "response": {"more": True}, "page": 1, "unused": list(range(1000)),
    }
    only = {name: value for name, value in everything.items() if name in read}
    assert render(config, only) == render(config, everything)
    condition = config["retry"][0]["when"]  # type: ignore[index]
    assert evaluate(condition, only) == evaluate(condition, everything) is True


def test_names_read_gives_up_on_a_template_that_does_not_parse() -> None:
    assert names_read({"a": "{{ x", "b": "{{ y }}"}) is None
    assert names_read({"a": "plain", "b": 3, "c": None}) == frozenset({"plain"})
