"""``Api.wait`` (``noetl execute --wait``): long-polls ``GET /api/executions/{id}?wait=``.

A fake control-api (httpx.MockTransport) on a fake clock: a held reply advances the clock
by the wait it was asked for, so the tests see exactly which waits were asked and whether
the client ever slept between them.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from noetl_cli import Api
from noetl_cli import _api as api_module
from noetl_cli._api import WaitTimeout


class Clock:
    """Stands in for the ``time`` module of the client."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Server:
    """Answers GET /api/executions/7 with the given statuses in turn, holding each RUNNING reply."""

    def __init__(self, clock: Clock, statuses: list[str], *, holds: bool = True) -> None:
        self.clock = clock
        self.statuses = statuses
        self.holds = holds
        self.waits: list[float | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/executions/7"
        raw = request.url.params.get("wait")
        wait = None if raw is None else float(raw)
        self.waits.append(wait)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if status == "RUNNING" and wait is not None and self.holds:
            self.clock.now += wait  # nothing happened: held for the whole wait
        return httpx.Response(200, json={"execution_id": 7, "status": status})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(api_module, "time", fake)
    return fake


@pytest.fixture
def client() -> Callable[[Server], Api]:
    def make(server: Server) -> Api:
        api = Api("http://control-api.test")
        api._http = httpx.Client(base_url=api.server, transport=httpx.MockTransport(server))
        return api

    return make


def test_wait_long_polls_until_the_end_without_sleeping(
    clock: Clock, client: Callable[[Server], Api]
) -> None:
    server = Server(clock, ["RUNNING", "RUNNING", "COMPLETED"])

    final = client(server).wait(7, timeout=70)

    assert final["status"] == "COMPLETED"
    # every request is a long-poll, of 30 s or the time left if that is less
    assert server.waits == [30.0, 30.0, 10.0]
    assert clock.slept == []  # the server's reply is the signal: no poll interval


def test_wait_asks_only_for_the_time_left_then_times_out(
    clock: Clock, client: Callable[[Server], Api]
) -> None:
    server = Server(clock, ["RUNNING"])

    with pytest.raises(WaitTimeout) as raised:
        client(server).wait(7, timeout=0.2)

    assert server.waits == [0.2]
    assert raised.value.last["status"] == "RUNNING"
    assert "still RUNNING after 0.2s" in str(raised.value)


def test_a_server_that_does_not_hold_the_reply_is_not_hammered(
    clock: Clock, client: Callable[[Server], Api]
) -> None:
    """One that answers RUNNING at once (shutting down, or without ``wait``) gets the old pace."""
    server = Server(clock, ["RUNNING", "RUNNING", "RUNNING", "FAILED"], holds=False)

    final = client(server).wait(7, timeout=60, interval=0.2)

    assert final["status"] == "FAILED"
    assert len(server.waits) == 4 and clock.slept == [0.2, 0.2, 0.2]


def test_a_finished_execution_needs_one_request(clock: Clock, client: Callable[[Server], Api]) -> None:
    server = Server(clock, ["CANCELLED"])

    assert client(server).wait(7, timeout=60)["status"] == "CANCELLED"
    assert len(server.waits) == 1 and clock.slept == []
