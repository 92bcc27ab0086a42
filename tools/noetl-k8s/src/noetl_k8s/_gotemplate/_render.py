"""Executing parsed templates against values, and :class:`Chart`, a chart's templates parsed once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._functions import FUNCTIONS
from ._parse import Action, If, Node, Range, Text, parse
from ._values import TemplateError, go_str, helm_values, truthy


class Renderer:
    """Executes parsed templates against values, with the chart's named templates."""

    def __init__(self, defines: dict[str, list[Node]]) -> None:
        self.defines = defines

    def render(self, nodes: list[Node], dot: Any) -> str:
        return self._nodes(nodes, dot, [{"$": dot}])

    def _nodes(self, nodes: list[Node], dot: Any, scopes: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Action):
                value, declared = self._pipeline(node.tokens, dot, scopes)
                if not declared:
                    out.append(go_str(value))
            elif isinstance(node, If):
                cond, _ = self._pipeline(node.cond, dot, scopes)
                branch = node.then if truthy(cond) else node.otherwise
                out.append(self._nodes(branch, dot, [*scopes, {}]))
            elif isinstance(node, Range):
                source, _ = self._pipeline(node.source, dot, scopes)
                items: list[tuple[Any, Any]]
                if isinstance(source, dict):
                    items = [(k, source[k]) for k in sorted(source)]
                elif isinstance(source, list):
                    items = list(enumerate(source))
                elif source is None:
                    items = []
                else:
                    raise TemplateError(f"cannot range over {type(source).__name__}")
                for key, value in items:
                    scope: dict[str, Any] = {}
                    if len(node.decl) == 1:
                        scope[node.decl[0]] = value
                    elif len(node.decl) == 2:
                        scope[node.decl[0]], scope[node.decl[1]] = key, value
                    out.append(self._nodes(node.body, value, [*scopes, scope]))
        return "".join(out)

    def _pipeline(
        self, tokens: list[tuple[str, str]], dot: Any, scopes: list[dict[str, Any]]
    ) -> tuple[Any, bool]:
        """Value of a pipeline, and whether it was a declaration (which prints nothing)."""
        if len(tokens) >= 2 and tokens[0][0] == "var" and tokens[1][0] == "assign":
            name, op = tokens[0][1], tokens[1][1]
            value = self._commands(tokens[2:], dot, scopes)
            if op == ":=":
                scopes[-1][name] = value
            else:
                for scope in reversed(scopes):
                    if name in scope:
                        scope[name] = value
                        break
                else:
                    raise TemplateError(f"assignment to undeclared variable {name}")
            return value, True
        return self._commands(tokens, dot, scopes), False

    def _commands(self, tokens: list[tuple[str, str]], dot: Any, scopes: list[dict[str, Any]]) -> Any:
        commands: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for token in tokens:
            if token == ("punct", "("):
                depth += 1
            elif token == ("punct", ")"):
                depth -= 1
            if token == ("punct", "|") and depth == 0:
                commands.append([])
            else:
                commands[-1].append(token)
        if depth != 0:
            raise TemplateError("unbalanced parentheses")
        value: Any = _NOTHING
        for command in commands:
            value = self._command(command, dot, scopes, value)
        return value

    def _command(
        self, tokens: list[tuple[str, str]], dot: Any, scopes: list[dict[str, Any]], piped: Any
    ) -> Any:
        if not tokens:
            raise TemplateError("empty command in pipeline")
        args = self._operands(tokens, dot, scopes)
        head_kind, head = tokens[0]
        if head_kind == "ident" and head not in ("true", "false", "nil"):
            if piped is not _NOTHING:
                args = [*args[1:], piped]
            else:
                args = args[1:]
            if head == "include":
                name, context = args
                if name not in self.defines:
                    raise TemplateError(f"include of undefined template {name!r}")
                return self._nodes(self.defines[name], context, [{"$": context}])
            if head not in FUNCTIONS:
                raise TemplateError(f"unknown function {head!r}")
            return FUNCTIONS[head](*args)
        if len(args) != 1 or piped is not _NOTHING:
            raise TemplateError(f"cannot call a non-function: {tokens}")
        return args[0]

    def _operands(self, tokens: list[tuple[str, str]], dot: Any, scopes: list[dict[str, Any]]) -> list[Any]:
        values: list[Any] = []
        i = 0
        while i < len(tokens):
            kind, text = tokens[i]
            if kind == "punct" and text == "(":
                depth, j = 1, i + 1
                while depth:
                    if tokens[j] == ("punct", "("):
                        depth += 1
                    elif tokens[j] == ("punct", ")"):
                        depth -= 1
                    j += 1
                values.append(self._commands(tokens[i + 1 : j - 1], dot, scopes))
                i = j
                continue
            if kind == "str":
                values.append(text[1:-1].encode().decode("unicode_escape"))
            elif kind == "num":
                values.append(float(text) if "." in text else int(text))
            elif kind == "ident":
                values.append({"true": True, "false": False, "nil": None}.get(text, text))
            elif kind == "field":
                values.append(_walk(dot, text))
            elif kind == "var":
                name, _, rest = text.partition(".")
                for scope in reversed(scopes):
                    if name in scope:
                        values.append(_walk(scope[name], "." + rest if rest else "."))
                        break
                else:
                    raise TemplateError(f"undefined variable {name}")
            else:
                raise TemplateError(f"unexpected {text!r}")
            i += 1
        return values


_NOTHING = object()


def _walk(value: Any, path: str) -> Any:
    for part in [p for p in path.split(".") if p]:
        if not isinstance(value, dict) or part not in value:
            raise TemplateError(f"no key {part!r} in path {path!r}")
        value = value[part]
    return value


@dataclass
class Chart:
    """A chart's templates parsed once; :meth:`render` gives file name → output text."""

    files: dict[str, list[Node]]
    renderer: Renderer

    @classmethod
    def load(cls, templates: dict[str, str]) -> Chart:
        files: dict[str, list[Node]] = {}
        defines: dict[str, list[Node]] = {}
        for name, text in sorted(templates.items()):
            nodes, named = parse(text)
            defines.update(named)
            if not name.startswith("_"):
                files[name] = nodes
        return cls(files=files, renderer=Renderer(defines))

    def render(self, values: dict[str, Any], *, namespace: str, release: str = "noetl") -> dict[str, str]:
        top = {
            "Values": helm_values(values),
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
            "Chart": {"Name": "noetl", "Version": "0.1.0"},
        }
        return {name: self.renderer.render(nodes, top) for name, nodes in self.files.items()}
