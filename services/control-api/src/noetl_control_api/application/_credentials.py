"""Credentials: named, typed secrets for a tool's ``auth:``; data write-only on public routes."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Forbidden, NotFound, PayloadTooLarge
from ..store import CredentialRow
from ._policy import Principal
from ._secrets import (
    MAX_DATA_BYTES,
    ResolveRequest,
    SecretBox,
    check_allowed_paths,
    check_name,
    check_names,
    held_command,
    iso,
    path_allowed,
    redact,
)


class CredentialIn(msgspec.Struct, kw_only=True):
    """``POST /api/credentials`` body."""

    name: str
    credential_type: str = "generic"
    #: upstream's name for ``credential_type``; wins when given
    type: str | None = None
    data: dict[str, Any]
    description: str | None = None
    #: playbook path prefixes that may use it; None: every path outside system/; ["*"]: all
    allowed_paths: list[str] | None = None


class CredentialView(msgspec.Struct, kw_only=True):
    """A credential as public routes show it: ``data`` keys only, values redacted."""

    name: str
    credential_type: str
    description: str | None
    created_at: str
    updated_at: str
    data: dict[str, Any] | None = None
    allowed_paths: list[str] | None = None
    #: upstream's names: ``id`` (the name is the key here) and ``type`` (= ``credential_type``)
    id: str = ""
    type: str = ""


class CredentialList(msgspec.Struct, kw_only=True):
    credentials: list[CredentialView]
    #: the same list under upstream's name, and the filters it was taken with
    items: list[CredentialView] = msgspec.field(default_factory=list)
    filter: dict[str, str] = msgspec.field(default_factory=dict)


class CredentialService:
    """Create, list, show (redacted), delete and — internally — resolve credentials."""

    def __init__(self, pool: AsyncConnectionPool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box

    def _view(self, row: CredentialRow, data: dict[str, Any] | None = None) -> CredentialView:
        return CredentialView(
            name=row.name,
            credential_type=row.credential_type,
            description=row.description,
            created_at=iso(row.created_at) or "",
            updated_at=iso(row.updated_at) or "",
            data=None if data is None else redact(data),
            allowed_paths=row.allowed_paths,
            id=row.name,
            type=row.credential_type,
        )

    async def put(self, body: CredentialIn) -> tuple[CredentialView, bool]:
        """Create or replace; the reply's data is redacted."""
        if body.type is not None:
            body = msgspec.structs.replace(body, credential_type=body.type, type=None)
        check_name(body.name)
        check_name(body.credential_type, "credential_type")
        allowed = check_allowed_paths(body.allowed_paths)
        if len(msgspec.json.encode(body.data)) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"data must be at most {MAX_DATA_BYTES} bytes of JSON", {"field": "data"})
        sealed = self._box.seal(body.data)
        async with self._pool.connection() as conn, conn.transaction():
            row, created = await store.secrets.upsert_credential(
                conn, body.name, body.credential_type, body.description, sealed, allowed
            )
        return self._view(row, body.data), created

    async def list_all(self, credential_type: str | None, q: str | None = None) -> CredentialList:
        """Metadata only: no data, not even redacted (listing needs no key). ``q`` keeps the
        credentials whose name or description contains it (any case)."""
        async with self._pool.connection() as conn:
            rows = await store.secrets.list_credentials(conn, credential_type)
        if q:
            needle = q.lower()
            rows = [r for r in rows if needle in r.name.lower() or needle in (r.description or "").lower()]
        views = [self._view(r) for r in rows]
        filters = {k: v for k, v in (("type", credential_type), ("q", q)) if v}
        return CredentialList(credentials=views, items=views, filter=filters)

    async def get(self, name: str) -> CredentialView:
        """One credential with its data's keys and every value redacted."""
        async with self._pool.connection() as conn:
            row = await store.secrets.get_credential(conn, name)
        if row is None:
            raise NotFound(f"credential {name!r} not found")
        return self._view(row, self._box.open(row.data_enc))

    async def delete(self, name: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.secrets.delete_credential(conn, name):
                raise NotFound(f"credential {name!r} not found")

    async def resolve(self, body: ResolveRequest, principal: Principal) -> dict[str, Any]:
        """Clear data for the worker: ``{credentials: {name: {credential_type, data}}}``; 404 lists
        missing names; 403 when the worker does not hold the command, or a credential's
        ``allowed_paths`` do not cover the command's playbook."""
        names = check_names(body.names)
        async with self._pool.connection() as conn:
            _execution_id, path = await held_command(conn, body, principal)
            rows = await store.secrets.get_credentials(conn, names)
        refused = [r.name for r in rows if not path_allowed(path, r.allowed_paths)]
        if refused:
            raise Forbidden(
                f"credential(s) {', '.join(sorted(refused))} may not be used by playbook {path!r}"
                " (see the credential's allowed_paths)",
                {"refused": sorted(refused), "path": path},
            )
        found = {
            r.name: {"name": r.name, "credential_type": r.credential_type, "data": self._box.open(r.data_enc)}
            for r in rows
        }
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f"unknown credential(s): {', '.join(sorted(set(missing)))}", {"missing": missing})
        return {"credentials": found}
