"""Where this checkout is, and where the shared conformance set lives beside it.

The set is not part of the repository: it is read from ``../shared/conformance`` relative to
the repository root, or from wherever ``NOETL_CONFORMANCE_DIR`` points.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFORMANCE_DIR_VARIABLE = "NOETL_CONFORMANCE_DIR"
#: Marks the workspace's own pyproject.toml (the packages' ones have no such table).
_WORKSPACE_TABLE = "[tool.uv.workspace]"


class ConformanceSetMissing(FileNotFoundError):
    """The shared conformance set is not where it was looked for."""


def repository_root() -> Path:
    """The checkout this package runs from: the nearest folder above this file that holds the
    workspace's pyproject.toml or a ``.git`` (a folder, or a file in a git worktree)."""
    here = Path(__file__).resolve()
    for folder in here.parents:
        if _is_workspace(folder / "pyproject.toml") or (folder / ".git").exists():
            return folder
    raise FileNotFoundError(f"no repository root above {here}: no workspace pyproject.toml and no .git")


def conformance_dir() -> Path:
    """The shared conformance set (``upstream/``, ``e2e-fixtures/``, ``support/``).

    ``NOETL_CONFORMANCE_DIR`` if set, else ``../shared/conformance`` from the repository root.
    Raises :class:`ConformanceSetMissing` naming the folder and the variable when it is absent.
    """
    configured = os.environ.get(CONFORMANCE_DIR_VARIABLE)
    if configured:
        path, source = Path(configured), f"{CONFORMANCE_DIR_VARIABLE}={configured}"
    else:
        root = repository_root()
        path, source = root.parent / "shared" / "conformance", f"../shared/conformance from {root}"
    if not path.is_dir():
        raise ConformanceSetMissing(
            f"the shared conformance set is not at {path} ({source}); "
            f"set {CONFORMANCE_DIR_VARIABLE} to the folder that holds upstream/ and e2e-fixtures/"
        )
    return path


def _is_workspace(pyproject: Path) -> bool:
    try:
        return _WORKSPACE_TABLE in pyproject.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return False
