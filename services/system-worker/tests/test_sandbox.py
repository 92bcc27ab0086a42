"""The python sandbox: what a task can no longer reach, and the python conventions it keeps.

Every test runs real child processes of a real zygote. Where this host cannot provide a
layer (Landlock, root for the uid drop) the test that needs that layer says so and skips.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from noetl_common import CommandSpec, TaskSpec
from noetl_system_worker import (
    PipelineRunner,
    SandboxedPython,
    SandboxError,
    SandboxLimits,
    SandboxPool,
    default_registry,
)
from noetl_system_worker._python_config import DEFAULT_ENV_ALLOW, DEFAULT_PRELOAD
from noetl_system_worker.sandbox import make_undumpable
from noetl_system_worker.sandbox._confine import landlock_abi, set_dumpable

SECRET = "noetl_fake-worker-token-0123456789"
LIMITS = SandboxLimits(
    cpu_seconds=2,
    memory_bytes=512 * 1024**2,
    max_open_files=64,
    file_max_bytes=1024**2,
    max_processes=64,
    output_max_bytes=256 * 1024,
    log_max_bytes=1024,
    preload=DEFAULT_PRELOAD,
)
ROOT = os.geteuid() == 0
LANDLOCK = landlock_abi()
NO_LANDLOCK = "the kernel has no Landlock: only DAC and the uid drop guard the worker's files"
NO_SIGNAL_SCOPE = "neither root (uid drop) nor Landlock ABI >= 6 (signal scoping): a same-uid task may signal"


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    """One sandbox for the module, started while the worker's environment holds a secret."""
    os.environ["NOETL_API_TOKEN"] = SECRET
    sandbox = SandboxPool(LIMITS, warm=2, env_allow=DEFAULT_ENV_ALLOW, timeout_seconds=60)
    try:
        await sandbox.start()
        yield sandbox
    finally:
        await sandbox.aclose()
        os.environ.pop("NOETL_API_TOKEN", None)


async def ok(pool: SandboxPool, code: str, **inputs: Any) -> Any:
    reply = await pool.run(code, inputs, {})
    assert reply.ok, f"{reply.error_type}: {reply.error_message}"
    return reply.result


