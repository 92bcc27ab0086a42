"""A service that cannot start is named, with the tail of its log, and nothing is left running."""

from __future__ import annotations

from pathlib import Path

import pytest
from noetl_dev import Stack, StackError
from noetl_dev._pgroup import group_members


def test_a_service_that_exits_at_start_is_named_with_its_log(noetl_state_dir: Path) -> None:
    stack = Stack(
        noetl_state_dir / "broken",
        service_overrides={"projector": {"PROJECTOR_METRICS_BIND": "not-an-address"}},
        ready_timeout=60,
    )

    with pytest.raises(StackError) as raised:
        stack.start()

    message = str(raised.value)
    assert message.startswith("projector exited with code")
    assert "PROJECTOR_METRICS_BIND" in message  # the service's own one-line config error, from its log
    assert str(noetl_state_dir / "broken" / "logs" / "projector.log") in message
    started = [s.pid for s in stack.services.values() if s.pid is not None]
    assert stack.postgres is not None and stack.nats is not None
    started += [stack.postgres.pid, stack.nats.pid]
    assert all(group_members(pid) == [] for pid in started)
    assert not (noetl_state_dir / "broken" / "stack.json").exists()
