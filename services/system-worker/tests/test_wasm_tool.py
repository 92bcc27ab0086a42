"""The ``wasm`` tool in-process: plug-in resolution, pool policy, intent flushing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasm_modules as wm
from noetl_common import Event, PluginFetch
from noetl_common.arrow_limits import ArrowLimitError, ArrowLimits
from noetl_system_worker.tools import (
    CommandScope,
    WasmConfigError,
    WasmTool,
    current_command,
    default_registry,
)
from noetl_system_worker.wasm import ModuleCache, PluginHost, WasmLinkError

REPO = Path(__file__).resolve().parents[3]


class Api:
    """The slice of the control-api the wasm tool calls, in memory (our own contract)."""

    def __init__(self) -> None:
        self.modules: dict[str, bytes] = {}
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.results: list[tuple[int, bytes, str]] = []
        self.events: list[Event] = []
        self.downloads = 0

    async def get_plugin(self, path: str, version: int | None = None, etag: str | None = None) -> PluginFetch:
        data = self.modules[path]
        digest = hashlib.sha256(data).hexdigest()
        if etag == digest:
            return PluginFetch(path=path, version=1, digest=digest, data=None)
        self.downloads += 1
        return PluginFetch(path=path, version=1, digest=digest, data=data)

    async def put_object(self, key: str, data: bytes, media_type: str = "application/octet-stream") -> None:
        self.objects[key] = (data, media_type)

    async def put_result(self, execution_id: int, data: bytes, media_type: str) -> dict[str, Any]:
        self.results.append((execution_id, data, media_type))
        return {"$ref": {"key": f"{execution_id}/{len(self.results)}"}}

    async def post_events(self, events: list[Event]) -> None:
        self.events.extend(events)


@pytest.fixture(scope="module")
def host() -> Iterator[PluginHost]:
    running = PluginHost()
    yield running
    running.close()


@pytest.fixture
def api() -> Iterator[Api]:
    fake = Api()
    fake.modules = {
        "system/echo": (REPO / "plugins" / "wasm" / "system" / "echo.wasm").read_bytes(),
        "system/materialiser": (REPO / "plugins" / "wasm" / "system" / "materialiser.wasm").read_bytes(),
        "t/publish": wm.PUBLISH,
        "t/result_put": wm.RESULT_PUT,
    }

    def event(event_type: str, status: str, context: dict[str, Any] | None = None) -> Event:
        return Event(execution_id=42, event_type=event_type, step="start", status=status, context=context)

    token = current_command.set(CommandScope(fake, 42, "start", event))
    yield fake
    current_command.reset(token)


def test_the_default_registry_has_wasm_only_with_a_plugin_cache(host: PluginHost) -> None:
    assert "wasm" not in default_registry()
    tool = default_registry(plugins=ModuleCache(host, pool="system")).get("wasm")
    assert isinstance(tool, WasmTool) and tool.pool == "system"


async def test_the_tool_runs_only_inside_a_claimed_command(host: PluginHost) -> None:
    tool = WasmTool(ModuleCache(host), pool="shared")
    with pytest.raises(WasmConfigError, match="claimed command"):
        await tool({"plugin": {"path": "system/echo"}}, {}, {})


async def test_json_echo_and_no_second_download(host: PluginHost, api: Api) -> None:
    tool = WasmTool(ModuleCache(host), pool="shared")
    assert await tool({"plugin": {"path": "system/echo", "version": 1}}, {"a": [1, 2]}, {}) == {"a": [1, 2]}
    assert await tool({"plugin": "system/echo"}, {"b": None}, {}) == {"b": None}
    assert api.downloads == 2  # one per (path, version) key; the second call on each key revalidated
    await tool({"plugin": "system/echo"}, {}, {})
    assert api.downloads == 2


async def test_config_errors_name_the_field(host: PluginHost, api: Api) -> None:
    tool = WasmTool(ModuleCache(host), pool="shared")
    with pytest.raises(WasmConfigError, match="plugin"):
        await tool({}, {}, {})
    with pytest.raises(WasmConfigError, match=r"plugin\.version"):
        await tool({"plugin": {"path": "system/echo", "version": "x"}}, {}, {})
    with pytest.raises(WasmConfigError, match="format must be one of"):
        await tool({"plugin": "system/echo", "format": "xml"}, {}, {})
    with pytest.raises(WasmLinkError, match="does not grant"):
        await tool({"plugin": "t/publish"}, {}, {})


async def test_intents_are_flushed_after_the_call(host: PluginHost, api: Api) -> None:
    tool = WasmTool(ModuleCache(host), pool="shared")
    published = await tool({"plugin": "t/publish", "capabilities": ["event_publish"]}, {"k": "v"}, {})
    assert published == {"output": 0, "intents": {"events": 1}, "plugin": {"path": "t/publish", "version": 1}}
    (event,) = api.events
    assert (event.event_type, event.context) == (
        "plugin.event",
        {"plugin": "t/publish", "payload": {"k": "v"}},
    )
    stored = await tool({"plugin": "t/result_put", "capabilities": ["result_put"]}, {"rows": 1}, {})
    assert stored["intents"] == {"results": {"out": {"$ref": {"key": "42/1"}}}}
    assert api.results == [(42, b'{"rows":1}', "application/json")]


async def test_pool_policy_object_put_is_denied_on_user_pools(host: PluginHost, api: Api) -> None:
    config = {
        "plugin": "system/materialiser",
        "capabilities": ["object_put"],
        "format": "arrow-ipc",
        "output": "json",
    }
    args = {"table": {"v": [1, 2]}}
    assert await WasmTool(ModuleCache(host), pool="shared")(config, args, {}) == 3
    assert api.objects == {}
    system = await WasmTool(ModuleCache(host), pool="system")(config, args, {})
    key = "executions/42/start/materialised.arrows"
    assert system["intents"] == {"objects": [key]}
    data, media_type = api.objects[key]
    assert media_type == "application/vnd.apache.arrow.stream" and data[:4] == b"\xff\xff\xff\xff"


def _ipc(table: Any, compression: str | None = None) -> str:
    import base64

    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression) if compression else None
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return base64.b64encode(sink.getvalue().to_pybytes()).decode()


def _bombs() -> dict[str, str]:
    import pyarrow as pa

    zeros = pa.table({"z": pa.array([0] * 500_000, pa.int64())})  # 4 MB of zeros, a few KB in zstd
    one_value = pa.DictionaryArray.from_arrays(pa.array([0] * 20_000, pa.int32()), pa.array(["v" * 4096]))
    return {"compressed": _ipc(zeros, "zstd"), "dictionary": _ipc(pa.table({"d": one_value}))}


LIMITS = ArrowLimits(max_rows=1_000_000, max_columns=100, max_decoded_bytes=1024 * 1024)


@pytest.mark.parametrize("bomb", ["compressed", "dictionary"])
async def test_an_arrow_bomb_from_the_guest_fails_the_task_before_it_becomes_json(
    host: PluginHost, api: Api, bomb: str
) -> None:
    """echo hands the IPC bytes back untouched: the output is checked before it is decoded."""
    tool = WasmTool(ModuleCache(host), pool="shared", arrow_limits=LIMITS)
    config = {"plugin": {"path": "system/echo"}, "format": "arrow-ipc"}

    with pytest.raises(ArrowLimitError, match="NOETL_ARROW_MAX_DECODED_BYTES=1048576"):
        await tool(config, {"ipc_base64": _bombs()[bomb]}, {})


async def test_an_arrow_bomb_as_input_is_refused_before_the_guest_runs(host: PluginHost, api: Api) -> None:
    tool = WasmTool(ModuleCache(host), pool="shared", arrow_limits=LIMITS)
    config = {"plugin": {"path": "system/materialiser"}, "format": "arrow-batch"}

    with pytest.raises(ArrowLimitError, match="NOETL_ARROW_MAX_DECODED_BYTES"):
        await tool(config, {"ipc_base64": _bombs()["compressed"]}, {})

    assert api.downloads == 0  # refused while encoding the input, before the plug-in was fetched
