"""Repository hygiene: what every tracked file must respect, whoever adds it.

* No tracked file names an absolute path outside the checkout: not the checkout's own
  absolute path, not its parent folder, not a home folder. Such a path works on one machine
  only; files inside the repository are found relative to it (``repository_root()``), the
  shared corpus beside it through ``noetl_dev.testing.conformance_dir()``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from noetl_dev.testing import repository_root

ROOT = repository_root()
#: Spelt without the literal, so that this file does not name them itself.
HOME_PREFIXES = tuple(f"/{folder}/" for folder in ("home", "Users", "root"))
#: (file, text) occurrences that name no real path, each with the reason it is allowed.
ALLOWED = {
    (
        "services/system-worker/src/noetl_system_worker/sandbox/_confine.py",
        "/root" + "/x",
    ): "a comment showing how nested 0700 folders are walked, not a path the code reads",
}


def tracked_files() -> list[Path]:
    """Every file git tracks in this checkout (relative paths)."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        )
    except (FileNotFoundError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout, nothing to check: {error}")
    return [Path(name) for name in listed.stdout.decode().split("\0") if name]


def text_lines(root: Path, path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines of a tracked text file (binary and deleted files yield nothing)."""
    try:
        data = (root / path).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return
    if b"\0" in data[:8192]:
        return
    yield from enumerate(data.decode("utf-8", "replace").splitlines(), start=1)


def forbidden_paths(root: Path) -> list[str]:
    """The absolute paths no file may contain: the checkout's, its parent folder's, home folders."""
    forbidden = [str(root)]
    if root.parent != root.parent.parent:  # a checkout directly under / has no parent to leak
        forbidden.append(f"{root.parent}/")
    return [*forbidden, *HOME_PREFIXES]


def offences(root: Path, files: list[Path], forbidden: list[str]) -> list[str]:
    """``file:line: ...`` for every line of ``files`` (relative to ``root``) naming a forbidden path."""
    found = []
    for path in files:
        for number, line in text_lines(root, path):
            named = next((text for text in forbidden if text in line), None)
            if named is not None and not _allowed(path, line):
                found.append(f"{path}:{number}: names {named!r}: {line.strip()[:160]}")
    return found


def _allowed(path: Path, line: str) -> bool:
    return any(str(path) == file and text in line for file, text in ALLOWED)


def test_no_tracked_file_names_an_absolute_path_outside_the_repository() -> None:
    problems = offences(ROOT, tracked_files(), forbidden_paths(ROOT))
    assert not problems, "absolute paths that only exist on one machine:\n" + "\n".join(problems)


def test_the_check_finds_each_kind_of_path(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    lines = [
        f"data = '{checkout}/examples/hello.yaml'",
        f"corpus = '{tmp_path}/shared/conformance'",
        "venv = '" + HOME_PREFIXES[0] + "someone/.venv'",
        "relative = '../shared/conformance'",
    ]
    (checkout / "module.py").write_text("\n".join(lines) + "\n")
    (checkout / "blob.bin").write_bytes(b"\0" + str(checkout).encode())
    found = offences(checkout, [Path("module.py"), Path("blob.bin")], forbidden_paths(checkout))
    assert [line.split(":")[1] for line in found] == ["1", "2", "3"], found
