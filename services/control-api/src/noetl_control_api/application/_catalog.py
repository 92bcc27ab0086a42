"""Use cases of the playbook catalog."""

from __future__ import annotations

import re

from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import InvalidPlaybook, NotFound, PayloadTooLarge
from ._playbooks import PlaybookCache, parse
from ._policy import Policy, Principal, require
from ._views import CatalogList, CatalogListEntry, RegisterReply, ResourceReply

_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,511}$")


class CatalogService:
    """Register, list and fetch playbooks."""

    def __init__(
        self, pool: AsyncConnectionPool, playbooks: PlaybookCache, policy: Policy, *, max_bytes: int
    ) -> None:
        self._pool = pool
        self._playbooks = playbooks
        self._policy = policy
        self._max_bytes = max_bytes

    async def register(self, content: str, principal: Principal) -> RegisterReply:
        """Validate and store ``content``; identical content keeps its version. The path is
        known only once parsed, so the policy is asked again with it (``system/`` is admin's)."""
        size = len(content.encode())
        if size > self._max_bytes:
            raise PayloadTooLarge(
                f"the playbook is {size} bytes, over NOETL_PLAYBOOK_MAX_BYTES={self._max_bytes}",
                {"field": "content", "limit": self._max_bytes},
            )
        playbook = parse(content)
        require(self._policy, principal, "catalog.register", playbook.path)
        if not _PATH.match(playbook.path) or "//" in playbook.path or ".." in playbook.path:
            raise InvalidPlaybook(
                f"metadata.path {playbook.path[:100]!r} must be a relative path of letters, digits, '_', '-', '.', '/'",
                {"step": None, "field": "metadata.path"},
            )
        async with self._pool.connection() as conn, conn.transaction():
            entry, _created = await store.catalog.register(conn, playbook.path, playbook.name, content)
        self._playbooks.put(entry.path, entry.version, playbook)
        return RegisterReply(path=entry.path, version=entry.version, name=entry.name)

    async def list_entries(self) -> CatalogList:
        async with self._pool.connection() as conn:
            entries = await store.catalog.list_latest(conn)
        return CatalogList(
            entries=[
                CatalogListEntry(path=e.path, version=e.version, name=e.name, created_at=e.created_at)
                for e in entries
            ]
        )

    async def resource(self, path: str, version: int | None) -> ResourceReply:
        async with self._pool.connection() as conn:
            entry = await store.catalog.get(conn, path, version)
        if entry is None:
            which = f"version {version}" if version is not None else "any version"
            raise NotFound(f"no catalog entry for path {path[:200]!r} ({which})")
        return ResourceReply(
            path=entry.path,
            version=entry.version,
            name=entry.name,
            content=entry.content,
            created_at=entry.created_at,
        )
