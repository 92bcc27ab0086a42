"""The WASM plug-in surface through the real stack (architecture.md §8, docs/wasm.md).

Its own stack, so the pools get their WASM settings: the control-api seeds the built-in
plug-ins from plugins/wasm; the shared (user) worker runs without a fuel budget (only the
0.5 s epoch deadline stops a loop), with a 4 MiB memory cap, and with ``result_put``
revoked (linked, answering 3). Test plug-ins are published through ``noetl plugin publish``.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from noetl_cli import Api
from noetl_common.arrow_abi import table_to_ipc
from noetl_dev import Stack
from noetl_dev.testing import wait_for_event
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "services" / "system-worker" / "tests"))
import wasm_modules as wm  # noqa: E402

Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture(scope="module")
def wasm_stack(noetl_state_dir: Path) -> Iterator[Stack]:
    if os.environ.get("NOETL_E2E_API_URL"):  # its own Stack, with plug-in limits set per worker
        pytest.skip("starts its own local Stack: NOETL_E2E_API_URL points at an existing deployment")
    state = noetl_state_dir / "wasm-stack"
    running = Stack(
        state,
        ready_timeout=90.0,
        service_overrides={
            "control-api": {"NOETL_PLUGIN_SEED_DIR": str(REPO / "plugins" / "wasm")},
            "worker-shared": {
                "WASM_FUEL_PER_CALL": "0",
                "WASM_CALL_TIMEOUT_SECONDS": "0.5",
                "WASM_MEMORY_LIMIT_BYTES": str(4 * 1024 * 1024),
                "WASM_OUTPUT_LIMIT_BYTES": str(1024 * 1024),
                "WASM_DENIED_CAPABILITIES": "result_put",
                "WASM_MODULE_CACHE_DIR": str(state / "wasm-cache-shared"),
            },
            "worker-system": {
                "WASM_MODULE_CACHE_DIR": str(state / "wasm-cache-system"),
            },
        },
    )
    running.start()
    try:
        yield running
    finally:
        leftovers = running.stop(grace=10.0)
        assert not leftovers, f"processes left running after stop: {leftovers}"


@pytest.fixture(scope="module")
def api(wasm_stack: Stack) -> Iterator[Api]:
    with Api(wasm_stack.api_url, token=wasm_stack.token) as client:
        for file in sorted((REPO / "system").glob("*.yaml")):
            client.register_file(file)
        yield client


@pytest.fixture
def db(wasm_stack: Stack) -> Iterator[Conn]:
    assert wasm_stack.database_url is not None
    with psycopg.connect(wasm_stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NOETL_API_TOKEN": stack.token}
    return subprocess.run(
        [sys.executable, "-m", "noetl_cli", "--server", stack.api_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def publish(stack: Stack, tmp_path: Path, path: str, module: bytes, version: int | None = None) -> str:
    file = tmp_path / f"{path.replace('/', '_')}.wasm"
    file.write_bytes(module)
    args = ["plugin", "publish", path, str(file)] + (["--version", str(version)] if version else [])
    done = cli(stack, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def playbook(path: str, tool: str, args: str = "{}") -> str:
    return (
        "apiVersion: noetl.io/v2\nkind: Playbook\n"
        f"metadata: {{name: {path.rsplit('/', 1)[-1]}, path: {path}}}\n"
        "workflow:\n"
        f"  - step: start\n    tool: {tool}\n    args: {args}\n"
    )


def run(api: Api, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    started = api.execute(path, payload=payload)
    return api.wait(started["execution_id"], timeout=60)


def failure(db: Conn, execution_id: int) -> dict[str, Any]:
    events = wait_for_event(db, execution_id, "playbook.failed")
    failed = next(e for e in events if e["event_type"] == "command.failed")
    error: dict[str, Any] = failed["context"]["error"]
    assert any(e["event_type"] == "call.error" for e in events)
    return error


def metric(stack: Stack, service: str, name: str, path: str) -> float:
    text = httpx.get(f"{stack.services[service].url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name) and f'path="{path}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- the system pool and Arrow ------------------------------------------------------------------
def test_system_echo_playbook_runs_on_the_system_pool(api: Api, db: Conn) -> None:
    final = run(api, "system/echo", {"message": "ping"})
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == {"message": "ping"}
    command = db.execute(
        "SELECT pool, worker_id FROM noetl.command WHERE execution_id = %s", (final["execution_id"],)
    ).fetchone()
    assert command == {"pool": "system", "worker_id": "dev-system-1"}
    subjects = db.execute(
        "SELECT subject FROM noetl.outbox WHERE execution_id = %s AND subject LIKE 'noetl.commands.%%'",
        (final["execution_id"],),
    ).fetchall()
    assert subjects == [{"subject": f"noetl.commands.system.{final['execution_id']}"}]


def test_arrow_ipc_round_trips_through_system_echo_byte_identical(api: Api) -> None:
    table = pa.table({"id": pa.array(range(500), pa.int64()), "name": [f"row-{i}" for i in range(500)]})
    ipc = base64.b64encode(table_to_ipc(table)).decode()
    api.register(
        playbook(
            "system/e2e_arrow_echo",
            "{kind: wasm, plugin: {path: system/echo, version: 1}, format: arrow-ipc}",
            "{ipc_base64: '{{ ipc }}'}",
        )
    )
    final = run(api, "system/e2e_arrow_echo", {"ipc": ipc})
    assert final["status"] == "COMPLETED", final
    result = final["results"]["start"]
    assert result["ipc_base64"] == ipc
    assert result["num_rows"] == 500 and result["columns"]["name"][499] == "row-499"


def test_materialiser_stores_its_arrow_input_as_an_object(api: Api, wasm_stack: Stack) -> None:
    ipc = table_to_ipc(pa.table({"v": [1.5, 2.5]}))
    api.register(
        playbook(
            "system/e2e_materialise",
            "{kind: wasm, plugin: {path: system/materialiser}, capabilities: [object_put], format: arrow-ipc,"
            " output: json}",
            "{table: {v: [1.5, 2.5]}}",
        )
    )
    final = run(api, "system/e2e_materialise")
    assert final["status"] == "COMPLETED", final
    result = final["results"]["start"]
    key = f"executions/{final['execution_id']}/start/materialised.arrows"
    assert result["output"] == 0 and result["intents"] == {"objects": [key]}
    stored = httpx.get(
        f"{wasm_stack.api_url}/api/internal/objects/{key}",
        headers=wasm_stack.auth(),
        timeout=10,
    )
    assert stored.status_code == 200 and stored.content == ipc


def test_arrow_filter_sum_plugin_matches_pyarrow_compute(api: Api) -> None:
    x = [3, 12, None, 40, 11, 7, 25]
    v = [1.0, 2.0, 3.0, None, 4.5, 6.0, 0.25]
    api.register(
        playbook(
            "e2e/filter_sum",
            "{kind: wasm, plugin: {path: arrow/filter_sum}, format: arrow-batch}",
            "{table: '{{ table }}', params: {filter_column: x, threshold: 10, sum_column: v}}",
        )
    )
    final = run(api, "e2e/filter_sum", {"table": {"x": x, "v": v}})
    assert final["status"] == "COMPLETED", final
    table = pa.table({"x": pa.array(x, pa.int64()), "v": pa.array(v, pa.float64())})
    mask = pc.greater(table["x"], 10)
    assert final["results"]["start"]["columns"] == {
        "count": [pc.sum(mask).as_py()],
        "sum": [pc.sum(pc.filter(table["v"], mask)).as_py()],
    }


def test_the_executor_form_lowers_to_a_wasm_task(api: Api) -> None:
    api.register(
        "apiVersion: noetl.io/v2\nkind: Playbook\n"
        "metadata: {name: e2e_executor, path: system/e2e_executor}\n"
        "executor: {runtime: wasm, plugin: {path: system/echo, version: 1}, capabilities: []}\n"
        "workflow:\n"
        "  - step: start\n    tool: {kind: wasm}\n    args: {via: executor}\n"
    )
    final = run(api, "system/e2e_executor")
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == {"via": "executor"}


# -- the capability ring ------------------------------------------------------------------------
def test_ungranted_import_fails_at_instantiate(api: Api, db: Conn, wasm_stack: Stack, tmp_path: Path) -> None:
    publish(wasm_stack, tmp_path, "e2e/publish", wm.PUBLISH)
    api.register(playbook("e2e/ungranted", "{kind: wasm, plugin: {path: e2e/publish}}"))
    final = run(api, "e2e/ungranted")
    assert final["status"] == "FAILED"
    error = failure(db, final["execution_id"])
    assert error["type"] == "WasmLinkError"
    assert "noetl.event_publish which this step does not grant" in error["message"]


def test_granted_event_publish_is_flushed_as_an_event(
    api: Api, db: Conn, wasm_stack: Stack, tmp_path: Path
) -> None:
    publish(wasm_stack, tmp_path, "e2e/publish", wm.PUBLISH)
    api.register(
        playbook(
            "e2e/granted",
            "{kind: wasm, plugin: {path: e2e/publish}, capabilities: [event_publish]}",
            "{note: hi}",
        )
    )
    final = run(api, "e2e/granted")
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == {
        "output": 0,
        "intents": {"events": 1},
        "plugin": {"path": "e2e/publish", "version": 1},
    }
    events = wait_for_event(db, final["execution_id"], "plugin.event")
    (event,) = [e for e in events if e["event_type"] == "plugin.event"]
    assert event["context"] == {"plugin": "e2e/publish", "payload": {"note": "hi"}}


def test_granted_but_denied_returns_3(api: Api, wasm_stack: Stack, tmp_path: Path) -> None:
    publish(wasm_stack, tmp_path, "e2e/result_put", wm.RESULT_PUT)
    api.register(
        playbook("e2e/denied", "{kind: wasm, plugin: {path: e2e/result_put}, capabilities: [result_put]}")
    )
    final = run(api, "e2e/denied")
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == 3


def test_user_playbook_asking_for_a_system_capability_is_rejected(api: Api) -> None:
    from noetl_cli._api import CliError

    with pytest.raises(CliError, match="reserved for system/"):
        api.register(
            playbook(
                "e2e/greedy", "{kind: wasm, plugin: {path: system/materialiser}, capabilities: [object_put]}"
            )
        )


# -- limits ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "module", "error_type", "message"),
    [
        ("e2e/loop", wm.LOOP, "WasmTimeout", "0.5 s wall-clock limit"),
        ("e2e/bomb", wm.BOMB, "WasmMemoryLimit", "linear-memory cap of 4194304 bytes"),
        ("e2e/huge", wm.HUGE_OUTPUT, "WasmOutputTooLarge", "over the output cap of 1048576 bytes"),
        ("e2e/trap", wm.TRAP, "WasmTrap", "unreachable"),
    ],
)
def test_a_limit_or_trap_fails_the_step_and_the_worker_keeps_serving(
    api: Api,
    db: Conn,
    wasm_stack: Stack,
    tmp_path: Path,
    path: str,
    module: bytes,
    error_type: str,
    message: str,
) -> None:
    pid = wasm_stack.services["worker-shared"].pid
    publish(wasm_stack, tmp_path, path, module)
    api.register(playbook(path, f"{{kind: wasm, plugin: {{path: {path}}}}}"))
    final = run(api, path)
    assert final["status"] == "FAILED"
    error = failure(db, final["execution_id"])
    assert error["type"] == error_type and message in error["message"]
    # the next command on the same (only) user worker succeeds
    api.register(playbook("e2e/echo_after", "{kind: wasm, plugin: {path: system/echo}}", "{after: true}"))
    after = run(api, "e2e/echo_after")
    assert after["status"] == "COMPLETED" and after["results"]["start"] == {"after": True}
    workers = db.execute(
        "SELECT DISTINCT worker_id FROM noetl.command WHERE execution_id = ANY(%s)",
        ([final["execution_id"], after["execution_id"]],),
    ).fetchall()
    assert workers == [{"worker_id": "dev-shared-1"}]
    assert wasm_stack.services["worker-shared"].pid == pid and wasm_stack.services["worker-shared"].alive()


# -- cache and hot reload -----------------------------------------------------------------------
def test_version_bump_and_same_version_republish_reload_without_restart(
    api: Api, wasm_stack: Stack, tmp_path: Path
) -> None:
    pid = wasm_stack.services["worker-shared"].pid
    publish(wasm_stack, tmp_path, "e2e/hot", wm.constant('"one"'), version=1)
    api.register(playbook("e2e/hot_v1", "{kind: wasm, plugin: {path: e2e/hot, version: 1}}"))
    api.register(playbook("e2e/hot_v2", "{kind: wasm, plugin: {path: e2e/hot, version: 2}}"))
    assert run(api, "e2e/hot_v1")["results"]["start"] == "one"
    # same version, new bytes: a new digest, picked up by the next claim
    out = publish(wasm_stack, tmp_path, "e2e/hot", wm.constant('"two"'), version=1)
    assert out.startswith("published e2e/hot version 1")
    assert run(api, "e2e/hot_v1")["results"]["start"] == "two"
    publish(wasm_stack, tmp_path, "e2e/hot", wm.constant('"three"'), version=2)
    assert run(api, "e2e/hot_v2")["results"]["start"] == "three"
    assert run(api, "e2e/hot_v1")["results"]["start"] == "two"
    assert wasm_stack.services["worker-shared"].pid == pid
    listed = cli(wasm_stack, "plugin", "list", "--path", "e2e/hot")
    assert listed.returncode == 0 and [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        ["e2e/hot", "1"],
        ["e2e/hot", "2"],
    ]


def test_second_dispatch_of_an_unchanged_module_does_not_download_it(
    api: Api, wasm_stack: Stack, tmp_path: Path
) -> None:
    publish(wasm_stack, tmp_path, "e2e/count", wm.ECHO)
    api.register(playbook("e2e/count", "{kind: wasm, plugin: {path: e2e/count}}", "{n: 1}"))
    name = "noetl_system_worker_plugin_downloads_total"
    assert run(api, "e2e/count")["status"] == "COMPLETED"
    assert metric(wasm_stack, "worker-shared", name, "e2e/count") == 1.0
    assert run(api, "e2e/count")["results"]["start"] == {"n": 1}
    assert metric(wasm_stack, "worker-shared", name, "e2e/count") == 1.0
    # a re-publish with other bytes is downloaded once more
    publish(wasm_stack, tmp_path, "e2e/count", wm.constant("7"), version=1)
    assert run(api, "e2e/count")["results"]["start"] == 7
    assert metric(wasm_stack, "worker-shared", name, "e2e/count") == 2.0


# -- system playbooks ---------------------------------------------------------------------------
def test_scheduled_cleanup_applies_the_servers_policy_whatever_the_payload(
    api: Api, db: Conn, wasm_stack: Stack
) -> None:
    """A system playbook takes no security-relevant input: the payload names another server and
    asks to delete everything, and the sweep still goes to this API, with its own policy."""
    old = run(api, "system/echo")
    recent = run(api, "system/echo")
    assert old["status"] == recent["status"] == "COMPLETED"
    for done in (old, recent):
        wait_for_event(db, done["execution_id"], "playbook.completed")
    db.execute(
        "UPDATE noetl.execution SET updated_at = now() - interval '40 days' WHERE execution_id = %s",
        (old["execution_id"],),
    )
    with socket.socket() as elsewhere:
        elsewhere.bind(("127.0.0.1", 0))
        elsewhere.listen()
        elsewhere.setblocking(False)
        hostile = {
            "server_url": f"http://127.0.0.1:{elsewhere.getsockname()[1]}",
            "executions_older_than_seconds": 0,
            "events_older_than_seconds": 0,
            "limit": 1_000_000_000,
        }
        final = run(api, "system/scheduled_cleanup", hostile)
        with pytest.raises(BlockingIOError):
            elsewhere.accept()  # nobody called the payload's server
    assert final["status"] == "COMPLETED", final.get("error")
    assert final["ctx"]["purged"]["executions_deleted"] >= 1
    remaining = {
        row["execution_id"]
        for row in db.execute(
            "SELECT execution_id FROM noetl.execution WHERE execution_id = ANY(%s)",
            ([old["execution_id"], recent["execution_id"]],),
        ).fetchall()
    }
    assert remaining == {recent["execution_id"]}  # the policy's 30 days, not the payload's 0
    logged = str(db.execute("SELECT context FROM noetl.event").fetchall())
    assert not [variable for variable, token in wasm_stack.tokens.items() if token in logged]