def processes_named(comm: str) -> list[int]:
    """Pids whose command name is ``comm`` (a task names itself so the test can find what it left)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    found.append(int(entry))
            except OSError:
                continue
    return found


NAME_ME = "import ctypes\nctypes.CDLL(None).prctl(15, {name!r}.encode(), 0, 0, 0)\n"


# -- the python conventions hold ----------------------------------------------------------------
CONVENTIONS = [
    ("result = {'sum': a + b, 'keys': sorted(input_data)}", {"a": 1, "b": 2}, {"sum": 3, "keys": ["a", "b"]}),
    ("result = input_data", {"input_data": {"mine": True}, "x": 1}, {"mine": True}),
    ("if a > 1:\n    return {'big': a}\nreturn {'small': a}", {"a": 3}, {"big": 3}),
    ("def main(**kw):\n    return kw\n", {"x": 1, "y": 2}, {"x": 1, "y": 2}),
    ("def main(input_data):\n    return input_data\n", {"x": 1}, {"x": 1}),
    ("def main(a):\n    return a * 2\n", {"a": 4, "b": 9}, 8),
    ("x = 1", {}, None),
]


@pytest.mark.parametrize(("code", "inputs", "expected"), CONVENTIONS)
async def test_sandbox_keeps_the_python_conventions(
    pool: SandboxPool, code: str, inputs: dict[str, Any], expected: Any
) -> None:
    assert await ok(pool, code, **inputs) == expected


async def test_a_pipeline_runs_python_tasks_in_the_sandbox(pool: SandboxPool) -> None:
    runner = PipelineRunner(default_registry(sandbox=pool))
    encoded = base64.b64encode(b"result = {'pid': __import__('os').getpid(), 'n': n + 1}").decode()
    spec = CommandSpec(
        tasks=[
            TaskSpec(name="first", kind="python", config={"code_b64": encoded, "args": {"n": 1}}),
            TaskSpec(
                name="second",
                kind="python",
                config={
                    "code": "result = {'again': first['n'] * 10, 'dumped': j.dumps(1)}",
                    "libs": {"j": "json"},
                    "args": {"first": "{{ first }}"},
                },
            ),
            TaskSpec(name="boom", kind="python", config={"code": "raise KeyError('missing')"}),
        ]
    )

    outcome = await runner.run(spec)

    assert not outcome.ok and outcome.task == "boom"
    assert outcome.error == {
        "message": "'missing'",
        "type": "KeyError",
        "task": "boom",
        "kind": "tool_error",
        "retryable": False,
        "code": None,
    }
    spec = CommandSpec(tasks=spec.tasks[:2])
    outcome = await runner.run(spec)
    assert outcome.ok and outcome.result == {"again": 20, "dumped": "1"}


async def test_task_exceptions_keep_their_type_and_message(pool: SandboxPool) -> None:
    failed = await pool.run("raise ValueError('bad input')", {}, {})
    exited = await pool.run("raise SystemExit(3)", {}, {})
    missing = await pool.run("result = 1", {}, {"nope": "no_such_module_xyz"})

    assert (failed.ok, failed.error_type, failed.error_message) == (False, "ValueError", "bad input")
    assert (exited.ok, exited.error_type) == (False, "SystemExit")
    assert (
        not missing.ok
        and missing.error_type == "ValueError"
        and "no_such_module_xyz" in missing.error_message
    )


async def test_arrow_tables_and_rows_travel_both_ways(pool: SandboxPool) -> None:
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    code = "import pyarrow as pa\nresult = t.append_column('double', pa.array([i * 2 for i in t['id'].to_pylist()]))"

    out = await ok(pool, code, t=table)
    rows = await ok(pool, "result = [{'id': i, 'v': str(i)} for i in range(3)]")

    assert isinstance(out, pa.Table)
    assert out.to_pylist() == [
        {"id": 1, "name": "a", "double": 2},
        {"id": 2, "name": "b", "double": 4},
        {"id": 3, "name": "c", "double": 6},
    ]
    assert rows == [{"id": 0, "v": "0"}, {"id": 1, "v": "1"}, {"id": 2, "v": "2"}]


async def test_tasks_run_concurrently_each_in_a_fresh_process(pool: SandboxPool) -> None:
    code = (
        "import os, tempfile\nopen(os.path.join(tempfile.gettempdir(), 'mark'), 'w').write(str(n))\n"
        "result = {'n': n, 'tmp': tempfile.gettempdir(), 'marks': os.listdir(tempfile.gettempdir())}"
    )

    results = await asyncio.gather(*(ok(pool, code, n=n) for n in range(6)))

    assert [r["n"] for r in results] == list(range(6))
    assert len({r["tmp"] for r in results}) == 6  # a private folder each
    assert all(r["marks"] == ["mark"] for r in results)  # nothing left by another task


# -- secrets stay out of reach --------------------------------------------------------------------
async def test_task_environment_holds_no_worker_secret(pool: SandboxPool) -> None:
    env = await ok(pool, "import os\nresult = dict(os.environ)")

    assert "NOETL_API_TOKEN" not in env and SECRET not in str(env)
    assert set(env) <= {*DEFAULT_ENV_ALLOW, "TMPDIR", "HOME"}


async def test_worker_and_init_environ_cannot_be_read(pool: SandboxPool) -> None:
    code = (
        "out = {}\n"
        "for pid in pids:\n"
        "    try:\n"
        "        out[str(pid)] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')\n"
        "    except OSError as exc:\n"
        "        out[str(pid)] = type(exc).__name__\n"
        "result = out\n"
    )
    assert pool.zygote_pid is not None

    seen = await ok(pool, code, pids=[os.getpid(), 1, pool.zygote_pid])

    assert all(SECRET not in text for text in seen.values()), seen
    assert seen[str(os.getpid())] == "PermissionError"


@pytest.fixture
def wasm_cache() -> Iterator[str]:
    """A worker-owned folder like the WASM module cache, open to everyone by its file modes."""
    with tempfile.TemporaryDirectory(prefix="wasm-cache-") as cache:
        os.chmod(cache, 0o777)  # only Landlock keeps a task out of it, whatever the uid
        Path(cache, "module.cwasm").write_text("compiled")
        Path(cache, "module.cwasm").chmod(0o666)
        yield cache


@pytest.mark.skipif(not LANDLOCK, reason=NO_LANDLOCK)
async def test_worker_files_cannot_be_written_or_read(pool: SandboxPool, wasm_cache: str) -> None:
    code = (
        "import os\nout = {}\n"
        "for label, action in (('write', lambda: open(os.path.join(d, 'evil.py'), 'w')),"
        " ('read', lambda: open(os.path.join(d, 'module.cwasm')).read())):\n"
        "    try:\n"
        "        action()\n"
        "        out[label] = 'allowed'\n"
        "    except OSError as exc:\n"
        "        out[label] = type(exc).__name__\n"
        "result = out\n"
    )

    seen = await ok(pool, code, d=wasm_cache)

    assert seen == {"write": "PermissionError", "read": "PermissionError"}
    assert sorted(os.listdir(wasm_cache)) == ["module.cwasm"]


# -- a task cannot take the worker down ------------------------------------------------------------
async def test_runaway_task_is_killed_at_its_timeout_and_the_next_task_runs(pool: SandboxPool) -> None:
    code = NAME_ME.format(name="noetl-runaway") + "import os\nos.fork()\nwhile True:\n    pass\n"

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.run(code, {}, {}), 1.0)

    assert processes_named("noetl-runaway") == []  # the task and the process it forked
    assert await ok(pool, "result = 'next'") == "next"


async def test_cpu_limit_fails_the_task(pool: SandboxPool) -> None:
    reply = await pool.run("while True:\n    pass\n", {}, {})

    assert not reply.ok and reply.error_type == "TimeoutError"
    assert "WORKER_PYTHON_CPU_SECONDS" in reply.error_message


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(8 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024**2))"],
    ids=["one-allocation", "growing"],
)
async def test_memory_bomb_fails_the_task_not_the_worker(pool: SandboxPool, code: str) -> None:
    reply = await pool.run(code, {}, {})

    assert not reply.ok and reply.error_type == "MemoryError"
    assert await ok(pool, "result = 'still here'") == "still here"


@pytest.mark.skipif(not ROOT and LANDLOCK < 6, reason=NO_SIGNAL_SCOPE)
async def test_signals_do_not_reach_the_worker_or_the_zygote(pool: SandboxPool) -> None:
    code = (
        "import os, signal\nout = {}\n"
        "for label, pid in (('worker', worker), ('zygote', zygote), ('parent', os.getppid()), ('everyone', -1)):\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "        out[label] = 'sent'\n"
        "    except OSError as exc:\n"
        "        out[label] = type(exc).__name__\n"
        "result = out\n"
    )
    zygote = pool.zygote_pid

    seen = await ok(pool, code, worker=os.getpid(), zygote=zygote)

    # refused (another uid, or Landlock's signal scope) or not even visible (its pid namespace)
    assert seen["worker"] != "sent" and seen["zygote"] != "sent", seen
    assert pool.zygote_pid == zygote and await ok(pool, "result = 1") == 1


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC needs the dedicated uid, which needs a root worker")
async def test_fork_bomb_is_bounded_and_cleaned_up(pool: SandboxPool) -> None:
    code = (
        NAME_ME.format(name="noetl-forkbomb") + "import os\nwhile True:\n    try:\n        os.fork()\n"
        "    except OSError:\n        pass\n"
    )

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.run(code, {}, {}), 1.5)

    assert processes_named("noetl-forkbomb") == []
    assert await ok(pool, "result = 'after the bomb'") == "after the bomb"


async def test_huge_result_is_refused(pool: SandboxPool) -> None:
    reply = await pool.run("result = 'x' * (n * 2)", {"n": LIMITS.output_max_bytes}, {})

    assert not reply.ok and reply.error_type == "SandboxError"
    assert "WORKER_PYTHON_OUTPUT_MAX_BYTES" in reply.error_message


async def test_a_task_that_forges_an_oversized_answer_is_refused(pool: SandboxPool) -> None:
    code = (
        "import socket, struct\ns = socket.socket(fileno=next(fd for fd in range(3, 64) if __import__('os').path.exists(f'/proc/self/fd/{fd}')))\n"
        "s.sendall(struct.pack('!I', 2**31))\nwhile True:\n    pass\n"
    )

    with pytest.raises(SandboxError, match="over the limit"):
        await pool.run(code, {}, {})


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import os\nos._exit(7)", "exited with code 7"),
        ("import ctypes\nctypes.string_at(0)", r"crashed \(SIGSEGV\)"),
    ],
    ids=["exit", "segfault"],
)
async def test_a_dying_task_is_a_clear_error(pool: SandboxPool, code: str, message: str) -> None:
    with pytest.raises(SandboxError, match=message) as raised:
        await pool.run(code, {}, {})

    assert raised.value.type_name == "SandboxError"
    assert await ok(pool, "result = 2") == 2


async def test_python_runs_again_after_the_zygote_dies() -> None:
    sandbox = SandboxPool(LIMITS, warm=1)
    try:
        await sandbox.start()
        assert sandbox.zygote_pid is not None
        os.kill(sandbox.zygote_pid, signal.SIGKILL)
        results: list[Any] = []
        for _ in range(2):  # a child forked before the death may still be handed out once
            try:
                results.append((await sandbox.run("result = 5", {}, {})).result)
            except SandboxError as exc:
                results.append(str(exc))
        assert results[-1] == 5
    finally:
        await sandbox.aclose()


# -- layers -------------------------------------------------------------------------------------
async def test_layers_in_force_are_reported(pool: SandboxPool) -> None:
    layers = pool.layers

    assert layers["process"].startswith("on")
    assert layers["uid"].startswith("on" if ROOT else "off")
    assert layers["landlock"].startswith("on" if LANDLOCK >= 6 else ("partial" if LANDLOCK else "off"))


def _as_uid(uid: int, then: Any) -> int:
    """Fork a process that becomes ``uid`` and runs ``then()`` (its return value is the exit code)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            code = then()
        finally:
            os._exit(code)
    return pid


