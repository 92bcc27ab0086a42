"""The plug-in registry ``noetl.plugin_module`` and the object store ``noetl.object``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection


@dataclass(frozen=True)
class PluginRow:
    """One published module version (``data`` None when only metadata was read)."""

    path: str
    version: int
    digest: str
    media_type: str
    size: int
    created_at: datetime
    data: bytes | None = None


async def publish(
    conn: AsyncConnection[Any], path: str, version: int, digest: str, media_type: str, data: bytes
) -> bool:
    """Insert or replace a version; True when the stored bytes changed (or are new)."""
    cur = await conn.execute(
        "INSERT INTO noetl.plugin_module (path, version, digest, media_type, bytes) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (path, version) DO UPDATE SET digest = excluded.digest,"
        " media_type = excluded.media_type, bytes = excluded.bytes, created_at = now()"
        " WHERE noetl.plugin_module.digest <> excluded.digest",
        (path, version, digest, media_type, data),
    )
    return cur.rowcount > 0


async def next_version(conn: AsyncConnection[Any], path: str) -> int:
    """One past the highest published version of ``path`` (1 for a new path)."""
    cur = await conn.execute(
        "SELECT coalesce(max(version), 0) + 1 FROM noetl.plugin_module WHERE path = %s", (path,)
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 1


async def get(
    conn: AsyncConnection[Any], path: str, version: int | None, *, with_bytes: bool
) -> PluginRow | None:
    """A version (None: the latest); bytes only when asked, so a 304 reads no blob."""
    column = "bytes" if with_bytes else "NULL::bytea"
    where, params = ("version = %s", (path, version)) if version is not None else ("true", (path,))
    cur = await conn.execute(
        f"SELECT path, version, digest, media_type, octet_length(bytes), created_at, {column}"
        f" FROM noetl.plugin_module WHERE path = %s AND {where} ORDER BY version DESC LIMIT 1",
        params,
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return PluginRow(
        row[0], row[1], row[2], row[3], row[4], row[5], bytes(row[6]) if row[6] is not None else None
    )


async def list_plugins(conn: AsyncConnection[Any], path: str | None = None) -> list[PluginRow]:
    """Every version (of one path, or all), path then version order, without bytes."""
    cur = await conn.execute(
        "SELECT path, version, digest, media_type, octet_length(bytes), created_at FROM noetl.plugin_module"
        " WHERE %s::text IS NULL OR path = %s ORDER BY path, version",
        (path, path),
    )
    return [PluginRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in await cur.fetchall()]


async def put_object(conn: AsyncConnection[Any], key: str, media_type: str, digest: str, data: bytes) -> bool:
    """Create or replace an object; True when it was created."""
    cur = await conn.execute(
        "INSERT INTO noetl.object (key, media_type, digest, bytes) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (key) DO UPDATE SET media_type = excluded.media_type, digest = excluded.digest,"
        " bytes = excluded.bytes, updated_at = now() RETURNING (xmax = 0)",
        (key, media_type, digest, data),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def get_object(conn: AsyncConnection[Any], key: str) -> tuple[str, str, bytes] | None:
    """``(media_type, digest, bytes)`` of an object, or None."""
    cur = await conn.execute("SELECT media_type, digest, bytes FROM noetl.object WHERE key = %s", (key,))
    row = await cur.fetchone()
    return (row[0], row[1], bytes(row[2])) if row else None
