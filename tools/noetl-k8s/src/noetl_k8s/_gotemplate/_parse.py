"""Template text to nodes: trim markers, actions tokenized, ``define`` / ``if`` / ``range`` blocks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._values import TemplateError

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
class Node:
    pass


@dataclass
class Text(Node):
    text: str


@dataclass
class Action(Node):
    tokens: list[tuple[str, str]]


@dataclass
class If(Node):
    cond: list[tuple[str, str]]
    then: list[Node] = field(default_factory=list)
    otherwise: list[Node] = field(default_factory=list)


@dataclass
class Range(Node):
    decl: list[str]
    source: list[tuple[str, str]]
    body: list[Node] = field(default_factory=list)


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


def parse(text: str) -> tuple[list[Node], dict[str, list[Node]]]:
    """Top-level nodes and the named templates (``define``) of one file."""
    defines: dict[str, list[Node]] = {}
    root: list[Node] = []
    # Stack of (container list, owner node or define name, kind).
    stack: list[tuple[list[Node], Any, str]] = [(root, None, "root")]
    for kind, body in _segments(text):
        target = stack[-1][0]
        if kind == "text":
            target.append(Text(body))
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
            node = If(cond=tokens[1:])
            target.append(node)
            stack.append((node.then, node, "if"))
        elif head == "else":
            _, owner, block = stack.pop()
            if block not in ("if", "elseif"):
                raise TemplateError("'else' outside an if block")
            assert isinstance(owner, If)
            if len(tokens) > 1 and tokens[1] == ("ident", "if"):
                nested = If(cond=tokens[2:])
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
            node_r = Range(decl=decl, source=rest)
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
            target.append(Action(tokens))
    if len(stack) != 1:
        raise TemplateError(f"unclosed block(s): {[b for _, _, b in stack[1:]]}")
    return root, defines
