"""A small interpreter for the subset of Go templates (and Helm/Sprig functions) the chart uses.

There is no helm binary on the build machines. This executes ``charts/noetl/templates`` so
the tests can compare the chart's real output with the renderer's. It follows Go's
``text/template`` semantics where the chart depends on them — trim markers, ``define`` /
``include`` (``$`` is the argument), ``if``/``else if``/``else``, ``range`` over maps in
sorted key order and over lists, ``:=`` / ``=`` scoping, pipelines, and numbers from values
as float64 printed like Go's ``%v`` — and it is stricter than Helm elsewhere: a missing
key, an unknown function or a malformed action is an error, never ``<no value>``.

It is not Helm: no ``lookup``, ``tpl``, capabilities or hooks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import yaml


class TemplateError(ValueError):
    """The template is malformed or uses something this interpreter does not support."""


# --- values as Helm sees them ---------------------------------------------------------


def helm_values(value: Any) -> Any:
    """Values the way Helm holds them: every YAML number becomes a float64."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): helm_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [helm_values(v) for v in value]
    raise TemplateError(f"unsupported value type {type(value).__name__}")


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, ``e`` form when the exponent is < -4 or >= 6.

    That is why Helm prints a value of 1000000 as ``1e+06`` unless the chart pipes it
    through ``int``.
    """
    if value == 0:
        return "0"
    _, digits_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digits_tuple))
    exp10 = len(digits) + exponent - 1
    prefix = "-" if value < 0 else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if exp10 >= 0 else '-'}{abs(exp10):02d}"
    return prefix + format(Decimal(repr(abs(value))).normalize(), "f")


def go_str(value: Any) -> str:
    """How ``{{ value }}`` prints."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float | str | list | dict | tuple):
        return bool(value)
    return True


# --- functions ------------------------------------------------------------------------


def _indent(n: Any, text: Any) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line for line in str(text).split("\n"))


def _printf(fmt: str, *args: Any) -> str:
    parts = iter(args)

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        value = next(parts)
        if match.group(0) == "%d":
            return str(int(value))
        return go_str(value)

    return re.sub(r"%%|%[sdv]", sub, fmt)


def _plain(value: Any) -> Any:
    """Values as YAML data again: float64s that hold integers print as integers (as in Helm)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _to_yaml(value: Any) -> str:
    """Helm's ``toYaml``: sorted keys, block style, no trailing newline."""
    text = yaml.safe_dump(_plain(value), sort_keys=True, default_flow_style=False)
    return text.removesuffix("\n...\n").rstrip("\n")


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value) if value.strip().lstrip("-").isdigit() else 0
    return int(value or 0)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quote": lambda *v: " ".join('"' + go_str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in v),
    "nindent": lambda n, text: "\n" + _indent(n, text),
    "indent": _indent,
    "printf": _printf,
    "trunc": lambda n, s: str(s)[: int(n)] if int(n) >= 0 else str(s)[int(n) :],
    "trimSuffix": lambda suffix, s: str(s)[: -len(suffix)] if suffix and str(s).endswith(suffix) else str(s),
    "dict": lambda *kv: {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)},
    "list": lambda *items: list(items),
    "append": lambda items, item: [*items, item],
    "ternary": lambda a, b, cond: a if _truthy(cond) else b,
    "contains": lambda sub, s: str(sub) in str(s),
    "toString": go_str,
    "add": lambda *nums: sum(_to_int(n) for n in nums),
    "int": _to_int,
    "not": lambda v: not _truthy(v),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "and": lambda *vs: next((v for v in vs if not _truthy(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if _truthy(v)), vs[-1]),
    "default": lambda d, v=None: v if _truthy(v) else d,
    "empty": lambda v: not _truthy(v),
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "join": lambda sep, items: str(sep).join(go_str(x) for x in items or []),
    "toYaml": _to_yaml,
    "replace": lambda old, new, s: str(s).replace(old, new),
    "index": lambda d, *keys: _index(d, keys),
    "fail": lambda message: _fail(message),
}


class ChartFailed(TemplateError):
    """The chart called ``fail``: Helm would refuse to render with these values."""


def _fail(message: Any) -> Any:
    raise ChartFailed(go_str(message))


