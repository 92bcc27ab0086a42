"""One request to the control-api, retried and failed over between its replicas.

``NOETL_SERVER_URL`` may list several replicas of the API, comma-separated. A transport error
or a 502/503/504 moves the sender to the next URL, which then serves every later request too.
A retry goes to the next URL at once; the backoff pause (capped, exponential, ``Retry-After``
honoured) comes once every URL has failed since the last pause, so with one URL this is plain
retrying. A request that never reached a server (connection refused or timed out) spends no
attempt while some URL is still untried, so even a request sent without retries (a claim)
survives a dead replica.

The transport is aiohttp (C-accelerated HTTP parsing): on the suite's hot internal routes it spends
about a quarter of the client CPU per request httpx did (docs/performance.md, "CPU per step, second round").
Every reply is read whole into a ``Reply``; every transport failure is raised as
``ApiUnreachable``, with ``sent`` telling whether the request may have reached a server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

RETRYABLE = frozenset({502, 503, 504})
#: Transport errors raised before the request left this process: safe to send to another replica.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class ApiUnreachable(ConnectionError):
    """No reply from the control-api: the connection failed, broke or timed out.

    ``sent`` is False when the request never left this process (connection refused or
    timed out while connecting)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply read whole: status, headers (case-insensitive) and body."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def api_urls(value: str | Sequence[str]) -> tuple[str, ...]:
    """The control-api base URLs in ``value`` (a comma-separated list, as ``NOETL_SERVER_URL``
    holds, or a sequence), in order, without trailing slashes; ``ValueError`` if there is none."""
    parts = value.split(",") if isinstance(value, str) else value
    urls = tuple(part.strip().rstrip("/") for part in parts if part.strip())
    if not urls:
        raise ValueError("no control-api URL given")
    return urls


def retry_after(response: Reply) -> float | None:
    """The delay a reply asked for (``Retry-After`` in seconds), if any."""
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


class Replicas:
    """The control-api's URLs and the one requests go to now."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        headers: Mapping[str, str],
        timeout: float,
        retries: int,
        max_backoff: float,
    ):
        self.urls = api_urls(urls)
        self.retries = retries
        self.max_backoff = max_backoff
        self._headers = dict(headers)
        self._timeout = timeout
        self._http: aiohttp.ClientSession | None = None  # made in the loop of the first request
        self._current = 0

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=64, limit_per_host=64, keepalive_timeout=30),
                # replies are the API's own JSON; the client never follows a redirect
                auto_decompress=False,
                trust_env=False,
            )
        return self._http

    async def _request(
        self,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        timeout: float | None,
    ) -> Reply:
        session = self._session()
        limit = session.timeout if timeout is None else aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.request(
                method,
                url,
                data=content,
                headers=headers,
                params=params,
                allow_redirects=False,
                timeout=limit,
            ) as response:
                body = await response.read()
                return Reply(response.status, response.headers, body)
        except _NOT_SENT as exc:
            raise ApiUnreachable(f"{method} {url}: {exc}", sent=False) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnreachable(f"{method} {url}: {exc.__class__.__name__} {exc}", sent=True) from exc

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
    ) -> Reply:
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
                response = await self._request(
                    method, self.urls[index] + path, content, headers, params, timeout
                )
            except ApiUnreachable as exc:
                self._fail_over(index)
                if not exc.sent and untried > 0:
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
