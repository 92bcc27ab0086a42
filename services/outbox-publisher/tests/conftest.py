"""An in-memory outbox standing in for the control-api's outbox routes (NATS stays real)."""

from __future__ import annotations

import pytest
from noetl_dev.fakes import MemoryOutbox


@pytest.fixture
def outbox() -> MemoryOutbox:
    return MemoryOutbox()
