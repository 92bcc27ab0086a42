"""What a python task is: its source, its ``libs`` and how its code runs (conformance C2).

* The task's inputs are injected as globals, plus ``input_data``: a dict of all of them.
  An input literally named ``input_data`` wins over that dict.
* The output is the global ``result`` after the code ran; or, when the code defines
  ``main``, what ``main`` returns. ``main`` is called with the inputs it accepts as
  keyword arguments (all of them when it takes ``**kwargs``). Code with a top-level
  ``return`` runs as a function body and its return value is the output.

Stdlib only: the sandbox's zygote imports this module without the worker package.
"""

from __future__ import annotations

import base64
import importlib
import inspect
from collections.abc import Mapping
from typing import Any


def task_source(config: Mapping[str, Any]) -> str:
    """The task's code: ``code``, else ``code_b64`` / ``code_base64`` decoded."""
    code = config.get("code")
    if isinstance(code, str) and code.strip():
        return code
    for key in ("code_b64", "code_base64"):
        encoded = config.get(key)
        if isinstance(encoded, str) and encoded.strip():
            try:
                return base64.b64decode(encoded, validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"python tool: {key} is not valid base64 UTF-8 text: {exc}") from None
    raise ValueError("python tool: the task has no code (set 'code')")


def task_libs(config: Mapping[str, Any]) -> dict[str, str]:
    """Upstream's ``libs: {alias: module}`` as ``{alias: module name}`` (checked, not imported)."""
    libs = config.get("libs")
    if not isinstance(libs, Mapping):
        return {}
    names: dict[str, str] = {}
    for alias, name in libs.items():
        if not isinstance(alias, str) or not alias.isidentifier():
            raise ValueError(f"python tool: libs alias {alias!r} is not a python name")
        names[alias] = str(name or alias)
    return names


def import_libs(libs: Mapping[str, str]) -> dict[str, Any]:
    """The ``libs`` modules, imported, by alias."""
    modules: dict[str, Any] = {}
    for alias, name in libs.items():
        try:
            modules[alias] = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"python tool: libs.{alias}: cannot import {name!r}: {exc}") from None
    return modules


def _main_kwargs(main: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``inputs`` that ``main`` accepts by keyword."""
    try:
        signature = inspect.signature(main)
    except (TypeError, ValueError):
        return dict(inputs)
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(inputs)
    accepted = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    kwargs = {k: v for k, v in inputs.items() if k in accepted}
    if "input_data" in accepted and "input_data" not in kwargs:
        kwargs["input_data"] = dict(inputs)
    return kwargs


def execute_python(code: str, inputs: Mapping[str, Any], modules: Mapping[str, Any] | None = None) -> Any:
    """Run ``code`` with ``inputs`` (and ``libs`` ``modules``) as globals; return its output (blocking)."""
    values = dict(inputs)
    namespace: dict[str, Any] = {"__name__": "__noetl_task__", "__builtins__": __builtins__}
    namespace.update(modules or {})
    namespace["input_data"] = dict(values)
    # Inputs go in after input_data so that an input literally named input_data wins.
    namespace.update(values)
    try:
        compiled = compile(code, "<python task>", "exec")
    except SyntaxError as exc:
        if exc.msg != "'return' outside function":
            raise
        # upstream runs top-level code as a function body: its `return` is the output
        body = "def __noetl_body__():\n" + "".join(f"    {line}" for line in code.splitlines(True))
        exec(compile(body, "<python task>", "exec"), namespace)
        return namespace["__noetl_body__"]()
    exec(compiled, namespace)
    main = namespace.get("main")
    if inspect.isfunction(main):
        return main(**_main_kwargs(main, values))
    return namespace.get("result")
