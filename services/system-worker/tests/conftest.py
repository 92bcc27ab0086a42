"""Fixtures of the system-worker tests: a real nats-server, a fake of our control-api.

NATS is always a real nats-server (``nats_url`` from noetl_dev's plugin); only the
HTTP API is faked (``noetl_dev.fakes.FakeControlPlane``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from noetl_common import ensure_streams
from noetl_dev.fakes import FakeControlPlane
from system_worker_bus import Bus


@pytest.fixture
def fake_api() -> FakeControlPlane:
    """A fresh in-memory control-api."""
    return FakeControlPlane()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A JetStream client on the test's nats-server, with the streams ensured."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    try:
        yield Bus(nc, js)
    finally:
        await nc.close()
