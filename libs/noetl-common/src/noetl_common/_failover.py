"""One request to the control-api, retried and failed over between its replicas.

``NOETL_SERVER_URL`` may list several replicas of the API, comma-separated. A transport error
or a 502/503/504 moves the sender to the next URL, which then serves every later request too.
A retry goes to the next URL at once; the backoff pause (capped, exponential, ``Retry-After``
honoured) comes once every URL has failed since the last pause, so with one URL this is plain
retrying. A request that never reached a server (connection refused or timed out) spends no
attempt while some URL is still untried, so even a request sent without retries (a claim)
survives a dead replica.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence

import httpx

RETRYABLE = frozenset({502, 503, 504})
#: Transport errors raised before the request left this process: safe to send to another replica.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def api_urls(value: str | Sequence[str]) -> tuple[str, ...]:
    """The control-api base URLs in ``value`` (a comma-separated list, as ``NOETL_SERVER_URL``
    holds, or a sequence), in order, without trailing slashes; ``ValueError`` if there is none."""
    parts = value.split(",") if isinstance(value, str) else value
    urls = tuple(part.strip().rstrip("/") for part in parts if part.strip())
    if not urls:
        raise ValueError("no control-api URL given")
    return urls


def retry_after(response: httpx.Response) -> float | None:
    """The delay a reply asked for (``Retry-After`` in seconds), if any."""
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


class Replicas:
    """The control-api's URLs and the one requests go to now."""

    def __init__(self, urls: str | Sequence[str], http: httpx.AsyncClient, *, retries: int, max_backoff: float):
        self.urls = api_urls(urls)
        self.retries = retries
        self.max_backoff = max_backoff
        self._http = http
        self._current = 0

    @property
    def url(self) -> str:
        """The URL requests go to now (the first until it fails)."""
        return self.urls[self._current]

    async def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The last reply (a 502/503/504 only once the attempts are spent), or the last
        transport error raised."""
        attempts = self.retries if retries is None else retries
        attempt = 0
        delay = 0.1
        untried = len(self.urls)  # URLs not tried since the last pause
        while True:
            index = self._current
            untried -= 1
            pause = delay * (1 + random.random())
            try:
                response = await self._http.request(
                    method,
                    self.urls[index] + path,
                    content=content,
                    headers=headers,
                    params=params,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                self._fail_over(index)
                if isinstance(exc, _NOT_SENT) and untried > 0:
                    continue  # nothing reached a server: the next replica takes it, no attempt spent
                if attempt >= attempts:
                    raise
            else:
                if response.status_code not in RETRYABLE:
                    return response
                self._fail_over(index)
                if attempt >= attempts:
                    return response
                asked = retry_after(response)
                pause = asked if asked is not None else delay
            attempt += 1
            if untried <= 0:
                await asyncio.sleep(pause)
                delay = min(self.max_backoff, delay * 2)
                untried = len(self.urls)

    def _fail_over(self, index: int) -> None:
        """Move to the URL after ``index``, unless a concurrent request already moved on from it."""
        if self._current == index:
            self._current = (index + 1) % len(self.urls)
