"""The one logging setup: the services' own events at INFO, not a line per HTTP request."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog
from noetl_common import ControlPlaneClient, configure_logging, serve_ops
from noetl_common._logging import CHATTY_LOGGERS
from noetl_dev import free_port
from noetl_dev.testing import eventually


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            await http.get(url)
    except httpx.TransportError:
        return False
    return True


async def test_an_api_call_logs_no_info_record(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging("test", "INFO")
    caplog.set_level(logging.INFO)  # the root at INFO, as the setup leaves it in a service process
    port = free_port()
    async with (
        serve_ops("127.0.0.1", port, lambda: True),
        ControlPlaneClient(f"http://127.0.0.1:{port}") as client,
    ):
        await eventually(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        caplog.clear()

        assert await client.request("GET", "/healthz", None, dict) == {"status": "ok"}

    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO] == []
    logging.getLogger("app").info("still_logged")
    assert [r.getMessage() for r in caplog.records] == ["still_logged"]


def test_http_request_lines_show_at_debug() -> None:
    configure_logging("test", "DEBUG")
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.DEBUG for name in CHATTY_LOGGERS)
    configure_logging("test", "INFO")
    assert all(logging.getLogger(name).getEffectiveLevel() == logging.WARNING for name in CHATTY_LOGGERS)
