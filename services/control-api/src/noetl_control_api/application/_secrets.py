"""Secrets at rest: the sealing box and the checks credentials and keychain entries share.

Data is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography``
package) under ``NOETL_CREDENTIALS_KEY``. Several comma-separated keys rotate: the first
encrypts, any of them decrypts. Public replies carry metadata and the data's *keys* with
every value redacted; clear data leaves only through the internal resolve routes, which
the worker calls right before it runs a task that names a credential, for the command
whose lease it holds (:func:`held_command`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from cryptography.fernet import InvalidToken, MultiFernet
from noetl_common import REDACTED, ConfigError

from .. import store
from .._errors import Forbidden, Unavailable, ValidationFailed
from .._options import KEY_VARIABLE, parse_keys
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


class ResolveRequest(msgspec.Struct, kw_only=True):
    """``POST /api/internal/{credentials,keychain}/resolve`` body.

    ``event_id`` (the claim key) and ``worker_id`` name the command the worker holds: values
    resolve only for it, for the playbook path of its execution. ``execution_id`` is ignored
    for a worker (the command says which execution)."""

    names: list[str]
    execution_id: int | str | None = None
    event_id: int | str | None = None
    worker_id: str | None = None


#: Names are path segments (``GET /api/credentials/{name}``): no slash, space or control character.
_NAME = re.compile(r"[A-Za-z0-9_.:@-]+")


def check_name(name: str, what: str = "name") -> str:
    """A credential or keychain name (or type), as it may appear in a path; 400 otherwise."""
    if not name or len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise ValidationFailed(
            f"{what} must be 1..{MAX_NAME} characters of letters, digits and _ . : @ -, got {name[:60]!r}"
        )
    return name


def check_names(names: list[str]) -> list[str]:
    """The names of one resolve call: 1 to 100 of them, each a valid name."""
    if not names or len(names) > 100:
        raise ValidationFailed("names must hold 1 to 100 names")
    return [check_name(n, "names[]") for n in names]


def iso(value: datetime | None) -> str | None:
    """A timestamp as the replies show it (UTC, ``Z``)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


MAX_ALLOWED_PATHS = 100


def check_allowed_paths(paths: list[str] | None) -> list[str] | None:
    """Validate ``allowed_paths``: prefixes of catalog paths, or ``*`` for every path."""
    if paths is None:
        return None
    if not paths or len(paths) > MAX_ALLOWED_PATHS:
        raise ValidationFailed(
            f"allowed_paths must hold 1 to {MAX_ALLOWED_PATHS} path prefixes (or be omitted)"
        )
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
    execution = await held_execution(conn, body.event_id, body.worker_id, principal)
    return execution.execution_id, execution.path


async def held_execution(
    conn: Any, event_id_in: int | str | None, worker_id: str | None, principal: Principal
) -> store.ExecutionRow:
    """The execution of the command a worker says it holds; 403 unless it holds that
    command's live lease as that worker."""
    if event_id_in is None or not worker_id:
        raise ValidationFailed(
            "a worker resolves secrets for a command it holds: send event_id and worker_id"
        )
    event_id = client_id(event_id_in, "event_id")
    command = await store.commands.get_by_event(conn, event_id)
    held = None
    if command is not None:
        held = await store.commands.held_in(conn, command.execution_id, principal.name, event_id)
    if held is None or held.worker_id != worker_id:
        raise Forbidden(f"{principal.describe()} holds no live lease on command {event_id} as worker {worker_id!r}")
    execution = await store.executions.get(conn, held.execution_id)
    assert execution is not None  # the foreign key guarantees it
    return execution


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