@pytest.mark.skipif(not ROOT, reason="needs root to run two processes of another, same uid")
@pytest.mark.parametrize("undumpable", [False, True])
def test_a_non_dumpable_worker_hides_its_environ_from_its_own_uid(undumpable: bool) -> None:
    uid = 61001
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()

    def hold() -> int:
        # changing uid already cleared the flag (fs.suid_dumpable 0): start from a dumpable process
        set_dumpable(True)
        if undumpable:
            assert make_undumpable()
        os.write(ready_w, b"x")
        os.read(done_r, 1)
        return 0

    def peek(pid: int) -> int:
        try:
            text = Path(f"/proc/{pid}/environ").read_bytes()
        except PermissionError:
            return 13
        return 0 if b"PATH=" in text else 2

    holder = _as_uid(uid, hold)
    try:
        assert os.read(ready_r, 1) == b"x"
        reader = _as_uid(uid, lambda: peek(holder))
        _, status = os.waitpid(reader, 0)
    finally:
        os.write(done_w, b"x")
        os.waitpid(holder, 0)
        for fd in (ready_r, ready_w, done_r, done_w):
            os.close(fd)

    # the same uid reads the environment of a dumpable process: the layer is what stops it
    assert os.WEXITSTATUS(status) == (13 if undumpable else 0)


