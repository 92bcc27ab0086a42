"""The result store (ARCHITECTURE §5.6): big step results, stored once, read by reference.

``PUT /api/result/{execution_id}`` stores the body (JSON, an Arrow IPC stream, or any
bytes) and replies with the reference events carry. JSON bodies that are tabular (a list
of flat rows) are re-encoded as Arrow IPC. Before the orchestrator sees a
``command.completed`` result, :meth:`ResultService.resolve_refs` swaps every reference
in it for the stored value, so templates read the data, not the reference.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
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
from .._errors import Forbidden, NotFound, ValidationFailed
from ._ids import client_id
from ._policy import Principal

#: How deep resolve_refs looks for references inside a result.
MAX_REF_DEPTH = 32


class ResultService:
    """Store and resolve step results."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

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
        elif media == ARROW_MEDIA_TYPE:
            try:
                decode_result(body, media)
            except Exception as exc:
                raise ValidationFailed(f"not an Arrow IPC stream: {exc}") from None
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

    async def resolve(self, key: str) -> Any:
        """The stored value: rows for Arrow, the document for JSON."""
        found = await self.fetch(key)
        return decode_result(found.data, found.media_type)

    @staticmethod
    async def resolve_refs(conn: AsyncConnection[Any], value: Any, _depth: int = 0) -> Any:
        """``value`` with every result-store reference replaced by the stored value.

        Returns ``value`` itself (the same object) when it holds no reference.
        """
        key = ref_key(value)
        if key is not None:
            found = await store.results.get(conn, key)
            if found is None:
                raise NotFound(f"result reference {key!r} not found in the result store")
            return decode_result(found.data, found.media_type)
        if _depth >= MAX_REF_DEPTH or not isinstance(value, dict | list):
            return value
        items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        changed: dict[Any, Any] = {}
        for k, v in items:
            new = await ResultService.resolve_refs(conn, v, _depth + 1)
            if new is not v:
                changed[k] = new
        if not changed:
            return value
        if isinstance(value, dict):
            return {**value, **changed}
        return [changed.get(i, v) for i, v in enumerate(value)]
