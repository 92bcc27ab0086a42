"""The ``wasm`` tool: resolve the plug-in, call it under limits, flush its intents.

Task config (both playbook forms lower to this; architecture.md §8)::

    kind: wasm
    plugin: {path: system/echo, version: 1, entry: run}   # version omitted: latest
    capabilities: [event_publish, result_put, object_put]  # deny by default
    format: json | arrow-ipc | arrow-batch | raw           # input encoding, default json
    output: json | arrow-ipc | arrow-batch | raw           # default: same as format

Inputs (the task's args): ``json`` sends all of them as one JSON document; ``arrow-*``
read ``ipc_base64`` (an Arrow IPC stream) or ``table`` (``{column: [values]}`` or rows),
and ``arrow-batch`` carries ``params`` to the guest; ``raw`` sends ``data_base64`` or
``text``. Intents are flushed after the call returned, in call order: ``event_publish``
→ a ``plugin.event`` event of the command; ``result_put`` → the result store (the step
result lists the references by key); ``object_put`` → the object store under
``executions/<execution_id>/<step>/<key>``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import msgspec
from noetl_common import Event, PluginFetch
from noetl_common.arrow_abi import (
    BatchEncoding,
    batch_encoding,
    decode_batch,
    ipc_to_table,
    table_from_json,
    table_to_ipc,
)
from noetl_common.arrow_limits import ArrowLimits, check_table
from noetl_common.results import ARROW_MEDIA_TYPE, JSON_MEDIA_TYPE, OCTET_MEDIA_TYPE

from .._metrics import WASM_CALLS
from ..wasm import CallResult, Intent, ModuleCache, PluginModule, WasmError, parse_grants, pool_capabilities
from ._base import CommandScope, current_command

FORMATS = ("json", "arrow-ipc", "arrow-batch", "raw")
#: Rows of a tabular output also returned as JSON columns (bigger tables: IPC bytes only).
MAX_JSON_ROWS = 1000


class WasmConfigError(ValueError):
    """The task's wasm config is incomplete or malformed."""


def _plugin_ref(config: Mapping[str, Any]) -> tuple[str, int | None, str]:
    plugin = config.get("plugin")
    if isinstance(plugin, str):
        plugin = {"path": plugin}
    if not isinstance(plugin, Mapping) or not isinstance(plugin.get("path"), str) or not plugin["path"]:
        raise WasmConfigError("wasm task needs plugin: {path, version?, entry?}")
    version = plugin.get("version")
    if version is not None:
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise WasmConfigError(f"plugin.version must be an integer, got {version!r}") from None
    entry = plugin.get("entry") or config.get("entry") or "run"
    return str(plugin["path"]), version, str(entry)


