"""A NATS connection that retries its first connect and reconnects forever after."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats
from nats.aio.client import Client as NATS

from ._waiting import Backoff, wait_or_stop


class NatsLink:
    """Owns the process's NATS connection; ``connected`` mirrors the client's real state.

    ``url`` may list several servers of one cluster, comma-separated.
    """

    def __init__(
        self, url: str, *, user: str | None, password: str | None, name: str, log: Any, max_backoff: float
    ) -> None:
        self._url = url
        self._user = user
        self._password = password
        self._name = name
        self._log = log
        self._max_backoff = max_backoff
        self.nc: NATS | None = None

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def connect(self, stop: asyncio.Event) -> NATS | None:
        """Connect, retrying with backoff; None when ``stop`` was set first.

        With unlimited reconnects nats-py retries even the first connect forever, so each
        attempt is raced against ``stop``: a SIGTERM before NATS is reachable still returns.
        """
        backoff = Backoff(self._max_backoff)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                attempt = asyncio.ensure_future(
                    nats.connect(
                        [url.strip() for url in self._url.split(",") if url.strip()],
                        user=self._user,
                        password=self._password,
                        name=self._name,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=1,
                        connect_timeout=5,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        error_cb=self._on_error,
                    )
                )
                await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not attempt.done():
                    attempt.cancel()
                    await asyncio.gather(attempt, return_exceptions=True)
                    break
                try:
                    self.nc = attempt.result()
                except Exception as exc:
                    delay = backoff.next()
                    self._log.warning(
                        "nats_connect_failed", url=self._url, error=str(exc), retry_in=round(delay, 2)
                    )
                    if await wait_or_stop(stop, delay):
                        break
                    continue
                self._log.info("nats_connected", url=self._url)
                return self.nc
        finally:
            stopping.cancel()
        return None

    async def close(self, *, drain: bool = True) -> None:
        """Flush pending acks/publishes and close; bounded so a dead server cannot hang shutdown.

        ``drain=False`` flushes and closes without draining subscriptions: a JetStream pull
        subscription's internal queue, which ``fetch`` never marks done, would hold a drain
        for its whole timeout.
        """
        if self.nc is None or self.nc.is_closed:
            return
        if not drain:
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await self.nc.close()
            return
        try:
            await asyncio.wait_for(self.nc.drain(), timeout=5)
        except Exception:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _on_disconnected(self) -> None:
        self._log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        self._log.info("nats_reconnected")

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("nats_error", error=str(exc))