LAYER_PROBE = (
    "import os, signal\nout = {}\n"
    "try:\n    out['environ'] = open(f'/proc/{worker}/environ', 'rb').read().decode('latin-1')\n"
    "except OSError as exc:\n    out['environ'] = type(exc).__name__\n"
    "try:\n    open(os.path.join(folder, 'evil.py'), 'w').close()\n    out['write'] = 'allowed'\n"
    "except OSError as exc:\n    out['write'] = type(exc).__name__\n"
    "try:\n    os.kill(worker, 0)\n    out['signal'] = 'sent'\n"
    "except OSError as exc:\n    out['signal'] = type(exc).__name__\n"
    "result = out\n"
)


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(
            "uid",
            marks=pytest.mark.skipif(not ROOT, reason="the uid drop needs a root worker"),
        ),
        pytest.param(
            "landlock",
            marks=pytest.mark.skipif(
                LANDLOCK < 6, reason="needs Landlock ABI >= 6 (filesystem and signal scope)"
            ),
        ),
    ],
)
async def test_with_a_layer_left_off_the_worker_stays_closed(layer: str) -> None:
    """``layer`` is the one left on of the two: the uid drop (no Landlock) or Landlock (the
    task's process as root). Signals may also stop at the child's pid namespace (root)."""
    # the worker's own folder: 0755 for the uid layer (file modes), 0777 for Landlock (no modes)
    with tempfile.TemporaryDirectory(prefix="worker-owned-") as folder:
        os.chmod(folder, 0o755 if layer == "uid" else 0o777)
        os.environ["NOETL_API_TOKEN"] = SECRET
        sandbox = SandboxPool(LIMITS, warm=0, landlock=layer == "landlock", drop_uid=layer == "uid")
        try:
            await sandbox.start()
            seen = await ok(sandbox, LAYER_PROBE, worker=os.getpid(), folder=folder)
        finally:
            await sandbox.aclose()
            os.environ.pop("NOETL_API_TOKEN", None)

        assert SECRET not in seen["environ"] and seen["write"] == "PermissionError", seen
        assert seen["signal"] != "sent" and os.listdir(folder) == []


