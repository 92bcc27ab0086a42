"""Whole-system fixtures: the real suite (Postgres, nats-server, four services) on free ports.

One stack per test session under a temporary state dir. Set NOETL_TEST_DATABASE_URL (an
admin URL allowed to CREATE DATABASE) or NOETL_TEST_NATS_URL to use existing servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack, create_database
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def stack(noetl_state_dir: Path) -> Iterator[Stack]:
    database_url = None
    admin = os.environ.get("NOETL_TEST_DATABASE_URL")
    if admin:
        database_url = create_database(admin, f"e2e_{uuid.uuid4().hex[:12]}")
    running = Stack(
        noetl_state_dir / "stack",
        database_url=database_url,
        nats_url=os.environ.get("NOETL_TEST_NATS_URL") or None,
        ready_timeout=90.0,
    )
    running.start()
    try:
        yield running
    finally:
        leftovers = running.stop(grace=10.0)
        assert not leftovers, f"processes left running after stop: {leftovers}"


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[Api]:
    with Api(stack.api_url) as client:
        for file in sorted(EXAMPLES.glob("*.yaml")) + sorted(PLAYBOOKS.glob("*.yaml")):
            client.register_file(file)
        yield client


@pytest.fixture
def db(stack: Stack) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    assert stack.database_url is not None
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def cli(stack: Stack, api: Api) -> Callable[..., CliResult]:
    """Run the real ``noetl`` CLI in a subprocess against the stack."""

    def run(*args: str, timeout: float = 120.0) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "noetl_cli", "--server", stack.api_url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run
