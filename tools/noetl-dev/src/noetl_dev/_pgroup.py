"""Find, signal and wait for process groups by pid, without being their parent.

Every process the dev stack starts leads its own session, so its pid is also its
process-group id. ``noetl-dev down`` runs in a different process from ``up``: it
cannot ``waitpid`` the children, so it reads ``/proc`` to tell when a group is gone.
A pid is only ours while its start time matches the one recorded at start, which
guards against pid reuse after a reboot or a long pause.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; split after it.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if given) has the recorded start time."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def _live(field: int, value: int) -> list[int]:
    """Live (non-zombie) pids whose ``/proc/<pid>/stat`` field ``field`` (after the command
    name: 1 = parent pid, 2 = process group) is ``value``."""
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in ("Z", "X") and int(fields[field]) == value:
            found.append(int(entry.name))
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is ``pgid``."""
    return _live(2, pgid)


def children(pid: int) -> list[int]:
    """Live pids whose parent is ``pid``."""
    return _live(1, pid)


def kill_server(pid: int, grace: float = 5.0) -> list[int]:
    """SIGKILL a server and every process it forked, as a machine or container dying would,
    and wait until all are gone. Its group alone is not enough for Postgres: each backend
    calls ``setsid()`` and leads a group of its own, so a killed postmaster leaves backends
    that still hold its shared memory for a moment, and a new postmaster started then
    refuses ("pre-existing shared memory block is still in use"). The server is stopped
    (SIGSTOP) before its children are listed, so none forked after the listing survives.
    Returns the pids left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGSTOP)
    kids = children(pid)
    left = stop_group(pid, signal.SIGKILL, grace)
    for kid in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(kid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while (alive := [kid for kid in kids if is_running(kid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left + alive


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Poll until no live member of ``pgid`` is left; False on timeout."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(pgid: int, first_signal: int = signal.SIGTERM, grace: float = 15.0) -> list[int]:
    """Signal a group, wait ``grace`` seconds, then SIGKILL what is left.

    Returns the pids still alive afterwards (empty when the group is fully gone).
    """
    return stop_groups([(pgid, first_signal)], grace)


def stop_groups(targets: list[tuple[int, int]], grace: float = 15.0) -> list[int]:
    """Stop several groups at once: each gets its signal, then one shared ``grace``
    before SIGKILL. Returns the pids still alive afterwards."""
    live = [(pgid, sig) for pgid, sig in targets if group_members(pgid)]
    for pgid, sig in live:
        signal_group(pgid, sig)
    deadline = time.monotonic() + grace
    pending = [pgid for pgid, _ in live]
    while pending and time.monotonic() < deadline:
        pending = [pgid for pgid in pending if group_members(pgid)]
        if pending:
            time.sleep(0.05)
    for pgid in pending:
        signal_group(pgid, signal.SIGKILL)
    for pgid in pending:
        wait_group_gone(pgid, 10.0)
    return [pid for pgid in pending for pid in group_members(pgid)]


def parent_death_signal() -> None:
    """Child-side hook (``preexec_fn``): get SIGTERM if the parent dies (attached stacks, e.g. tests)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