def _index(value: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


# --- lexing and parsing ---------------------------------------------------------------

_ACTION = re.compile(r"{{(-?)(\s*)(.*?)(\s*)(-?)}}", re.S)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:\\.|[^"\\])*")
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<assign>:=|=)
    | (?P<punct>[|(),])
    | (?P<var>\$[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*|\$(?:\.[A-Za-z_]\w*)*)
    | (?P<field>(?:\.[A-Za-z_]\w*)+|\.)
    | (?P<ident>[A-Za-z_]\w*)
    )""",
    re.X,
)


@dataclass
class _Node:
    pass


@dataclass
class _Text(_Node):
    text: str


@dataclass
class _Action(_Node):
    tokens: list[tuple[str, str]]


@dataclass
class _If(_Node):
    cond: list[tuple[str, str]]
    then: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)


@dataclass
class _Range(_Node):
    decl: list[str]
    source: list[tuple[str, str]]
    body: list[_Node] = field(default_factory=list)


def _tokenize(body: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    body = body.strip()
    while pos < len(body):
        match = _TOKEN.match(body, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f"cannot parse action at {body[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _segments(text: str) -> Iterator[tuple[str, str]]:
    """("text", s) and ("action", body) pieces with the trim markers applied."""
    pieces: list[list[str]] = []
    pos = 0
    for match in _ACTION.finditer(text):
        pieces.append(["text", text[pos : match.start()]])
        if match.group(1):
            pieces[-1][1] = pieces[-1][1].rstrip(" \t\r\n")
        pieces.append(["action", match.group(3), match.group(5)])
        pos = match.end()
    pieces.append(["text", text[pos:]])
    trim_next = False
    for piece in pieces:
        if piece[0] == "text":
            chunk = piece[1].lstrip(" \t\r\n") if trim_next else piece[1]
            trim_next = False
            if chunk:
                yield "text", chunk
        else:
            trim_next = bool(piece[2])
            if not piece[1].startswith("/*"):
                yield "action", piece[1]


def parse(text: str) -> tuple[list[_Node], dict[str, list[_Node]]]:
    """Top-level nodes and the named templates (``define``) of one file."""
    defines: dict[str, list[_Node]] = {}
    root: list[_Node] = []
    # Stack of (container list, owner node or define name, kind).
    stack: list[tuple[list[_Node], Any, str]] = [(root, None, "root")]
    for kind, body in _segments(text):
        target = stack[-1][0]
        if kind == "text":
            target.append(_Text(body))
            continue
        tokens = _tokenize(body)
        if not tokens:
            raise TemplateError("empty action")
        head = tokens[0][1] if tokens[0][0] == "ident" else ""
        if head == "define":
            name = tokens[1][1][1:-1]
            defines[name] = []
            stack.append((defines[name], name, "define"))
        elif head == "if":
            node = _If(cond=tokens[1:])
            target.append(node)
            stack.append((node.then, node, "if"))
        elif head == "else":
            _, owner, block = stack.pop()
            if block not in ("if", "elseif"):
                raise TemplateError("'else' outside an if block")
            assert isinstance(owner, _If)
            if len(tokens) > 1 and tokens[1] == ("ident", "if"):
                nested = _If(cond=tokens[2:])
                owner.otherwise.append(nested)
                # An else-if shares the end of its if: keep a marker to pop twice.
                stack.append((owner.otherwise, owner, "chain"))
                stack.append((nested.then, nested, "elseif"))
            else:
                stack.append((owner.otherwise, owner, "else"))
        elif head == "range":
            rest = tokens[1:]
            decl: list[str] = []
            if ("assign", ":=") in rest:
                split = rest.index(("assign", ":="))
                decl = [value for kind_, value in rest[:split] if kind_ == "var"]
                rest = rest[split + 1 :]
            node_r = _Range(decl=decl, source=rest)
            target.append(node_r)
            stack.append((node_r.body, node_r, "range"))
        elif head == "end":
            if len(stack) == 1:
                raise TemplateError("'end' without an open block")
            stack.pop()
            # The one `end` of an if/else-if chain also closes the chain's links.
            while stack[-1][2] == "chain":
                stack.pop()
        elif head in ("with", "block", "template"):
            raise TemplateError(f"'{head}' is not supported by this interpreter")
        else:
            target.append(_Action(tokens))
    if len(stack) != 1:
        raise TemplateError(f"unclosed block(s): {[b for _, _, b in stack[1:]]}")
    return root, defines


# --- evaluation -----------------------------------------------------------------------


class Renderer:
    """Executes parsed templates against values, with the chart's named templates."""

    def __init__(self, defines: dict[str, list[_Node]]) -> None:
        self.defines = defines

    def render(self, nodes: list[_Node], dot: Any) -> str:
        return self._nodes(nodes, dot, [{"$": dot}])

    def _nodes(self, nodes: list[_Node], dot: Any, scopes: list[dict[str, Any]]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                value, declared = self._pipeline(node.tokens, dot, scopes)
                if not declared:
                    out.append(go_str(value))
            elif isinstance(node, _If):
                cond, _ = self._pipeline(node.cond, dot, scopes)
                branch = node.then if _truthy(cond) else node.otherwise
                out.append(self._nodes(branch, dot, [*scopes, {}]))
            elif isinstance(node, _Range):
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

    files: dict[str, list[_Node]]
    renderer: Renderer

    @classmethod
    def load(cls, templates: dict[str, str]) -> Chart:
        files: dict[str, list[_Node]] = {}
        defines: dict[str, list[_Node]] = {}
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
