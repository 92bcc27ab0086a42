"""A NATS connection that retries its first connect and reconnects forever after.

nats-py's ``connect`` with unbounded reconnects does not return while no server answers:
it keeps trying in place. So every connect races the process's stop event; when stop
wins, the pending connect is cancelled and the half-made client closed, and a process
told to stop while NATS is down exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.client import Client as NATS
from structlog.typing import FilteringBoundLogger

from ._waiting import Backoff, wait_or_stop

#: How long closing a client may take before it is abandoned (a dead server must not hang shutdown).
_CLOSE_SECONDS = 5.0


class NatsLink:
    """Owns the process's NATS connection; ``connected`` mirrors the client's real state.

    ``url`` may list several servers of one cluster, comma-separated.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None,
        password: str | None,
        name: str,
        log: FilteringBoundLogger,
        max_backoff: float,
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
        while not stop.is_set():
            try:
                nc = await self._connect_or_stop(stop)
            except Exception as exc:
                delay = backoff.next()
                self._log.warning(
                    "nats_connect_failed", url=self._url, error=str(exc), retry_in=round(delay, 2)
                )
                if await wait_or_stop(stop, delay):
                    break
                continue
            if nc is None:
                break
            self.nc = nc
            self._log.info("nats_connected", url=self._url)
            return nc
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
            await asyncio.wait_for(self.nc.drain(), timeout=_CLOSE_SECONDS)
        except Exception:
            with contextlib.suppress(Exception):
                await self.nc.close()

    async def _connect_or_stop(self, stop: asyncio.Event) -> NATS | None:
        """One connect (which nats-py retries in place until a server answers) raced against
        ``stop``: the connected client, or None when stop came first. Raises what connect raised."""
        nc = NATS()
        attempt = asyncio.ensure_future(
            nc.connect(
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
        stopping = asyncio.ensure_future(stop.wait())
        cut_short = False
        try:
            await asyncio.wait({attempt, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not attempt.done():
                cut_short = True
                attempt.cancel()
                await asyncio.wait({attempt})
                await _discard(nc)
        if cut_short:
            return None
        error = attempt.exception()
        if error is not None:
            await _discard(nc)
            raise error
        return nc

    async def _on_disconnected(self) -> None:
        if self.nc is not None:  # not the half-made client of a connect that stop cut short
            self._log.warning("nats_disconnected")

    async def _on_reconnected(self) -> None:
        self._log.info("nats_reconnected")

    async def _on_error(self, exc: Exception) -> None:
        self._log.warning("nats_error", error=str(exc))


async def _discard(nc: NATS) -> None:
    """Close a client whose connect was cancelled: its socket and tasks, whatever state it got to."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout=_CLOSE_SECONDS)
