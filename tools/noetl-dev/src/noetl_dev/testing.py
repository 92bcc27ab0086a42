"""Helpers for whole-system tests: the suite started for a test session (:func:`suite_stack`),
bounded condition waits, reads of the event log, and where the shared conformance set is
(:func:`conformance_dir`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from ._local_http import JsonHandler, local_http, url_of
from ._procs import create_database
from ._repository import ConformanceSetMissing, conformance_dir, repository_root
from ._stack import Stack

__all__ = [
    "ConformanceSetMissing",
    "JsonHandler",
    "config_error",
    "conformance_dir",
    "eventually",
    "get_until",
    "get_when_up",
    "local_http",
    "recorded_events",
    "repository_root",
    "stop_with_sigterm",
    "suite_stack",
    "url_of",
    "wait_for_event",
    "wait_until",
]

T = TypeVar("T")
Conn = psycopg.Connection[dict[str, Any]]


@contextmanager
def suite_stack(
    state_dir: Path,
    *,
    database_prefix: str | None,
    require_clean_stop: bool = True,
    **options: Any,
) -> Iterator[Stack]:
    """The whole suite started under ``state_dir`` for the tests of a session or module, stopped
    after them.

    ``database_prefix``: with ``NOETL_TEST_DATABASE_URL`` set, the suite gets a fresh database
    ``<prefix>_<hex>`` in that server, and with ``NOETL_TEST_NATS_URL`` that NATS; ``None``
    always starts embedded servers (for tests that kill them). ``require_clean_stop``: fail
    the teardown when a process is left running after the stop. ``options`` go to
    :class:`Stack` (``ready_timeout`` 90 s unless given).
    """
    if database_prefix is not None:
        admin = os.environ.get("NOETL_TEST_DATABASE_URL")
        if admin:
            options["database_url"] = create_database(admin, f"{database_prefix}_{uuid.uuid4().hex[:12]}")
        options["nats_url"] = os.environ.get("NOETL_TEST_NATS_URL") or None
    options.setdefault("ready_timeout", 90.0)
    running = Stack(state_dir, **options)
    running.start()
    try:
        yield running
    finally:
        leftovers = running.stop(grace=10.0)
        if require_clean_stop:
            assert not leftovers, f"processes left running after stop: {leftovers}"


def wait_until(condition: Callable[[], T | None], timeout: float = 30.0, message: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError naming ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(0.05)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll an async condition (e.g. JetStream ack state, which sends no notification) until it
    holds; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within timeout")
        await asyncio.sleep(0.02)


def get_when_up(url: str, timeout: float = 15.0) -> httpx.Response:
    """GET ``url`` once something answers there (bounded); connection refused means not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def get_until(
    url: str, accept: Callable[[httpx.Response], bool], timeout: float = 15.0, message: str = "a reply"
) -> httpx.Response:
    """GET ``url`` (once something answers there) until ``accept`` takes the reply (bounded)."""

    def accepted() -> httpx.Response | None:
        reply = get_when_up(url, timeout)
        return reply if accept(reply) else None

    return wait_until(accepted, timeout, f"{message} from {url}")


def stop_with_sigterm(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    """SIGTERM a service process started with ``stderr=PIPE``; it must exit 0 within
    ``timeout``. Returns what it wrote to stderr (its logs)."""
    assert proc.poll() is None, f"the process exited early with {proc.returncode}"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=timeout)
    logs = stderr.decode(errors="replace") if stderr else ""
    assert proc.returncode == 0, logs[-2000:]
    return logs


def config_error(argv: list[str], env: dict[str, str]) -> list[str]:
    """Run a service that must refuse its configuration: exit 2; returns its stderr lines."""
    result = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
    assert result.returncode == 2, result.stderr.decode(errors="replace")[-2000:]
    return result.stderr.decode().strip().splitlines()


def recorded_events(db: Conn, execution_id: int) -> list[dict[str, Any]]:
    """Rows of ``noetl.event`` (the projected read model) for one execution, in id order."""
    return db.execute(
        "select event_id, event_type, step, status, context, meta from noetl.event"
        " where execution_id = %s order by event_id",
        (execution_id,),
    ).fetchall()


def wait_for_event(
    db: Conn, execution_id: int, event_type: str, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Wait until the projector has written ``event_type`` for the execution; return all its events."""

    def landed() -> list[dict[str, Any]] | None:
        events = recorded_events(db, execution_id)
        return events if any(e["event_type"] == event_type for e in events) else None

    return wait_until(landed, timeout, f"{event_type} of execution {execution_id} in noetl.event")
