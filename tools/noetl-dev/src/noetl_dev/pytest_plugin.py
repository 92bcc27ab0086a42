"""pytest fixtures: real Postgres and real nats-server, throwaway, on free loopback ports.

Set NOETL_TEST_DATABASE_URL (an admin URL allowed to CREATE DATABASE) or NOETL_TEST_NATS_URL
to use existing servers instead of the embedded ones.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._procs import create_database, start_nats, start_postgres


@pytest.fixture(scope="session")
def noetl_state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="noetl-test-") as tmp:
        path = Path(tmp)
        path.chmod(0o755)
        yield path


@pytest.fixture(scope="session")
def postgres_admin_url(noetl_state_dir: Path) -> Iterator[str]:
    """URL of a Postgres the tests may create databases in."""
    external = os.environ.get("NOETL_TEST_DATABASE_URL")
    if external:
        yield external
        return
    proc, url = start_postgres(noetl_state_dir / "pg")
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def database_url(postgres_admin_url: str) -> str:
    """A fresh, empty database for one test."""
    return create_database(postgres_admin_url, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def nats_url(noetl_state_dir: Path) -> Iterator[str]:
    """A fresh nats-server with JetStream for one test (about 10 ms to start)."""
    external = os.environ.get("NOETL_TEST_NATS_URL")
    if external:
        yield external
        return
    proc, url = start_nats(noetl_state_dir / f"nats-{uuid.uuid4().hex[:8]}")
    try:
        yield url
    finally:
        proc.stop()
