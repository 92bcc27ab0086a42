"""An in-memory fake of the control-api routes a worker calls (its ``ControlPlane`` protocol).

It keeps the contract's rules so worker tests run without a server: a claim takes a
PENDING command or one whose lease ran out, at the next attempt, and meets 429
``lease_held`` while a lease lasts; ``command.started`` and ``command.heartbeat`` renew the
lease; events are idempotent per event id, refused with 409 ``stale_attempt`` from an
earlier attempt and 409 ``conflict`` before the claim or after a cancel; once a command
finished its later events change nothing. ``tests/contracts`` runs the same cases against
this fake and the real control-api.

Failures are scripted: ``claim_errors`` answers the next claims of a command with errors,
``post_hook`` may refuse a batch, and ``unreachable`` (an exception, e.g. ``noetl_common.ApiUnreachable``)
makes every call raise it, as a control-api that is down would, until it is set back to None.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from noetl_common import (
    ApiError,
    ClaimReply,
    CommandNotification,
    CommandSpec,
    EagerRequest,
    ErrorBody,
    Event,
    EventsReply,
    StepLogs,
    TaskSpec,
    WorkerHeartbeat,
    WorkerRegistration,
)

TERMINAL = ("command.completed", "command.failed")
#: Statuses of a command that has finished, one way or another.
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")
#: Events that renew the lease of the command they name.
RENEWALS = ("command.started", "command.heartbeat")


def api_error(
    status: int, code: str, retry_after: float | None = None, extra: dict[str, Any] | None = None
) -> ApiError:
    """An ApiError as ControlPlaneClient raises it for a non-2xx reply."""
    body = ErrorBody(status_code=status, error=code, detail=f"fake {code}", extra=extra)
    return ApiError(status, body, "", retry_after)


@dataclass
class FakeCommand:
    """One command row of the fake control-api."""

    event_id: int
    command_id: int
    execution_id: int
    step: str
    spec: CommandSpec
    status: str = "PENDING"
    attempt: int = 0
    worker_id: str | None = None
    #: ``time.monotonic()`` when the lease ends (while CLAIMED)
    lease_expires_at: float = 0.0

    def lease_held(self) -> bool:
        return self.status == "CLAIMED" and time.monotonic() < self.lease_expires_at


PostHook = Callable[[list[Event]], Awaitable[ApiError | None]]


@dataclass
class FakeControlPlane:
    """In-memory control-api: commands, claims, events, worker registry."""

    commands: dict[int, FakeCommand] = field(default_factory=dict)
    claims: list[tuple[int, str, float]] = field(default_factory=list)
    claim_errors: dict[int, list[Exception]] = field(default_factory=dict)
    posts: list[list[Event]] = field(default_factory=list)
    #: step logs sent beside terminal events, in the order they came
    logs: list[StepLogs] = field(default_factory=list)
    eager_requests: list[EagerRequest] = field(default_factory=list)
    #: claim keys handed over, one per terminal batch that asks, as eager commands
    eager_next: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    post_hook: PostHook | None = None
    lease_seconds: float = 30.0
    registrations: list[WorkerRegistration] = field(default_factory=list)
    heartbeats: list[WorkerHeartbeat] = field(default_factory=list)
    deregistered: list[str] = field(default_factory=list)
    results: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    credentials: dict[str, Any] = field(default_factory=dict)
    keychain: dict[str, Any] = field(default_factory=dict)
    resolved: list[tuple[list[str], int | None]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    node_id: int | None = None  # the node id the register reply leases, when set
    fail_errors: list[ApiError] = field(default_factory=list)
    #: while set, every call raises it (the API is down: connection refused, a 503 ...)
    unreachable: Exception | None = None
    #: calls refused while unreachable: (method, time.monotonic())
    refused: list[tuple[str, float]] = field(default_factory=list)
    #: how long a leased node id lasts without a heartbeat (the register reply says so)
    node_lease_seconds: float = 300.0
    _ids: Any = field(default_factory=lambda: itertools.count(1000))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def add_command(
        self,
        tasks: list[TaskSpec],
        *,
        step: str = "start",
        args: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> CommandNotification:
        """Issue a command (as control-api would) and return its notification."""
        event_id, command_id, execution_id = next(self._ids), next(self._ids), next(self._ids)
        spec = CommandSpec(
            tasks=tasks, args=args or {}, context=context or {}, timeout_seconds=timeout_seconds
        )
        self.commands[event_id] = FakeCommand(event_id, command_id, execution_id, step, spec)
        return CommandNotification(
            execution_id=execution_id,
            event_id=event_id,
            command_id=command_id,
            step=step,
            server_url="http://fake-control-api",
            execution_pool="shared",
        )

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds after some API call; fail after ``timeout``."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)

    def events_of(self, event_id: int, *, heartbeats: bool = False) -> list[Event]:
        """Accepted events of the command issued as ``event_id``, in arrival order."""
        command = self.commands[event_id]
        return [
            e
            for e in self.events
            if e.meta
            and e.meta.get("command_id") == command.command_id
            and (heartbeats or e.event_type != "command.heartbeat")
        ]

    def terminal(self, event_id: int) -> bool:
        return self.commands[event_id].status in ("COMPLETED", "FAILED")

    def expire_lease(self, event_id: int) -> None:
        """End the command's lease now, as ``lease_seconds`` without a renewal would."""
        self.commands[event_id].lease_expires_at = time.monotonic()

    async def _reachable(self, call: str) -> None:
        """Raise ``unreachable`` when set, recording the refused ``call`` (and notifying)."""
        if self.unreachable is not None:
            self.refused.append((call, time.monotonic()))
            await self._notify()
            raise self.unreachable

    # -- the ControlPlane protocol -------------------------------------------------------
    async def claim_command(self, event_id: int, worker_id: str) -> ClaimReply:
        self.claims.append((event_id, worker_id, time.monotonic()))
        try:
            await self._reachable("claim_command")
            scripted = self.claim_errors.get(event_id)
            if scripted:
                raise scripted.pop(0)
            command = self.commands.get(event_id)
            if command is None:
                raise api_error(404, "not_found")
            if command.status in FINISHED:
                raise api_error(409, "conflict")
            if command.lease_held():  # whoever holds it: a redelivery comes back after the lease
                raise api_error(
                    429,
                    "lease_held",
                    retry_after=command.lease_expires_at - time.monotonic(),
                    extra={"worker_id": command.worker_id, "attempt": command.attempt},
                )
            return self._lease(command, worker_id)
        finally:
            await self._notify()

    def _lease(self, command: FakeCommand, worker_id: str) -> ClaimReply:
        command.status, command.worker_id = "CLAIMED", worker_id
        command.attempt += 1
        command.lease_expires_at = time.monotonic() + self.lease_seconds
        return ClaimReply(
            execution_id=command.execution_id,
            event_id=command.event_id,
            command_id=command.command_id,
            step=command.step,
            attempt=command.attempt,
            lease_seconds=self.lease_seconds,
            pool="shared",
            tool_kind=command.spec.tasks[0].kind if command.spec.tasks else "noop",
            command=command.spec,
        )

    async def post_events(
        self, events: list[Event], eager: EagerRequest | None = None, logs: list[StepLogs] | None = None
    ) -> EventsReply:
        try:
            await self._reachable("post_events")
            self.posts.append(list(events))
            self.logs.extend(logs or [])
            if eager is not None:
                self.eager_requests.append(eager)
            if self.post_hook is not None:
                error = await self.post_hook(events)
                if error is not None:
                    raise error
            accepted, duplicates = self._record(events)
            if eager is not None and self.eager_next and any(e.event_type in TERMINAL for e in events):
                handed = self._lease(self.commands[self.eager_next.pop(0)], eager.worker_id)
                return EventsReply(accepted=accepted, duplicates=duplicates, commands=[handed])
            return EventsReply(accepted=accepted, duplicates=duplicates)
        finally:
            await self._notify()

    def _record(self, events: list[Event]) -> tuple[int, int]:
        """Check the batch, then keep it whole: ``(accepted, duplicates)``; an ApiError
        leaves everything as it was."""
        by_command = {c.command_id: c for c in self.commands.values()}
        seen = {e.event_id for e in self.events}
        kept: list[Event] = []
        settled: dict[int, str] = {}  # command_id -> final status, applied with the batch
        renewed: list[FakeCommand] = []
        for event in events:
            meta = event.meta or {}
            command = by_command.get(meta["command_id"]) if "command_id" in meta else None
            if "command_id" in meta and command is None:
                raise api_error(404, "not_found")
            if command is not None:
                status = settled.get(command.command_id, command.status)
                if status == "CANCELLED" and event.event_type not in TERMINAL:
                    raise api_error(409, "conflict")  # the execution was cancelled: stop the task
                if status in FINISHED:
                    continue  # a late or repeated event of a finished command changes nothing
                if status == "PENDING":
                    raise api_error(409, "conflict")  # not claimed yet
                if meta.get("attempt") != command.attempt:
                    raise api_error(409, "stale_attempt")
            if event.event_id is not None and event.event_id in seen:
                continue
            seen.add(event.event_id)
            kept.append(event)
            if command is not None and event.event_type in TERMINAL:
                settled[command.command_id] = (
                    "COMPLETED" if event.event_type == "command.completed" else "FAILED"
                )
            elif command is not None and event.event_type in RENEWALS:
                renewed.append(command)
        self.events.extend(kept)
        for command in renewed:
            command.lease_expires_at = time.monotonic() + self.lease_seconds
        for command in by_command.values():
            command.status = settled.get(command.command_id, command.status)
        return len(kept), len(events) - len(kept)

    async def fail_command(self, event_id: int, reason: str, worker_id: str) -> dict[str, Any]:
        try:
            await self._reachable("fail_command")
            if self.fail_errors:
                raise self.fail_errors.pop(0)
            command = self.commands.get(event_id)
            if command is None:
                raise api_error(404, "not_found")
            finished = command.status in FINISHED
            if not finished:
                command.status = "FAILED"
                self.failed.append((event_id, reason, worker_id))
            return {
                "event_id": event_id,
                "command_id": command.command_id,
                "execution_id": command.execution_id,
                "failed": not finished,
                "status": command.status,
            }
        finally:
            await self._notify()

    async def register_worker(self, registration: WorkerRegistration) -> dict[str, Any] | None:
        await self._reachable("register_worker")
        self.registrations.append(registration)
        await self._notify()
        if self.node_id is None:
            return None  # an API that answers 204
        return {
            "worker_id": registration.worker_id,
            "node_id": self.node_id,
            "node_lease_seconds": self.node_lease_seconds,
        }

    async def heartbeat_worker(self, heartbeat: WorkerHeartbeat) -> None:
        await self._reachable("heartbeat_worker")
        self.heartbeats.append(heartbeat)
        await self._notify()

    async def deregister_worker(self, worker_id: str) -> None:
        self.deregistered.append(worker_id)
        await self._notify()

    async def put_result(self, execution_id: int, data: bytes, media_type: str) -> dict[str, Any]:
        """The result store: content-addressed keys, as the real one."""
        await self._reachable("put_result")
        key = f"{execution_id}/{hashlib.sha256(data).hexdigest()}"
        self.results[key] = (data, media_type)
        return {"$ref": {"store": "noetl.result", "key": key, "size": len(data), "media_type": media_type}}

    async def resolve_credentials(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        return self._resolve(self.credentials, names, execution_id)

    async def resolve_keychain(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        return self._resolve(self.keychain, names, execution_id)

    def _resolve(self, store: dict[str, Any], names: list[str], execution_id: int | None) -> dict[str, Any]:
        """Every name or a 404, as the real routes answer; each resolve is recorded."""
        if any(n not in store for n in names):
            raise api_error(404, "not_found")
        self.resolved.append((names, execution_id))
        return {n: store[n] for n in names}

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """The resolve reply of the real route; this fake knows no playbook keychain block."""
        return {"values": await self.resolve_keychain(names, execution_id, event_id=event_id, worker_id=worker_id)}

    async def store_keychain_token(
        self, name: str, value: dict[str, Any], *, event_id: int | None, worker_id: str | None
    ) -> dict[str, Any]:
        self.keychain[name] = value
        return {"name": name, "expires_at": None}
