"""API tokens ``noetl.api_token``: only the sha256 of a token is stored."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection

from ._time import iso

_COLUMNS = "token_id, name, role, pool, created_by, created_at, expires_at, last_used_at, revoked_at"


class TokenRow(msgspec.Struct, kw_only=True):
    """One token's metadata (never its hash or value)."""

    token_id: int
    name: str
    role: str
    pool: str | None
    created_by: str | None
    created_at: str | None
    expires_at: str | None
    last_used_at: str | None
    revoked_at: str | None


def _row(r: Any) -> TokenRow:
    return TokenRow(
        token_id=r[0],
        name=r[1],
        role=r[2],
        pool=r[3],
        created_by=r[4],
        created_at=iso(r[5]),
        expires_at=iso(r[6]),
        last_used_at=iso(r[7]),
        revoked_at=iso(r[8]),
    )


async def insert(
    conn: AsyncConnection[Any],
    *,
    token_id: int,
    name: str,
    role: str,
    pool: str | None,
    token_hash: bytes,
    created_by: str | None,
    expires_at: datetime | None,
) -> TokenRow | None:
    """Insert a token; None when a live token already has that name."""
    cur = await conn.execute(
        "INSERT INTO noetl.api_token (token_id, name, role, pool, token_hash, created_by, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING"
        f" RETURNING {_COLUMNS}",
        (token_id, name, role, pool, token_hash, created_by, expires_at),
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def by_hash(conn: AsyncConnection[Any], token_hash: bytes) -> TokenRow | None:
    """The live (not revoked, not expired) token with this hash."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM noetl.api_token WHERE token_hash = %s AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        (token_hash,),
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def list_all(conn: AsyncConnection[Any], *, include_revoked: bool = False) -> list[TokenRow]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM noetl.api_token{where} ORDER BY name, token_id")
    return [_row(r) for r in await cur.fetchall()]


async def revoke(conn: AsyncConnection[Any], name: str) -> TokenRow | None:
    """Revoke the live token called ``name``; None when there is none."""
    cur = await conn.execute(
        f"UPDATE noetl.api_token SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL RETURNING {_COLUMNS}",
        (name,),
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def touch(conn: AsyncConnection[Any], token_ids: Sequence[int]) -> None:
    """Record that these tokens were used (batched by the caller)."""
    if token_ids:
        await conn.execute(
            "UPDATE noetl.api_token SET last_used_at = now() WHERE token_id = ANY(%s)", (list(token_ids),)
        )
