"""Fixtures of the contract tests: the real control-api on a fresh database per test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from real_control_api import RunningControlApi, serve_control_api


@pytest.fixture
async def control_api(database_url: str) -> AsyncIterator[RunningControlApi]:
    """The real control-api, served on loopback for one test."""
    async with serve_control_api(database_url) as running:
        yield running
