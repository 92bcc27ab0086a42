"""The worker's presence: registration and heartbeats in the control-api's worker registry
(which also leases the snowflake node id the worker mints event ids with), and the pool
consumer's backlog published as gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from nats.js import JetStreamContext
from noetl_common import ApiError, WorkerHeartbeat, WorkerRegistration

from ._api import ApiFor
from ._config import WorkerConfig
from ._metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING

#: How long a starting worker waits for its first registration (and leased node id) before fetching.
REGISTRATION_WAIT_SECONDS = 10.0
#: Bound of the deregistration at shutdown.
DEREGISTER_TIMEOUT_SECONDS = 5.0


def _package_version() -> str | None:
    try:
        return version("noetl-system-worker")
    except PackageNotFoundError:
        return None


class Presence:
    """Keeps one worker registered while it runs; ``in_flight`` reports its current load."""

    def __init__(
        self,
        config: WorkerConfig,
        api_for: ApiFor,
        log: structlog.typing.FilteringBoundLogger,
        *,
        in_flight: Callable[[], int],
    ) -> None:
        self._config = config
        self._api_for = api_for
        self._log = log
        self._in_flight = in_flight
        # set after the first registration attempt: ids are minted from the leased node id
        self._first_registration = asyncio.Event()
        #: how long the API keeps a node id leased without a heartbeat (from the register reply)
        self._node_lease_seconds: float | None = None
        #: when the API last renewed our node lease (a register or heartbeat reply, monotonic)
        self._renewed_at = 0.0

    async def first_registration(self) -> None:
        """Return after the first registration attempt, or after REGISTRATION_WAIT_SECONDS:
        an API that is down does not keep the worker from starting."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_registration.wait(), REGISTRATION_WAIT_SECONDS)

    async def keep_registered(self) -> None:
        """Register, then heartbeat every interval; re-register when the API forgot us."""
        config = self._config
        api = self._api_for(None)
        registered = False
        while True:
            if registered and self._node_lease_lapsed():
                # Heartbeats failed for half the node lease: the id may have gone to another
                # process, and a heartbeat reply would not say so. Register again for a lease.
                self._log.warning("snowflake_node_lease_may_have_lapsed", node_id=config.snowflake.node_id)
                registered = False
            failed = "worker_heartbeat_failed" if registered else "worker_registration_failed"
            try:
                if not registered:
                    reply = await api.register_worker(
                        WorkerRegistration(
                            worker_id=config.worker_id,
                            pool=config.pool,
                            capacity=config.max_concurrent,
                            hostname=socket.gethostname(),
                            version=_package_version(),
                            meta={"consumer": config.consumer, "filter_subject": config.filter_subject},
                        )
                    )
                    registered = True
                    self._renewed_at = time.monotonic()
                    self._adopt_node(reply)
                    self._log.info("worker_registered", node_id=config.snowflake.node_id)
                else:
                    await api.heartbeat_worker(
                        WorkerHeartbeat(
                            worker_id=config.worker_id, pool=config.pool, in_flight=self._in_flight()
                        )
                    )
                    self._renewed_at = time.monotonic()
            except ApiError as exc:
                if exc.status_code == 404:
                    registered = False
                self._log.warning(failed, error=str(exc))
            except Exception as exc:
                self._log.warning(failed, error=repr(exc))
            self._first_registration.set()
            await asyncio.sleep(config.heartbeat_interval)

    def _node_lease_lapsed(self) -> bool:
        """True when no heartbeat renewed the node lease for half its length."""
        ttl = self._node_lease_seconds
        return ttl is not None and time.monotonic() - self._renewed_at >= ttl / 2

    def _adopt_node(self, reply: dict[str, Any] | None) -> None:
        """Mint ids with the node id the control-api leased us, unless the environment named one."""
        ttl = (reply or {}).get("node_lease_seconds")
        if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
            self._node_lease_seconds = float(ttl)
        node = (reply or {}).get("node_id")
        if self._config.snowflake_node_explicit or isinstance(node, bool) or not isinstance(node, int):
            return
        snowflake = self._config.snowflake
        if node != snowflake.node_id:
            self._log.info("snowflake_node_leased", node_id=node, was=snowflake.node_id)
            snowflake.set_node(node)

    async def poll_lag(self, sub: JetStreamContext.PullSubscription) -> None:
        """Publish the consumer's backlog as gauges (an autoscaling and alerting signal)."""
        pool = self._config.pool
        while True:
            try:
                info = await sub.consumer_info()
                CONSUMER_PENDING.labels(pool).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(pool).set(info.num_ack_pending or 0)
            except Exception as exc:
                self._log.debug("consumer_info_failed", error=repr(exc))
            await asyncio.sleep(self._config.lag_poll_interval)

    async def deregister(self) -> None:
        """Leave the pool's registry (bounded; a failure is logged, not raised)."""
        try:
            await asyncio.wait_for(
                self._api_for(None).deregister_worker(self._config.worker_id), DEREGISTER_TIMEOUT_SECONDS
            )
        except Exception as exc:
            self._log.warning("worker_deregister_failed", error=repr(exc))
