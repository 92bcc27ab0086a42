"""An in-memory event sink standing in for the control-api's project route (NATS stays real)."""

from __future__ import annotations

import pytest
from noetl_dev.fakes import MemorySink


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()
