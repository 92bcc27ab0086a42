"""The Go-template interpreter that executes the chart follows Go/Helm where the chart relies on it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from noetl_k8s._gotemplate import Chart, TemplateError, go_str, helm_values


def _render(template: str, values: Mapping[str, object] | None = None, helpers: str = "") -> str:
    chart = Chart.load({"t.yaml": template, "_helpers.tpl": helpers})
    return chart.render(dict(values or {}), namespace="ns")["t.yaml"]


def test_trim_markers_eat_whitespace_on_their_side_only() -> None:
    assert _render("a  \n  {{- 1 }}  \n  b") == "a1  \n  b"
    assert _render("a  {{ 1 -}}  \n  b") == "a  1b"


def test_if_else_if_else_chain() -> None:
    template = "{{ if eq .Values.x 1.0 }}one{{ else if eq .Values.x 2.0 }}two{{ else }}many{{ end }}!"
    assert [_render(template, {"x": x}) for x in (1, 2, 3)] == ["one!", "two!", "many!"]


def test_nested_if_inside_else_if_closes_correctly() -> None:
    template = "{{ if .Values.a }}A{{ else if .Values.b }}{{ if .Values.c }}C{{ end }}B{{ end }}."
    assert _render(template, {"a": False, "b": True, "c": True}) == "CB."


def test_range_over_a_map_is_in_sorted_key_order_and_binds_key_and_value() -> None:
    template = "{{ range $k, $v := .Values.m }}{{ $k }}={{ $v.n }};{{ end }}"
    assert _render(template, {"m": {"b": {"n": 2}, "a": {"n": 1}}}) == "a=1;b=2;"


def test_variables_are_scoped_and_assignment_updates_the_outer_one() -> None:
    template = (
        '{{- $xs := list "a" }}{{ range $k, $v := .Values.m }}{{ $xs = append $xs $k }}{{ end }}'
        "{{ range $xs }}{{ . }}{{ end }}"
    )
    assert _render(template, {"m": {"y": 1, "x": 2}}) == "axy"
    with pytest.raises(TemplateError, match="undefined variable"):
        _render("{{ if true }}{{ $v := 1 }}{{ end }}{{ $v }}")


def test_include_passes_its_argument_as_dot_and_dollar() -> None:
    helpers = '{{- define "x" -}}{{ .name }}/{{ $.name }}{{- end }}'
    assert _render('{{ include "x" (dict "name" "n") | nindent 2 }}', helpers=helpers) == "\n  n/n"


def test_numbers_from_values_print_like_helm() -> None:
    values = {"small": 2, "float": 5.0, "big": 1000000, "odd": 1234567}
    text = "{{ .Values.small }} {{ .Values.float | quote }} {{ .Values.big }} {{ .Values.big | int }} {{ .Values.odd }}"
    assert _render(text, values) == '2 "5" 1e+06 1000000 1.234567e+06'
    assert go_str(helm_values(102400)) == "102400"


def test_strictness_unknown_function_missing_key_bad_blocks() -> None:
    with pytest.raises(TemplateError, match="unknown function 'toYml'"):
        _render("{{ .Values.a | toYml }}", {"a": 1})
    with pytest.raises(TemplateError, match="no key 'b'"):
        _render("{{ .Values.b }}", {"a": 1})
    with pytest.raises(TemplateError, match="unclosed"):
        _render("{{ if true }}x")
    with pytest.raises(TemplateError, match="'end' without"):
        _render("x{{ end }}")
    with pytest.raises(TemplateError, match="not supported"):
        _render("{{ with .Values }}x{{ end }}")


def test_sprig_helpers_used_by_the_chart() -> None:
    assert (
        _render('{{ ternary "y" "n" (contains "CHANGE" (toString .Values.m)) }}', {"m": {"k": "CHANGE-ME"}})
        == "y"
    )
    assert _render('{{ printf "%s-%s" "a" "b" | trunc 3 }}') == "a-b"
    assert _render('{{ trimSuffix "/" "reg/" }}/{{ add 45.0 15 }}') == "reg/60"
    assert _render('{{ "a\\"b" | quote }}') == '"a\\"b"'
    assert _render("{{ upper .Values.p }}", {"p": "shared"}) == "SHARED"
    assert (
        _render('{{ join "," .Values.xs | quote }}', {"xs": ["10.0.0.0/8", "fd00::/8"]})
        == '"10.0.0.0/8,fd00::/8"'
    )
    assert _render('{{ join "," .Values.xs | quote }}', {"xs": []}) == '""'


def test_to_yaml_prints_sorted_block_yaml_with_integers_as_helm_does() -> None:
    values = {"peers": [{"podSelector": {"matchLabels": {"b": "2", "a": "1"}}, "port": 8082}]}
    text = _render("x:\n{{- toYaml .Values.peers | nindent 2 }}\ny: 1", values)
    assert (
        text
        == "x:\n  - podSelector:\n      matchLabels:\n        a: '1'\n        b: '2'\n    port: 8082\ny: 1"
    )
    assert _render("{{ toYaml .Values.xs }}|{{ toYaml .Values.s }}", {"xs": [], "s": "a"}) == "[]|a"
