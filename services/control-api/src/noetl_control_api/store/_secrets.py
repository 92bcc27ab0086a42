"""``noetl.credential`` and ``noetl.keychain``: rows hold ciphertext only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection


@dataclass
class CredentialRow:
    """One credential; ``data_enc`` is the Fernet token of its JSON data."""

    name: str
    credential_type: str
    description: str | None
    data_enc: bytes
    created_at: datetime
    updated_at: datetime
    allowed_paths: list[str] | None = None


@dataclass
class KeychainRow:
    """One keychain entry; ``scope_id`` 0 is global, else an execution id."""

    scope_id: int
    name: str
    description: str | None
    value_enc: bytes
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    allowed_paths: list[str] | None = None


_CRED_COLS = "name, credential_type, description, data_enc, created_at, updated_at, allowed_paths"
_KEY_COLS = "scope_id, name, description, value_enc, expires_at, created_at, updated_at, allowed_paths"


async def upsert_credential(
    conn: AsyncConnection[Any],
    name: str,
    credential_type: str,
    description: str | None,
    data_enc: bytes,
    allowed_paths: list[str] | None = None,
) -> tuple[CredentialRow, bool]:
    """Create or replace; returns the row and whether it was created."""
    cur = await conn.execute(
        f"INSERT INTO noetl.credential (name, credential_type, description, data_enc, allowed_paths)"
        f" VALUES (%s, %s, %s, %s, %s)"
        f" ON CONFLICT (name) DO UPDATE SET credential_type = excluded.credential_type,"
        f" description = excluded.description, data_enc = excluded.data_enc,"
        f" allowed_paths = excluded.allowed_paths, updated_at = now()"
        f" RETURNING {_CRED_COLS}, (xmax = 0) AS created",
        (name, credential_type, description, data_enc, allowed_paths),
    )
    row = await cur.fetchone()
    assert row is not None
    return CredentialRow(*row[:7]), bool(row[7])


async def get_credential(conn: AsyncConnection[Any], name: str) -> CredentialRow | None:
    cur = await conn.execute(f"SELECT {_CRED_COLS} FROM noetl.credential WHERE name = %s", (name,))
    row = await cur.fetchone()
    return CredentialRow(*row) if row else None


async def get_credentials(conn: AsyncConnection[Any], names: list[str]) -> list[CredentialRow]:
    cur = await conn.execute(f"SELECT {_CRED_COLS} FROM noetl.credential WHERE name = ANY(%s)", (names,))
    return [CredentialRow(*row) for row in await cur.fetchall()]


async def list_credentials(conn: AsyncConnection[Any], credential_type: str | None) -> list[CredentialRow]:
    cur = await conn.execute(
        f"SELECT {_CRED_COLS} FROM noetl.credential"
        " WHERE %(t)s::text IS NULL OR credential_type = %(t)s ORDER BY name",
        {"t": credential_type},
    )
    return [CredentialRow(*row) for row in await cur.fetchall()]


async def delete_credential(conn: AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("DELETE FROM noetl.credential WHERE name = %s", (name,))
    return cur.rowcount > 0


async def count_secrets(conn: AsyncConnection[Any]) -> int:
    """Rows that need the encryption key to be read (credentials plus keychain entries)."""
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM noetl.credential) + (SELECT count(*) FROM noetl.keychain)"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def upsert_keychain(
    conn: AsyncConnection[Any],
    scope_id: int,
    name: str,
    description: str | None,
    value_enc: bytes,
    expires_at: datetime | None,
    allowed_paths: list[str] | None = None,
) -> tuple[KeychainRow, bool]:
    cur = await conn.execute(
        f"INSERT INTO noetl.keychain (scope_id, name, description, value_enc, expires_at, allowed_paths)"
        f" VALUES (%s, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (scope_id, name) DO UPDATE SET description = excluded.description,"
        f" value_enc = excluded.value_enc, expires_at = excluded.expires_at,"
        f" allowed_paths = excluded.allowed_paths, updated_at = now()"
        f" RETURNING {_KEY_COLS}, (xmax = 0) AS created",
        (scope_id, name, description, value_enc, expires_at, allowed_paths),
    )
    row = await cur.fetchone()
    assert row is not None
    return KeychainRow(*row[:8]), bool(row[8])


async def get_keychain(conn: AsyncConnection[Any], scope_id: int, name: str) -> KeychainRow | None:
    cur = await conn.execute(
        f"SELECT {_KEY_COLS} FROM noetl.keychain WHERE scope_id = %s AND name = %s"
        " AND (expires_at IS NULL OR expires_at > now())",
        (scope_id, name),
    )
    row = await cur.fetchone()
    return KeychainRow(*row) if row else None


async def list_keychain(conn: AsyncConnection[Any], scope_id: int | None) -> list[KeychainRow]:
    cur = await conn.execute(
        f"SELECT {_KEY_COLS} FROM noetl.keychain"
        " WHERE (%(s)s::bigint IS NULL OR scope_id = %(s)s) AND (expires_at IS NULL OR expires_at > now())"
        " ORDER BY scope_id, name",
        {"s": scope_id},
    )
    return [KeychainRow(*row) for row in await cur.fetchall()]


async def resolve_keychain(
    conn: AsyncConnection[Any], names: list[str], execution_id: int | None
) -> dict[str, KeychainRow]:
    """Live entries by name; an entry of the execution wins over a global one."""
    scopes = [0] if not execution_id else [0, execution_id]
    cur = await conn.execute(
        f"SELECT {_KEY_COLS} FROM noetl.keychain WHERE name = ANY(%s) AND scope_id = ANY(%s)"
        " AND (expires_at IS NULL OR expires_at > now()) ORDER BY scope_id",
        (names, scopes),
    )
    found: dict[str, KeychainRow] = {}
    for row in await cur.fetchall():
        found[row[1]] = KeychainRow(*row)  # ordered by scope: the execution's row comes last
    return found


async def delete_keychain(conn: AsyncConnection[Any], scope_id: int, name: str) -> bool:
    cur = await conn.execute("DELETE FROM noetl.keychain WHERE scope_id = %s AND name = %s", (scope_id, name))
    return cur.rowcount > 0
