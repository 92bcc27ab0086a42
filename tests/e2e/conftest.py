"""Whole-system fixtures: the real suite (Postgres, nats-server, four services) on free ports.

One stack per test session under a temporary state dir. Set NOETL_TEST_DATABASE_URL (an
admin URL allowed to CREATE DATABASE) or NOETL_TEST_NATS_URL to use existing servers.

NOETL_E2E_API_URL (with NOETL_E2E_DATABASE_URL, the suite's database as seen from here) runs the
tests against a deployment that is already up, e.g. the kind cluster of k8s/e2e-kind.sh: no local
Stack is started. Tests that need the local Stack itself (kill or restart its processes, read its
logs or NATS, start their own, or hand its database URL to a worker as a credential) skip then.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import suite_stack
from psycopg.rows import dict_row

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


REMOTE_API_URL = os.environ.get("NOETL_E2E_API_URL", "").rstrip("/")
REMOTE_DATABASE_URL = os.environ.get("NOETL_E2E_DATABASE_URL", "")
NEEDS_LOCAL_STACK = (
    "needs the local Stack (kills or restarts its processes, reads its logs or NATS, starts its own, "
    "or gives its database URL to a worker): NOETL_E2E_API_URL points at an existing deployment"
)


def skip_if_remote() -> None:
    if REMOTE_API_URL:
        pytest.skip(NEEDS_LOCAL_STACK)


@pytest.fixture(scope="session")
def stack(noetl_state_dir: Path) -> Iterator[Stack]:
    skip_if_remote()
    with suite_stack(noetl_state_dir / "stack", database_prefix="e2e") as running:
        yield running


@pytest.fixture(scope="session")
def api_url(request: pytest.FixtureRequest) -> str:
    """The API under test: NOETL_E2E_API_URL's, else the local Stack's (started on first use)."""
    if REMOTE_API_URL:
        return REMOTE_API_URL
    stack: Stack = request.getfixturevalue("stack")
    return stack.api_url


@pytest.fixture(scope="session")
def api_token(request: pytest.FixtureRequest) -> str:
    """An admin token of the API under test: NOETL_API_TOKEN for a deployment, else the Stack's."""
    if REMOTE_API_URL:
        token = os.environ.get("NOETL_API_TOKEN")
        if not token:
            pytest.skip("NOETL_E2E_API_URL is set without NOETL_API_TOKEN (an admin token of that deployment)")
        return token
    stack: Stack = request.getfixturevalue("stack")
    return stack.token


@pytest.fixture(scope="session")
def auth(api_token: str) -> dict[str, str]:
    """The admin's Authorization header for direct HTTP calls."""
    return {"authorization": f"Bearer {api_token}"}


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    if REMOTE_API_URL:
        if not REMOTE_DATABASE_URL:
            pytest.skip("NOETL_E2E_API_URL is set without NOETL_E2E_DATABASE_URL: no database to read")
        return REMOTE_DATABASE_URL
    stack: Stack = request.getfixturevalue("stack")
    assert stack.database_url is not None
    return stack.database_url


@pytest.fixture(scope="session")
def api(api_url: str, api_token: str) -> Iterator[Api]:
    with Api(api_url, token=api_token) as client:
        for file in sorted(EXAMPLES.glob("*.yaml")) + sorted(PLAYBOOKS.glob("*.yaml")):
            client.register_file(file)
        yield client


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def cli(api_url: str, api: Api, api_token: str) -> Callable[..., CliResult]:
    """Run the real ``noetl`` CLI in a subprocess against the API under test, as the admin."""

    def run(*args: str, timeout: float = 120.0) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "noetl_cli", "--server", api_url, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
            env={**os.environ, "NOETL_API_TOKEN": api_token},
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run
