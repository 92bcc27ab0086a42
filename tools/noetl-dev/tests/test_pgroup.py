"""Stopping process groups by pid, as `noetl-dev down` does from another process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from noetl_dev._pgroup import group_members, is_running, kill_server, start_time, stop_group
from noetl_dev._recorded import STATE_FILE, stop_recorded

# A parent that starts a grandchild in the same group, ignores SIGTERM unless told not to,
# and prints when both are up so the test never guesses with a sleep.
TREE = """
import signal, subprocess, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _spawn_tree(mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE, mode], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    return proc, grandchild


def test_stop_group_takes_the_grandchildren_too() -> None:
    proc, grandchild = _spawn_tree("polite")
    assert sorted(group_members(proc.pid)) == sorted([proc.pid, grandchild])

    assert stop_group(proc.pid, signal.SIGTERM, grace=10) == []

    proc.wait(5)
    assert proc.returncode == -signal.SIGTERM
    assert not is_running(grandchild)


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc, grandchild = _spawn_tree("stubborn")

    assert stop_group(proc.pid, signal.SIGTERM, grace=0.5) == []

    proc.wait(5)
    assert proc.returncode == -signal.SIGKILL
    assert group_members(proc.pid) == []
    assert not is_running(grandchild)


# A server that keeps forking children which leave its group (as Postgres backends do with
# setsid); each child appends its pid to a file before it waits.
FORKER = """
import os, sys, time
path = sys.argv[1]
while True:
    if os.fork() == 0:
        os.setsid()
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(600)
        os._exit(0)
    time.sleep(0.002)
"""


def test_kill_server_leaves_no_child_alive_even_one_forked_during_the_kill(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    seen: list[int] = []
    try:
        for _ in range(5):  # a few rounds, each with the server forking as fast as it can
            pids.write_text("")
            proc = subprocess.Popen([sys.executable, "-c", FORKER, str(pids)], start_new_session=True)
            while len(pids.read_text().split()) < 20:  # wait for the server to be forking
                assert proc.poll() is None, "the forking server exited"
            assert kill_server(proc.pid) == []
            proc.wait(5)
            seen += [int(pid) for pid in pids.read_text().split()]
            assert [pid for pid in seen if is_running(pid)] == []
    finally:
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_stop_recorded_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    proc, _ = _spawn_tree("polite")
    try:
        started = start_time(proc.pid)
        assert started is not None
        state = {"processes": {"impostor": {"pid": proc.pid, "started": started + 1, "signal": 15}}}
        (tmp_path / STATE_FILE).write_text(json.dumps(state))

        assert stop_recorded(tmp_path) == ([], [])
        assert is_running(proc.pid, started)

        state["processes"]["impostor"]["started"] = started
        (tmp_path / STATE_FILE).write_text(json.dumps(state))
        assert stop_recorded(tmp_path, grace=10) == (["impostor"], [])
        assert not (tmp_path / STATE_FILE).exists()
    finally:
        stop_group(proc.pid, signal.SIGKILL, 5)
        proc.wait(5)
