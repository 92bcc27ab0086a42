"""The keychain: key-value secrets, global or scoped to one execution, optionally expiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from ..store import KeychainRow
from ._ids import client_id
from ._keychain_block import KeychainTokenIn, PlaybookKeychain
from ._policy import Principal
from ._secrets import (
    MAX_DATA_BYTES,
    ResolveRequest,
    SecretBox,
    check_allowed_paths,
    check_name,
    check_names,
    held_execution,
    iso,
    path_allowed,
    redact,
)


class KeychainIn(msgspec.Struct, kw_only=True):
    """``POST /api/keychain`` body: a global entry, or one of an execution."""

    name: str
    value: Any
    execution_id: int | str | None = None
    description: str | None = None
    ttl_seconds: float | None = None
    allowed_paths: list[str] | None = None


class KeychainView(msgspec.Struct, kw_only=True):
    name: str
    execution_id: int | None
    description: str | None
    expires_at: str | None
    created_at: str
    updated_at: str
    value: Any = None
    allowed_paths: list[str] | None = None


class KeychainList(msgspec.Struct, kw_only=True):
    entries: list[KeychainView]


def _scope(execution_id: int | str | None) -> int:
    return 0 if execution_id in (None, "", 0, "0") else client_id(execution_id, "execution_id")


class KeychainService:
    """Key-value secrets, global or per execution; same redaction rules as credentials."""

    def __init__(self, pool: AsyncConnectionPool, box: SecretBox, block: PlaybookKeychain) -> None:
        self._pool = pool
        self._box = box
        #: the root ``keychain:`` block of the execution's playbook
        self._block = block

    @staticmethod
    def _view(row: KeychainRow, value: Any = None, show: bool = False) -> KeychainView:
        return KeychainView(
            name=row.name,
            execution_id=row.scope_id or None,
            description=row.description,
            expires_at=iso(row.expires_at),
            created_at=iso(row.created_at) or "",
            updated_at=iso(row.updated_at) or "",
            value=redact(value) if show else None,
            allowed_paths=row.allowed_paths,
        )

    async def put(self, body: KeychainIn) -> tuple[KeychainView, bool]:
        check_name(body.name)
        scope = _scope(body.execution_id)
        allowed = check_allowed_paths(body.allowed_paths)
        if len(msgspec.json.encode(body.value)) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"value must be at most {MAX_DATA_BYTES} bytes of JSON", {"field": "value"})
        expires = None
        if body.ttl_seconds is not None:
            if not 0 < body.ttl_seconds <= 10 * 365 * 86400:
                raise ValidationFailed("ttl_seconds must be positive and at most ten years")
            expires = datetime.now(UTC) + timedelta(seconds=body.ttl_seconds)
        sealed = self._box.seal(body.value)
        async with self._pool.connection() as conn, conn.transaction():
            row, created = await store.secrets.upsert_keychain(
                conn, scope, body.name, body.description, sealed, expires, allowed
            )
        return self._view(row, body.value, show=True), created

    async def list_all(self, execution_id: int | str | None) -> KeychainList:
        scope = None if execution_id in (None, "") else _scope(execution_id)
        async with self._pool.connection() as conn:
            rows = await store.secrets.list_keychain(conn, scope)
        return KeychainList(entries=[self._view(r) for r in rows])

    async def get(self, name: str, execution_id: int | str | None) -> KeychainView:
        async with self._pool.connection() as conn:
            row = await store.secrets.get_keychain(conn, _scope(execution_id), name)
        if row is None:
            raise NotFound(f"keychain entry {name!r} not found")
        return self._view(row, self._box.open(row.value_enc), show=True)

    async def delete(self, name: str, execution_id: int | str | None) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.secrets.delete_keychain(conn, _scope(execution_id), name):
                raise NotFound(f"keychain entry {name!r} not found")

    async def resolve(self, body: ResolveRequest, principal: Principal) -> dict[str, Any]:
        """Clear values for the worker: ``{values: {name: value}}``. A name the playbook's root
        ``keychain:`` block declares is that entry, of this execution (an ``oauth2`` entry
        without a fresh token is a request for the worker to send, under ``fetch``); any other
        name is the execution's entry, else a global one whose ``allowed_paths`` cover the
        command's playbook. Only for the command the worker holds."""
        names = check_names(body.names)
        async with self._pool.connection() as conn:
            execution = await held_execution(conn, body.event_id, body.worker_id, principal)
            scope, path = execution.execution_id, execution.path
            playbook = await self._block.playbook(conn, execution)
            declared = [e for e in (playbook.keychain_entry(n) for n in dict.fromkeys(names)) if e is not None]
            rest = [n for n in names if playbook.keychain_entry(n) is None]
            rows = await store.secrets.resolve_keychain(conn, rest, scope) if rest else {}
            block = await self._block.resolve(conn, execution, declared)
        refused = [n for n, r in rows.items() if r.scope_id == 0 and not path_allowed(path, r.allowed_paths)]
        if refused:
            raise Forbidden(
                f"keychain entr(ies) {', '.join(sorted(refused))} may not be used by playbook {path!r}"
                " (see the entry's allowed_paths)",
                {"refused": sorted(refused), "path": path},
            )
        values = {name: self._box.open(row.value_enc) for name, row in rows.items()}
        values.update(block.values)
        missing = [n for n in names if n not in values and n not in block.fetch]
        if missing:
            raise NotFound(
                f"unknown keychain entr(ies): {', '.join(sorted(set(missing)))}", {"missing": missing}
            )
        reply: dict[str, Any] = {"values": values}
        if block.fetch:
            reply["fetch"] = block.fetch
        if block.sensitive_only:
            reply["sensitive_only"] = block.sensitive_only
        return reply

    async def store_token(self, body: KeychainTokenIn, principal: Principal) -> dict[str, Any]:
        """Keep the token the worker fetched for an ``oauth2`` entry of the execution it holds a
        command of; ``{name, expires_at}``."""
        check_name(body.name)
        async with self._pool.connection() as conn:
            execution = await held_execution(conn, body.event_id, body.worker_id, principal)
            return await self._block.store_token(conn, execution, body)
