"""``stack.json``: what a running stack records, and acting on it from another process.

``noetl-dev down|status|kill|restart`` run in a different process from ``up``; they find
the stack's processes by the pids, start times and argv recorded here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from ._cluster import stop_order
from ._pgroup import group_members, is_running, start_time, stop_group, stop_groups
from ._services import STOP_WAVES, StackError, tail

STATE_FILE = "stack.json"


def write_state_file(state_dir: Path, state: Mapping[str, Any]) -> Path:
    """Replace ``stack.json`` at once, readable by its owner only (it holds the admin token and
    every service's environment)."""
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    return data


def recorded_processes(state: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from state.get("processes", {}).items()


def running(entry: Mapping[str, Any]) -> bool:
    pid = entry.get("pid")
    return pid is not None and is_running(int(pid), entry.get("started"))


def stop_recorded(state_dir: Path, grace: float = 15.0) -> tuple[list[str], list[str]]:
    """Stop what ``stack.json`` lists (services first, Postgres last).

    Returns (stopped names, names still alive). Pids whose start time no longer matches
    are someone else's now and are left alone.
    """
    state = read_state(state_dir)
    if state is None:
        return [], []
    entries = dict(recorded_processes(state))
    stopped: list[str] = []
    leftovers: list[str] = []
    for wave in stop_order(entries, STOP_WAVES):  # nats-2 with nats, control-api-2 with control-api
        names = [name for name in wave if name in entries and running(entries[name])]
        stop_groups(
            [(int(entries[n]["pid"]), int(entries[n].get("signal", signal.SIGTERM))) for n in names], grace
        )
        for name in names:
            (leftovers if group_members(int(entries[name]["pid"])) else stopped).append(name)
    if not leftovers:
        (state_dir / STATE_FILE).unlink()
    return stopped, leftovers


def _recorded_service(state_dir: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    state = read_state(state_dir)
    if state is None:
        raise StackError(f"no stack recorded in {state_dir / STATE_FILE}")
    entry = state.get("processes", {}).get(name)
    if entry is None or "argv" not in entry:
        services = [n for n, e in state.get("processes", {}).items() if "argv" in e]
        raise StackError(f"unknown service {name!r}; one of: {', '.join(services)}")
    return state, entry


def kill_recorded(state_dir: Path, name: str) -> bool:
    """SIGKILL one recorded service's process group (a crash). False if it was not running."""
    _, entry = _recorded_service(state_dir, name)
    if not running(entry):
        return False
    stop_group(int(entry["pid"]), signal.SIGKILL, 5.0)
    return True


def restart_recorded(
    state_dir: Path, name: str, *, hard: bool = False, grace: float = 15.0, ready_timeout: float = 90.0
) -> int:
    """Stop (SIGTERM, or SIGKILL with ``hard``) and start one recorded service with its
    recorded argv and variables; wait for its /readyz. Returns the new pid."""
    state, entry = _recorded_service(state_dir, name)
    if running(entry):
        stop_group(int(entry["pid"]), signal.SIGKILL if hard else signal.SIGTERM, grace)
    log_path = Path(entry["log"])
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            entry["argv"],
            env={**os.environ, **entry["env"]},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    entry["pid"] = popen.pid
    entry["started"] = start_time(popen.pid)
    write_state_file(state_dir, state)
    deadline = time.monotonic() + ready_timeout
    with httpx.Client(timeout=5.0) as http:
        while True:
            if popen.poll() is not None:
                raise StackError(
                    f"{name} exited with code {popen.returncode} before it was ready; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if http.get(entry["ready_url"]).status_code == 200:
                    return popen.pid
            if time.monotonic() >= deadline:
                raise StackError(
                    f"{name} not ready on {entry['ready_url']} after {ready_timeout:.0f}s; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.1)
