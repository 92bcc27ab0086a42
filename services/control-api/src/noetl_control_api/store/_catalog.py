"""Catalog rows: immutable (path, version) playbook texts."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from psycopg import AsyncConnection

from ._pages import budgeted
from ._time import iso


class CatalogEntry(msgspec.Struct, kw_only=True):
    """One registered playbook version."""

    path: str
    version: int
    name: str
    content: str
    created_at: str | None
    #: the entry's own id (migration 0012), for clients that name entries by one id
    catalog_id: int


_COLUMNS = "path, version, name, content, created_at, catalog_id"


def _entry(row: Any) -> CatalogEntry:
    return CatalogEntry(
        path=row[0], version=row[1], name=row[2], content=row[3], created_at=iso(row[4]), catalog_id=row[5]
    )


async def register(
    conn: AsyncConnection[Any], path: str, name: str, content: str
) -> tuple[CatalogEntry, bool]:
    """Store ``content`` under ``path``; returns (entry, created).

    Identical content to the latest version returns that version. A transaction-scoped
    advisory lock on the path serialises concurrent registrations of one path, so two
    writers never compute the same next version.
    """
    digest = hashlib.sha256(content.encode()).hexdigest()
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", (path,))
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, content_sha256 FROM noetl.catalog WHERE path = %s ORDER BY version DESC LIMIT 1",
        (path,),
    )
    latest = await cur.fetchone()
    if latest is not None and latest[6] == digest:
        return _entry(latest), False
    version = 1 if latest is None else latest[1] + 1
    cur = await conn.execute(
        "INSERT INTO noetl.catalog (path, version, name, content, content_sha256)"
        f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (path, version, name, content, digest),
    )
    row = await cur.fetchone()
    return _entry(row), True


async def get(conn: AsyncConnection[Any], path: str, version: int | None) -> CatalogEntry | None:
    """A given version, or the latest when ``version`` is None."""
    if version is None:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM noetl.catalog WHERE path = %s ORDER BY version DESC LIMIT 1",
            (path,),
        )
    else:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM noetl.catalog WHERE path = %s AND version = %s",
            (path, version),
        )
    row = await cur.fetchone()
    return None if row is None else _entry(row)


async def list_latest(conn: AsyncConnection[Any]) -> list[CatalogEntry]:
    """The latest version of every path, ordered by path (content left empty)."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (path) path, version, name, '', created_at, catalog_id FROM noetl.catalog"
        " ORDER BY path, version DESC"
    )
    return [_entry(row) for row in await cur.fetchall()]


async def get_by_id(conn: AsyncConnection[Any], catalog_id: int) -> CatalogEntry | None:
    """The entry with this ``catalog_id``."""
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM noetl.catalog WHERE catalog_id = %s", (catalog_id,))
    row = await cur.fetchone()
    return None if row is None else _entry(row)


async def list_versions(
    conn: AsyncConnection[Any], path: str | None, *, limit: int, max_bytes: int
) -> list[CatalogEntry]:
    """Versions (of ``path``, or of every path) with their content, newest first: at most
    ``limit``, and no more once their content reaches ``max_bytes`` (at least one)."""
    cur = await conn.execute(
        budgeted(
            f"SELECT {_COLUMNS}, octet_length(content) AS page_size FROM noetl.catalog"
            " WHERE (%s::text IS NULL OR path = %s) ORDER BY catalog_id DESC LIMIT %s",
            "catalog_id DESC",
        ),
        (path, path, limit, max_bytes),
    )
    return [_entry(row) for row in await cur.fetchall()]


async def ids_of(conn: AsyncConnection[Any], pairs: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """``catalog_id`` of each ``(path, version)`` given that is stored."""
    if not pairs:
        return {}
    paths, versions = zip(*pairs, strict=True)
    cur = await conn.execute(
        "SELECT c.path, c.version, c.catalog_id FROM noetl.catalog c"
        " JOIN unnest(%s::text[], %s::int[]) AS w(path, version) USING (path, version)",
        (list(paths), list(versions)),
    )
    return {(r[0], r[1]): r[2] for r in await cur.fetchall()}
