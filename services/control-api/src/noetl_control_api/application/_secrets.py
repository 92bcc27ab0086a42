"""Credentials and keychain: encrypted at rest, never returned in clear by public routes.

Data is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography``
package) under ``NOETL_CREDENTIALS_KEY``. Several comma-separated keys rotate: the first
encrypts, any of them decrypts. Public replies carry metadata and the data's *keys* with
every value redacted; clear data leaves only through the internal resolve routes, which
the worker calls right before it runs a task that names a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
from cryptography.fernet import InvalidToken, MultiFernet
from noetl_common import REDACTED, ConfigError
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Forbidden, NotFound, PayloadTooLarge, Unavailable, ValidationFailed
from .._options import KEY_VARIABLE, parse_keys
from ..store import CredentialRow, KeychainRow
from ._ids import client_id
from ._policy import Principal, is_system_path

MAX_NAME = 200
MAX_DATA_BYTES = 256 * 1024


class SecretBox:
    """Encrypts and decrypts JSON values; unusable (503) when no key is configured."""

    def __init__(self, key: str | None) -> None:
        self._fernet = parse_keys(key) if key else None

    @property
    def configured(self) -> bool:
        """Whether a key is set."""
        return self._fernet is not None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise Unavailable(f"credentials are disabled: {KEY_VARIABLE} is not set on the server")
        return self._fernet

    def seal(self, value: Any) -> bytes:
        """Ciphertext of ``value`` encoded as JSON."""
        return self._require().encrypt(msgspec.json.encode(value))

    def open(self, token: bytes) -> Any:
        """The JSON value sealed in ``token``."""
        try:
            return msgspec.json.decode(self._require().decrypt(bytes(token)))
        except InvalidToken:
            raise Unavailable(
                f"a stored secret cannot be decrypted with {KEY_VARIABLE} (was the key rotated"
                " without keeping the old one in the list?)"
            ) from None


def redact(value: Any) -> Any:
    """The shape of ``value`` with every leaf replaced by the redaction marker."""
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return REDACTED


class CredentialIn(msgspec.Struct, kw_only=True):
    """``POST /api/credentials`` body."""

    name: str
    credential_type: str = "generic"
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


class CredentialList(msgspec.Struct, kw_only=True):
    credentials: list[CredentialView]


class ResolveRequest(msgspec.Struct, kw_only=True):
    """``POST /api/internal/{credentials,keychain}/resolve`` body.

    ``event_id`` (the claim key) and ``worker_id`` name the command the worker holds: values
    resolve only for it, for the playbook path of its execution. ``execution_id`` is ignored
    for a worker (the command says which execution)."""

    names: list[str]
    execution_id: int | str | None = None
    event_id: int | str | None = None
    worker_id: str | None = None


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


#: Names are path segments (``GET /api/credentials/{name}``): no slash, space or control character.
_NAME = re.compile(r"[A-Za-z0-9_.:@-]+")


def _name(name: str, what: str = "name") -> str:
    if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"{what} must be 1..{MAX_NAME} characters of letters, digits and _ . : @ -, got {name[:60]!r}"
        )
    return name


def _names(names: list[str]) -> list[str]:
    if not names or len(names) > 100:
        raise ValidationFailed("names must hold 1 to 100 names")
    return [_name(n, "names[]") for n in names]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _scope(execution_id: int | str | None) -> int:
    return 0 if execution_id in (None, "", 0, "0") else client_id(execution_id, "execution_id")


MAX_ALLOWED_PATHS = 100


def _allowed_paths(paths: list[str] | None) -> list[str] | None:
    """Validate ``allowed_paths``: prefixes of catalog paths, or ``*`` for every path."""
    if paths is None:
        return None
    if not paths or len(paths) > MAX_ALLOWED_PATHS:
        raise ValidationFailed(f"allowed_paths must hold 1 to {MAX_ALLOWED_PATHS} path prefixes (or be omitted)")
    cleaned = []
    for prefix in paths:
        prefix = prefix.strip().strip("/")
        if not prefix or len(prefix) > 512 or ".." in prefix:
            raise ValidationFailed(f"allowed_paths holds an invalid prefix {prefix[:60]!r}")
        cleaned.append(prefix)
    return cleaned


def path_allowed(path: str, allowed: list[str] | None) -> bool:
    """Whether a playbook at ``path`` may use a secret scoped to ``allowed``.

    No scope means every path outside ``system/`` (a system playbook uses only what names it);
    a prefix matches the path itself and everything below it (``etl`` matches ``etl/load``,
    not ``etl2``); ``*`` matches every path."""
    if allowed is None:
        return not is_system_path(path)
    for prefix in allowed:
        if prefix == "*" or path == prefix or path.startswith(prefix + "/"):
            return True
    return False


async def held_command(conn: Any, body: ResolveRequest, principal: Principal) -> tuple[int, str]:
    """``(execution_id, playbook path)`` of the command a worker says it holds; 403 unless it
    holds that command's live lease as that worker."""
    if body.event_id is None or not body.worker_id:
        raise ValidationFailed("a worker resolves secrets for a command it holds: send event_id and worker_id")
    event_id = client_id(body.event_id, "event_id")
    command = await store.commands.get_by_event(conn, event_id)
    held = None
    if command is not None:
        held = await store.commands.held_in(conn, command.execution_id, principal.name, event_id)
    if held is None or held.worker_id != body.worker_id:
        raise Forbidden(
            f"{principal.describe()} holds no live lease on command {event_id} as worker {body.worker_id!r}"
        )
    execution = await store.executions.get(conn, held.execution_id)
    assert execution is not None  # the foreign key guarantees it
    return held.execution_id, execution.path


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
            created_at=_iso(row.created_at) or "",
            updated_at=_iso(row.updated_at) or "",
            data=None if data is None else redact(data),
            allowed_paths=row.allowed_paths,
        )

    async def put(self, body: CredentialIn) -> tuple[CredentialView, bool]:
        """Create or replace; the reply's data is redacted."""
        _name(body.name)
        _name(body.credential_type, "credential_type")
        allowed = _allowed_paths(body.allowed_paths)
        if len(msgspec.json.encode(body.data)) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"data must be at most {MAX_DATA_BYTES} bytes of JSON", {"field": "data"})
        sealed = self._box.seal(body.data)
        async with self._pool.connection() as conn, conn.transaction():
            row, created = await store.secrets.upsert_credential(
                conn, body.name, body.credential_type, body.description, sealed, allowed
            )
        return self._view(row, body.data), created

    async def list_all(self, credential_type: str | None) -> CredentialList:
        """Metadata only: no data, not even redacted (listing needs no key)."""
        async with self._pool.connection() as conn:
            rows = await store.secrets.list_credentials(conn, credential_type)
        return CredentialList(credentials=[self._view(r) for r in rows])

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
        names = _names(body.names)
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


