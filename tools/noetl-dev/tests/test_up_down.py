"""`noetl-dev up` detaches the whole suite and runs examples/hello; `down` leaves nothing behind."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from noetl_dev import free_port, read_state
from noetl_dev._pgroup import group_members, is_running, stop_group

EXPECTED = {
    "postgres",
    "nats",
    "control-api",
    "outbox-publisher",
    "projector",
    "worker-shared",
    "worker-system",
}


def _dev(state_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noetl_dev", "--state-dir", str(state_dir), "--grace", "10", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def state_dir(noetl_state_dir: Path, request: pytest.FixtureRequest) -> Path:
    return noetl_state_dir / f"dev-{request.node.name}"


def test_up_runs_hello_and_down_stops_every_process(state_dir: Path) -> None:
    api_port = free_port()
    up = _dev(state_dir, "up", "--api-port", str(api_port))
    state = read_state(state_dir)
    processes = state["processes"] if state else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert state is not None
        assert "examples/hello: execution" in up.stdout and "COMPLETED" in up.stdout
        assert "Hello, World!" in up.stdout
        assert f"http://127.0.0.1:{api_port}" in up.stdout
        assert set(processes) == EXPECTED
        assert all(is_running(p["pid"], p["started"]) for p in processes.values())
        assert state["api_url"] == f"http://127.0.0.1:{api_port}"
        assert (state_dir / "stack.json").stat().st_mode & 0o077 == 0  # holds the token
        for name in EXPECTED:
            assert (state_dir / "logs" / f"{name}.log").exists()

        again = _dev(state_dir, "up", "--api-port", str(api_port))
        assert again.returncode == 0 and "already up" in again.stdout

        status = _dev(state_dir, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("readyz 200") == 5

        killed = _dev(state_dir, "kill", "worker-system")
        assert killed.returncode == 0 and "killed worker-system" in killed.stdout
        assert not is_running(processes["worker-system"]["pid"], processes["worker-system"]["started"])
        assert _dev(state_dir, "status").returncode == 1
        for name, flags in (("worker-system", []), ("projector", []), ("worker-shared", ["--hard"])):
            restarted = _dev(state_dir, "restart", name, *flags)
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert _dev(state_dir, "restart", "nosuch").stderr.startswith("error: unknown service 'nosuch'")
        now = read_state(state_dir)
        assert now is not None
        for name in ("worker-system", "projector", "worker-shared"):
            assert now["processes"][name]["pid"] != processes[name]["pid"]
            assert is_running(now["processes"][name]["pid"], now["processes"][name]["started"])
            assert not is_running(processes[name]["pid"], processes[name]["started"])
        assert _dev(state_dir, "status").returncode == 0
        restarted_processes = now["processes"]
    finally:
        down = _dev(state_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "the stack is down" in down.stdout
    for name, entry in [*processes.items(), *restarted_processes.items()]:
        assert not is_running(entry["pid"], entry["started"]), name
        assert group_members(entry["pid"]) == [], name
    assert not (state_dir / "stack.json").exists()
    assert _dev(state_dir, "status").returncode == 1


def test_up_refuses_a_busy_api_port(state_dir: Path) -> None:
    # Holding the API port: `up` must say so before starting anything.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        up = _dev(state_dir, "up", "--api-port", str(port), "--no-examples")
    assert up.returncode == 1
    assert f"port {port} is in use" in up.stderr
    assert not (state_dir / "stack.json").exists()


def test_up_after_a_crash_of_everything_starts_afresh(state_dir: Path) -> None:
    first = _dev(state_dir, "up", "--api-port", str(free_port()), "--no-examples")
    state = read_state(state_dir)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        assert state is not None
        for entry in state["processes"].values():  # a power cut: nobody shuts down cleanly
            stop_group(entry["pid"], signal.SIGKILL, 5)

        again = _dev(state_dir, "up", "--api-port", str(free_port()), "--no-examples")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "starting afresh" in again.stdout
        assert _dev(state_dir, "status").returncode == 0
    finally:
        down = _dev(state_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
