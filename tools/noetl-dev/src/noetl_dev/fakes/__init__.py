"""In-memory fakes of the control-api, one per service that calls it.

Each stands in for the slice of the HTTP API one service uses, in that service's tests:
``FakeControlPlane`` for the worker, ``MemoryOutbox`` for the outbox publisher, ``MemorySink``
for the projector. ``tests/contracts`` holds them to the real control-api's behaviour.
"""

from ._control_plane import FakeCommand, FakeControlPlane, api_error
from ._outbox import MemoryOutbox
from ._sink import MemorySink

__all__ = ["FakeCommand", "FakeControlPlane", "MemoryOutbox", "MemorySink", "api_error"]
