"""The ``python`` tool, with upstream NoETL's conventions (conformance C2).

* The task's inputs are injected as globals, plus ``input_data``: a dict of all of them.
  An input literally named ``input_data`` wins over that dict.
* The output is the global ``result`` after the code ran; or, when the code defines
  ``main``, what ``main`` returns. ``main`` is called with the inputs it accepts as
  keyword arguments (all of them when it takes ``**kwargs``). Code with a top-level
  ``return`` runs as a function body and its return value is the output.

The code runs in a worker thread so the event loop keeps heart-beating meanwhile. It runs
with the worker's own privileges: see ``docs/worker.md`` for the trust model.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import inspect
from collections.abc import Mapping
from typing import Any


class PythonToolError(Exception):
    """The task's code raised; ``type`` is the original exception's class name."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _source(config: Mapping[str, Any]) -> str:
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


def _guarded(code: str, inputs: Mapping[str, Any], modules: Mapping[str, Any]) -> tuple[bool, Any]:
    # BaseException: SystemExit or KeyboardInterrupt raised by task code must fail the
    # task, not end the worker thread silently.
    try:
        return True, execute_python(code, inputs, modules)
    except BaseException as exc:
        return False, exc


def _libs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Upstream's ``libs: {alias: module}``: modules imported and given to the code as globals."""
    libs = config.get("libs")
    if not isinstance(libs, Mapping):
        return {}
    modules: dict[str, Any] = {}
    for alias, name in libs.items():
        if not isinstance(alias, str) or not alias.isidentifier():
            raise ValueError(f"python tool: libs alias {alias!r} is not a python name")
        try:
            modules[alias] = importlib.import_module(str(name or alias))
        except ImportError as exc:
            raise ValueError(f"python tool: libs.{alias}: cannot import {name!r}: {exc}") from None
    return modules


async def run_python(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """The ``python`` tool: run the task's code in a thread with ``args`` as its inputs.

    ``libs`` modules are globals too (not in ``input_data``); an input of the same name wins.
    """
    code = _source(config)
    ok, value = await asyncio.to_thread(_guarded, code, args, _libs(config))
    if ok:
        return value
    message = str(value) or type(value).__name__
    raise PythonToolError(message, type(value).__name__) from value
