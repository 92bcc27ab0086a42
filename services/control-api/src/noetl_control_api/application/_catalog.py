"""Use cases of the playbook catalog."""

from __future__ import annotations

import re

import structlog
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import InvalidPlaybook, NotFound, PayloadTooLarge, ValidationFailed
from ..dsl import UnknownKeys
from ..store import CatalogEntry
from ._content import playbook_text
from ._executions import check_version
from ._ids import client_id
from ._playbooks import PlaybookCache, parse
from ._policy import Policy, Principal, require
from ._views import CatalogList, CatalogListEntry, RegisterReply, ResourceReply

log = structlog.get_logger("noetl.control_api.catalog")
_PATH = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,511}$")


class CatalogService:
    """Register, list and fetch playbooks."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        playbooks: PlaybookCache,
        policy: Policy,
        *,
        max_bytes: int,
        unknown_keys: UnknownKeys = "error",
    ) -> None:
        self._pool = pool
        self._playbooks = playbooks
        self._policy = policy
        self._max_bytes = max_bytes
        self._unknown_keys = unknown_keys

    async def register(self, content: str, principal: Principal) -> RegisterReply:
        """Validate and store ``content`` (YAML text, or base64 of it); identical content keeps
        its version. The path is known only once parsed, so the policy is asked again with it
        (``system/`` is admin's)."""
        content = playbook_text(content)
        size = len(content.encode())
        if size > self._max_bytes:
            raise PayloadTooLarge(
                f"the playbook is {size} bytes, over NOETL_PLAYBOOK_MAX_BYTES={self._max_bytes}",
                {"field": "content", "limit": self._max_bytes},
            )
        playbook = parse(content, self._unknown_keys)
        require(self._policy, principal, "catalog.register", playbook.path)
        for warning in playbook.warnings:
            log.warning("playbook_unknown_key_registered", path=playbook.path, warning=warning)
        if not _PATH.match(playbook.path) or "//" in playbook.path or ".." in playbook.path:
            raise InvalidPlaybook(
                f"metadata.path {playbook.path[:100]!r} must be a relative path of letters, digits, '_', '-', '.', '/'",
                {"step": None, "field": "metadata.path"},
            )
        async with self._pool.connection() as conn, conn.transaction():
            entry, _created = await store.catalog.register(conn, playbook.path, playbook.name, content)
        self._playbooks.put(entry.path, entry.version, playbook)
        return RegisterReply(
            path=entry.path,
            version=entry.version,
            name=entry.name,
            catalog_id=str(entry.catalog_id),
            message=f"Resource {entry.path!r} version {entry.version} registered."
            + "".join(f" Warning: {warning}." for warning in playbook.warnings),
        )

    async def list_entries(self) -> CatalogList:
        async with self._pool.connection() as conn:
            entries = await store.catalog.list_latest(conn)
        return CatalogList(
            entries=[
                CatalogListEntry(
                    path=e.path,
                    version=e.version,
                    name=e.name,
                    created_at=e.created_at,
                    catalog_id=str(e.catalog_id),
                )
                for e in entries
            ]
        )

    async def resource(
        self, path: str | None, version: int | str | None, catalog_id: object = None
    ) -> ResourceReply:
        """One entry: by ``path`` (a ``version``, else the latest) or by ``catalog_id``."""
        entry = await self.entry(path, version, catalog_id)
        return ResourceReply(
            path=entry.path,
            version=entry.version,
            name=entry.name,
            content=entry.content,
            created_at=entry.created_at,
            catalog_id=str(entry.catalog_id),
        )

    async def entry(
        self, path: str | None, version: int | str | None, catalog_id: object = None
    ) -> CatalogEntry:
        """The stored entry named by ``catalog_id``, or by ``path`` and ``version`` (a number,
        ``"latest"`` or None for the latest); 404 when there is none."""
        async with self._pool.connection() as conn:
            if catalog_id is not None:
                wanted = client_id(catalog_id, "catalog_id")
                entry = await store.catalog.get_by_id(conn, wanted)
                if entry is None or (path is not None and path != entry.path):
                    raise NotFound(
                        f"no catalog entry {wanted}" + (f" at path {path[:200]!r}" if path else "")
                    )
                return entry
            if path is None:
                raise ValidationFailed(
                    "name the entry with path (and version) or catalog_id", {"field": "path"}
                )
            number = _version(version)
            entry = await store.catalog.get(conn, path, number)
        if entry is None:
            which = f"version {number}" if number is not None else "any version"
            raise NotFound(f"no catalog entry for path {path[:200]!r} ({which})")
        return entry


def _version(version: int | str | None) -> int | None:
    """A catalog version as clients send it: a number, its digits, ``"latest"`` or nothing."""
    if version is None or (isinstance(version, str) and version.strip().lower() in ("", "latest")):
        return None
    try:
        number = int(version)
    except ValueError:
        raise ValidationFailed(f"version must be a number or 'latest', got {version!r:.40}") from None
    return check_version(number)