@pytest.fixture
def leftover_roots() -> Iterator[tuple[str, str]]:
    """(a dead worker's task-folder root, a live worker's), in the temp folder."""
    dead = os.fork()  # a pid that no longer runs
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    stale = Path(tempfile.gettempdir(), f"noetl-sandbox-{dead}-leftover")
    stale.joinpath("task-x").mkdir(parents=True)
    live = Path(tempfile.gettempdir(), f"noetl-sandbox-{os.getpid()}-alive")
    live.mkdir()
    try:
        yield str(stale), str(live)
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


async def test_task_folders_of_a_killed_worker_are_removed_at_the_next_start(
    leftover_roots: tuple[str, str],
) -> None:
    stale, live = leftover_roots
    sandbox = SandboxPool(LIMITS, warm=0)
    try:
        await sandbox.start()
    finally:
        await sandbox.aclose()

    assert sorted(os.listdir(tempfile.gettempdir())).count(os.path.basename(stale)) == 0
    assert os.path.basename(live) in os.listdir(tempfile.gettempdir())  # a live worker's stays


async def test_a_child_serves_one_key_and_never_another(pool: SandboxPool) -> None:
    # a child is pid 1 of its own namespace: it is told apart by a mark it leaves in a module
    pid = "import sys, uuid\nsys.noetl_mark = getattr(sys, 'noetl_mark', None) or str(uuid.uuid4())\nresult = sys.noetl_mark"

    async def run(key: str | None, code: str = pid) -> Any:
        reply = await pool.run(code, {}, {}, key)
        assert reply.ok, reply.error_message
        return reply.result

    first, again = await run("exec-a"), await run("exec-a")
    other = await run("exec-b")
    assert first == again  # kept for the key's next task: no fork, no confinement
    assert other != first  # another key (playbook) never gets it
    # fresh globals every task, while modules stay imported
    assert await run("exec-a", "import json\nresult = 'seen' in globals()") is False
    assert await run("exec-a", "seen = 1\nresult = 1") == 1
    assert await run("exec-a", "result = 'seen' in globals()") is False
    # without a key, a child is never kept
    assert await run(None) != await run(None)
    # a task that spends its CPU budget ends its child
    spent = await pool.run("while True:\n    pass\n", {}, {}, "exec-a")
    assert not spent.ok and spent.error_type == "TimeoutError"
    assert await run("exec-a") != first
    assert pool.kept <= pool.keep


async def test_kept_children_end_once_idle_past_their_time() -> None:
    sandbox = SandboxPool(LIMITS, warm=1, keep=2, keep_seconds=0.2)
    try:
        await sandbox.start()
        reply = await sandbox.run("import os\nresult = os.getpid()", {}, {}, "exec-a")
        assert reply.ok and sandbox.kept == 1
        for key in ("exec-b", "exec-c"):  # over the cap: the oldest kept child goes
            assert (await sandbox.run("result = 1", {}, {}, key)).ok
        assert sandbox.kept == 2
        await asyncio.wait_for(sandbox.kept_drained(), 10)
        assert sandbox.kept == 0
    finally:
        await sandbox.aclose()


async def test_the_python_tool_shares_a_child_within_a_playbook_only(pool: SandboxPool) -> None:
    from noetl_system_worker._runtime import ToolRuntime, current_runtime

    tool = SandboxedPython(pool)
    mark = {
        "code": "import sys, uuid\nsys.noetl_mark = getattr(sys, 'noetl_mark', None) or str(uuid.uuid4())\nresult = sys.noetl_mark"
    }

    async def run_in(path: str, execution_id: int) -> Any:
        token = current_runtime.set(ToolRuntime(execution_id=execution_id, catalog_path=path))
        try:
            return await tool(dict(mark), {}, {})
        finally:
            current_runtime.reset(token)

    first = await run_in("team-a/etl", 1)
    assert await run_in("team-a/etl", 2) == first  # another execution of the same playbook
    assert await run_in("team-b/etl", 3) != first  # another playbook: another child