def _format(config: Mapping[str, Any], key: str, default: str) -> str:
    value = str(config.get(key) or default)
    if value not in FORMATS:
        raise WasmConfigError(f"{key} must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def encode_input(fmt: str, args: Mapping[str, Any], limits: ArrowLimits | None = None) -> bytes:
    """The bytes a guest receives for ``fmt`` from the task's inputs (Arrow within ``limits``)."""
    payload = input_payload(fmt, args, limits)
    return payload if isinstance(payload, bytes) else bytes(payload)


def input_payload(
    fmt: str, args: Mapping[str, Any], limits: ArrowLimits | None = None
) -> bytes | BatchEncoding:
    """What a guest receives for ``fmt``: bytes, or for ``arrow-batch`` the layout the host
    writes straight from pyarrow's buffers into the guest's memory (one copy)."""
    if fmt == "json":
        return msgspec.json.encode(dict(args))
    if fmt == "raw":
        if "data_base64" in args:
            return base64.b64decode(str(args["data_base64"]))
        return str(args.get("text") or "").encode()
    if "ipc_base64" in args:
        ipc = base64.b64decode(str(args["ipc_base64"]))
        if fmt == "arrow-ipc":
            return ipc
        table = ipc_to_table(ipc, limits)
    elif "table" in args:
        table = table_from_json(args["table"])
        if fmt == "arrow-ipc":
            return table_to_ipc(table)
    else:
        raise WasmConfigError(f"format {fmt} needs an ipc_base64 or table input")
    params = args.get("params")
    return batch_encoding(table, params if isinstance(params, Mapping) else None)


def decode_output(fmt: str, output: bytes, limits: ArrowLimits | None = None) -> Any:
    """The step result of a guest's output bytes in ``fmt`` (Arrow within ``limits``)."""
    if fmt == "json":
        if not output.strip():
            return None
        try:
            return msgspec.json.decode(output)
        except msgspec.DecodeError:
            return {"text": output.decode("utf-8", "replace")}
    if fmt == "raw":
        return {"data_base64": base64.b64encode(output).decode(), "bytes": len(output)}
    limits = limits or ArrowLimits()
    if fmt == "arrow-ipc":
        table = ipc_to_table(output, limits)
    else:
        table = decode_batch(output, limits).table
        check_table(table, limits)
    ipc = output if fmt == "arrow-ipc" else table_to_ipc(table)
    result: dict[str, Any] = {
        "ipc_base64": base64.b64encode(ipc).decode(),
        "num_rows": table.num_rows,
        "schema": [f"{field.name}: {field.type}" for field in table.schema],
    }
    if table.num_rows <= MAX_JSON_ROWS:
        result["columns"] = table.to_pydict()
    return result


def _media_type(data: bytes) -> str:
    """JSON, an Arrow IPC stream (continuation marker first), or opaque bytes."""
    if data[:4] == b"\xff\xff\xff\xff":
        return ARROW_MEDIA_TYPE
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError:
        return OCTET_MEDIA_TYPE
    return JSON_MEDIA_TYPE


class WasmTool:
    """The ``wasm`` entry of the tool registry (``async (config, args, ctx) -> result``)."""

    def __init__(self, cache: ModuleCache, *, pool: str, arrow_limits: ArrowLimits | None = None) -> None:
        self.cache = cache
        self.pool = pool
        self.arrow_limits = arrow_limits or ArrowLimits()

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
        scope = current_command.get()
        if scope is None:
            raise WasmConfigError("the wasm tool runs only inside a claimed command")
        path, version, entry = _plugin_ref(config)
        grants = parse_grants(config.get("capabilities"))
        in_fmt = _format(config, "format", "json")
        out_fmt = _format(config, "output", in_fmt)
        data = input_payload(in_fmt, args, self.arrow_limits)

        async def fetch(p: str, v: int | None, digest: str | None) -> PluginModule:
            got: PluginFetch = await scope.api.get_plugin(p, v, digest)
            return PluginModule(got.path, got.version, got.digest, got.data)

        loaded = await self.cache.load(path, version, fetch)
        # capabilities the step grants but this pool may not honour are linked, answering 3
        denied = grants - pool_capabilities(self.pool)
        host = self.cache.host
        try:
            result: CallResult = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: host.call(loaded.module, data, grants=grants, denied=denied, entry=entry),
            )
        except WasmError as exc:
            WASM_CALLS.labels(type(exc).__name__).inc()
            raise
        WASM_CALLS.labels("ok").inc()
        flushed = await self._flush(scope, path, result.intents)
        value = decode_output(out_fmt, result.output, self.arrow_limits)
        if flushed:
            return {"output": value, "intents": flushed, "plugin": {"path": path, "version": loaded.version}}
        return value

    @staticmethod
    async def _flush(scope: CommandScope, path: str, intents: list[Intent]) -> dict[str, Any]:
        """Apply buffered intents through the control-plane API, in call order."""
        if not intents:
            return {}
        events: list[Event] = []
        results: dict[str, Any] = {}
        objects: list[str] = []
        for intent in intents:
            if intent.capability == "event_publish":
                try:
                    payload: Any = msgspec.json.decode(intent.data)
                except msgspec.DecodeError:
                    payload = intent.data.decode("utf-8", "replace")
                events.append(scope.event("plugin.event", "RUNNING", {"plugin": path, "payload": payload}))
            elif intent.capability == "result_put":
                ref = await scope.api.put_result(scope.execution_id, intent.data, _media_type(intent.data))
                results[str(intent.key)] = ref
            else:
                key = f"executions/{scope.execution_id}/{scope.step}/{intent.key}"
                await scope.api.put_object(key, intent.data, _media_type(intent.data))
                objects.append(key)
        if events:
            await scope.api.post_events(events)
        summary: dict[str, Any] = {}
        if results:
            summary["results"] = results
        if objects:
            summary["objects"] = objects
        if events:
            summary["events"] = len(events)
        return summary
