"""The stack starts from a state dir inside a folder only its owner may enter (a checkout in /root)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
from noetl_dev import Stack
from noetl_dev._procs import world_searchable


def test_world_searchable_sees_a_private_parent(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    assert not world_searchable(private / "inner")
    private.chmod(0o755)
    assert world_searchable(tmp_path / "private" / "inner") == world_searchable(tmp_path)


def test_a_stack_under_a_private_folder_starts_and_stops() -> None:
    with tempfile.TemporaryDirectory(prefix="noetl-private-") as tmp:
        home = Path(tmp)
        home.chmod(0o700)
        stack = Stack(home / "repo" / ".state")
        with stack:
            assert httpx.get(f"{stack.api_url}/readyz", timeout=5).status_code == 200
            assert (stack.pg_dir / "pgdata" / "PG_VERSION").exists()
        assert stack.postgres is not None and not stack.postgres.alive()
