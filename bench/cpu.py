"""CPU seconds spent by the bench's stack, read from /proc (Linux).

Every process of the bench stack (Postgres and its backends, nats-server, the four services,
the sandbox zygote and its children) descends from the bench process, so a snapshot sums
``utime + stime`` of each live descendant plus ``cutime + cstime`` (what its reaped children
spent: exited Postgres backends, sandbox children). The bench process itself (the load
generator) is left out. A figure is the difference of two snapshots, taken around one part
of a section during which no stack process was restarted (a restarted process's CPU would
move to the bench process's own ``cutime`` and vanish from the sum).

Wall figures move 2-3x with load on a small machine; CPU per unit of work moves much less,
which makes it the figure to compare across runs and machines.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, cpu seconds of the process and its reaped children), None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of stat(5)); ppid is field 4, utime..cstime 14..17
    ppid = int(fields[1])
    ticks = sum(int(v) for v in fields[11:15])
    return ppid, ticks / TICK


def _name(pid: int) -> str:
    """A short label of a stack process: the service's console script, postgres or nats-server."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    words = [a.decode(errors="replace") for a in argv if a]
    if len(words) > 1 and Path(words[0]).name.startswith("python"):
        words = words[1:]  # a console script: python .venv/bin/noetl-control-api
    return Path(words[0]).name.removeprefix("noetl-") if words else "?"


def snapshot(root: int | None = None) -> dict[str, float]:
    """CPU seconds per top-level stack process (its whole subtree), keyed by label.

    Two processes with the same label (two workers of one pool) are summed."""
    root = os.getpid() if root is None else root
    stats: dict[int, tuple[int, float]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = found
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    totals: dict[str, float] = defaultdict(float)
    for top in children.get(root, []):
        label = _name(top)
        stack = [top]
        while stack:
            pid = stack.pop()
            totals[label] += stats[pid][1]
            stack.extend(children.get(pid, []))
    return dict(totals)


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per label between two snapshots (labels that vanished count as 0)."""
    return {label: max(0.0, after[label] - before.get(label, 0.0)) for label in after}


def per_unit_ms(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """CPU milliseconds per unit of work (a playbook run, a chain step, an event), per label
    and as ``total``."""
    used = spent(before, after)
    figures = {label: seconds * 1000 / units for label, seconds in sorted(used.items())}
    figures["total"] = sum(used.values()) * 1000 / units
    return figures


def describe(figures: dict[str, float] | None) -> str:
    """``total`` then the three largest contributors, for a table cell."""
    if not figures:
        return "n/a"
    parts = sorted(((v, k) for k, v in figures.items() if k != "total"), reverse=True)[:3]
    return f"{figures['total']:.2f} ms ({', '.join(f'{k} {v:.2f}' for v, k in parts)})"
