"""The result store (architecture.md §5.6): big step results, stored once, read by reference.

``PUT /api/result/{execution_id}`` stores the body (JSON, an Arrow IPC stream, or any
bytes) and replies with the reference events carry. JSON bodies that are tabular (a list
of flat rows) are re-encoded as Arrow IPC. Before the orchestrator sees a
``command.completed`` result, :meth:`ResultService.resolve_refs` swaps every reference
in it for the stored value, so templates read the data, not the reference.

Arrow data is held to ``NOETL_ARROW_MAX_*`` (:mod:`noetl_common.arrow_limits`) before it is
decoded and before it becomes rows: a PUT over a limit is refused with 413, a stored result
over it (the limits were lowered since) cannot be resolved (422).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from noetl_common.arrow_limits import ArrowLimitError, ArrowLimits, IpcFormatError, read_ipc
from noetl_common.results import (
    ARROW_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    decode_result,
    encode_result,
    ref_key,
    result_ref,
)
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import DomainError, Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from ._ids import client_id
from ._policy import Principal

#: How deep resolve_refs looks for references inside a result.
MAX_REF_DEPTH = 32


class ResultTooLarge(DomainError):
    """A stored Arrow result over the limits in force: it is not turned into rows."""

    status_code = 422
    code = "result_too_large"


class ResultService:
    """Store and resolve step results."""

    def __init__(self, pool: AsyncConnectionPool, limits: ArrowLimits | None = None) -> None:
        self._pool = pool
        self._limits = limits or ArrowLimits()

    async def put(
        self, execution_id: int | str, body: bytes, media_type: str | None, principal: Principal
    ) -> dict[str, Any]:
        """Store ``body``; the key is content-addressed within the execution (a retried PUT is
        idempotent). A worker stores results only into an execution whose command it holds."""
        eid = client_id(execution_id, "execution_id")
        if principal.is_worker:
            async with self._pool.connection() as conn:
                held = await store.commands.held_in(conn, eid, principal.name)
            if held is None:
                raise Forbidden(f"{principal.describe()} holds no live lease in execution {eid}")
        media = (media_type or JSON_MEDIA_TYPE).split(";", 1)[0].strip().lower() or JSON_MEDIA_TYPE
        if not body:
            raise ValidationFailed("the result body is empty")
        if media == JSON_MEDIA_TYPE:
            try:
                value = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise ValidationFailed(f"malformed JSON result: {exc}") from None
            body, media = encode_result(value)
        if media == ARROW_MEDIA_TYPE:
            self._check_arrow(body)
        key = f"{eid}/{hashlib.sha256(body).hexdigest()}"
        async with self._pool.connection() as conn, conn.transaction():
            if await store.executions.get(conn, eid) is None:
                raise NotFound(f"execution {eid} not found")
            await store.results.put(conn, key, eid, media, body)
        return result_ref(key, len(body), media)

    async def fetch(self, key: str) -> store.results.StoredResult:
        """The stored bytes and media type of ``key``."""
        if not key or len(key) > 300:
            raise ValidationFailed("key must be a non-empty reference key")
        async with self._pool.connection() as conn:
            found = await store.results.get(conn, key)
        if found is None:
            raise NotFound(f"result {key!r} not found")
        return found

    def _check_arrow(self, body: bytes) -> None:
        """Decoded (within the limits) but never materialised: 413 over a limit, 400 if no IPC."""
        try:
            read_ipc(body, self._limits)
        except ArrowLimitError as exc:
            raise PayloadTooLarge(str(exc), {"variable": exc.variable}) from None
        except IpcFormatError as exc:
            raise ValidationFailed(f"not an Arrow IPC stream: {exc}") from None

    async def resolve(self, key: str) -> Any:
        """The stored value: rows for Arrow, the document for JSON."""
        found = await self.fetch(key)
        return _decode(found, self._limits)

    @staticmethod
    async def resolve_refs(
        conn: AsyncConnection[Any], value: Any, limits: ArrowLimits | None = None, _depth: int = 0
    ) -> Any:
        """``value`` with every result-store reference replaced by the stored value (Arrow
        results within ``limits``, default the settings' defaults).

        Returns ``value`` itself (the same object) when it holds no reference.
        """
        key = ref_key(value)
        if key is not None:
            found = await store.results.get(conn, key)
            if found is None:
                raise NotFound(f"result reference {key!r} not found in the result store")
            return _decode(found, limits or ArrowLimits())
        if _depth >= MAX_REF_DEPTH or not isinstance(value, dict | list):
            return value
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        changed: dict[Any, Any] = {}
        for k, v in items:
            new = await ResultService.resolve_refs(conn, v, limits, _depth + 1)
            if new is not v:
                changed[k] = new
        if not changed:
            return value
        if isinstance(value, dict):
            return {**value, **changed}
        return [changed.get(i, v) for i, v in enumerate(value)]


def _decode(found: store.results.StoredResult, limits: ArrowLimits) -> Any:
    try:
        return decode_result(found.data, found.media_type, limits)
    except ArrowLimitError as exc:
        raise ResultTooLarge(
            f"result {found.key!r} cannot be read as rows: {exc}", {"variable": exc.variable}
        ) from None
    except IpcFormatError as exc:
        raise ResultTooLarge(f"result {found.key!r} is not a readable Arrow IPC stream: {exc}") from None