class KeychainService:
    """Key-value secrets, global or per execution; same redaction rules as credentials."""

    def __init__(self, pool: AsyncConnectionPool, box: SecretBox) -> None:
        self._pool = pool
        self._box = box

    @staticmethod
    def _view(row: KeychainRow, value: Any = None, show: bool = False) -> KeychainView:
        return KeychainView(
            name=row.name,
            execution_id=row.scope_id or None,
            description=row.description,
            expires_at=_iso(row.expires_at),
            created_at=_iso(row.created_at) or "",
            updated_at=_iso(row.updated_at) or "",
            value=redact(value) if show else None,
            allowed_paths=row.allowed_paths,
        )

    async def put(self, body: KeychainIn) -> tuple[KeychainView, bool]:
        _name(body.name)
        scope = _scope(body.execution_id)
        allowed = _allowed_paths(body.allowed_paths)
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
        """Clear values for the worker: ``{values: {name: value}}``; the execution's entry wins.
        Only for the command the worker holds; a global entry only when its ``allowed_paths``
        cover the command's playbook."""
        names = _names(body.names)
        async with self._pool.connection() as conn:
            scope, path = await held_command(conn, body, principal)
            rows = await store.secrets.resolve_keychain(conn, names, scope)
        refused = [n for n, r in rows.items() if r.scope_id == 0 and not path_allowed(path, r.allowed_paths)]
        if refused:
            raise Forbidden(
                f"keychain entr(ies) {', '.join(sorted(refused))} may not be used by playbook {path!r}"
                " (see the entry's allowed_paths)",
                {"refused": sorted(refused), "path": path},
            )
        values = {name: self._box.open(row.value_enc) for name, row in rows.items()}
        missing = [n for n in names if n not in values]
        if missing:
            raise NotFound(
                f"unknown keychain entr(ies): {', '.join(sorted(set(missing)))}", {"missing": missing}
            )
        return {"values": values}


async def check_key_present(database_url: str, key: str | None) -> None:
    """At start: stored secrets without a key to read them is a configuration error."""
    if key:
        return
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        count = await store.secrets.count_secrets(conn)
    if count:
        raise ConfigError(
            f"{KEY_VARIABLE} is not set, but the database holds {count} encrypted credential/keychain"
            " entries; set the key they were stored with"
        )
