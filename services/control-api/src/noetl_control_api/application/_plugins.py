"""The WASM plug-in registry and the object store (architecture.md §6, §8).

The registry is the digest authority: ``digest`` = sha256 hex of the module bytes, served
as the ``ETag``; a worker revalidates with ``If-None-Match`` and gets 304 while its copy
is current. Re-publishing a version with other bytes replaces them and changes the digest,
so workers reload it on their next claim. Built-in plug-ins are seeded at start from
``NOETL_PLUGIN_SEED_DIR`` (``<dir>/<path>.wasm``, version 1 unless the file is
``<path>@<version>.wasm``); seeding never downgrades a module an operator re-published.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from pathlib import Path

import msgspec
import structlog
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound, PayloadTooLarge, ValidationFailed
from ..store import PluginRow

WASM_MEDIA_TYPE = "application/wasm"
WASM_MAGIC = b"\0asm"
MAX_MODULE_BYTES = 64 * 1024 * 1024
MAX_OBJECT_BYTES = 256 * 1024 * 1024
_PATH = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_SEED_FILE = re.compile(r"^(?P<path>.+?)(@(?P<version>\d+))?\.wasm$")

log = structlog.get_logger(__name__)


class PluginView(msgspec.Struct, kw_only=True):
    """A published module version, without its bytes."""

    path: str
    version: int
    digest: str
    media_type: str
    size: int
    created_at: str


class PluginList(msgspec.Struct, kw_only=True):
    plugins: list[PluginView]


class PublishJson(msgspec.Struct, kw_only=True):
    """JSON form of a publish: the module base64-encoded."""

    module_base64: str
    version: int | None = None
    media_type: str = WASM_MEDIA_TYPE


class PublishReply(msgspec.Struct, kw_only=True):
    path: str
    version: int
    digest: str
    size: int
    changed: bool


class ObjectReply(msgspec.Struct, kw_only=True):
    key: str
    digest: str
    size: int
    created: bool


def _view(row: PluginRow) -> PluginView:
    return PluginView(
        path=row.path,
        version=row.version,
        digest=row.digest,
        media_type=row.media_type,
        size=row.size,
        created_at=row.created_at.isoformat(),
    )


def check_path(path: str, what: str = "plug-in path") -> str:
    """A slash-separated name of letters, digits, ``_.-`` (no ``..``, no empty segments)."""
    if not path or len(path) > 300 or not _PATH.match(path) or ".." in path.split("/"):
        raise ValidationFailed(f"{what} {path!r:.80} must be slash-separated segments of A-Z a-z 0-9 _ . -")
    return path


def decode_publish(body: bytes, content_type: str | None) -> tuple[bytes, int | None, str]:
    """``(module bytes, version from the body or None, media type)`` of a publish request."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            request = msgspec.json.decode(body, type=PublishJson)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValidationFailed(f"publish body: {exc}") from None
        try:
            data = base64.b64decode(request.module_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed("module_base64 is not valid base64") from None
        return data, request.version, request.media_type
    return body, None, WASM_MEDIA_TYPE


def _read_seed_dir(folder: Path) -> list[tuple[str, bytes]]:
    """``(relative posix name, bytes)`` of every ``*.wasm`` under ``folder``."""
    return [
        (file.relative_to(folder).as_posix(), file.read_bytes()) for file in sorted(folder.rglob("*.wasm"))
    ]


class PluginService:
    """Publish, fetch and list plug-in modules; get and put objects."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def publish(self, path: str, data: bytes, version: int | None, media_type: str) -> PublishReply:
        """Store ``data`` as ``path``@``version`` (None: next version); same bytes change nothing."""
        check_path(path)
        if not data.startswith(WASM_MAGIC):
            raise ValidationFailed("the module is not a WebAssembly binary (no \\0asm header)")
        if len(data) > MAX_MODULE_BYTES:
            raise PayloadTooLarge(f"module is {len(data)} bytes, over {MAX_MODULE_BYTES}")
        if version is not None and not 1 <= version < 2**31:
            raise ValidationFailed(f"version must be within 1..{2**31 - 1}, got {version}")
        digest = hashlib.sha256(data).hexdigest()
        async with self._pool.connection() as conn, conn.transaction():
            if version is None:
                version = await store.plugins.next_version(conn, path)
            changed = await store.plugins.publish(conn, path, version, digest, media_type, data)
        return PublishReply(path=path, version=version, digest=digest, size=len(data), changed=changed)

    async def get(
        self, path: str, version: int | None, known_digests: frozenset[str] = frozenset()
    ) -> tuple[PluginRow, bool]:
        """``(row, modified)``: when ``known_digest`` is current the row carries no bytes (a 304)."""
        check_path(path)
        async with self._pool.connection() as conn:
            row = await store.plugins.get(conn, path, version, with_bytes=False)
            if row is None:
                at = f" version {version}" if version is not None else ""
                raise NotFound(f"plug-in {path!r}{at} is not published")
            if row.digest in known_digests:
                return row, False
            full = await store.plugins.get(conn, path, row.version, with_bytes=True)
        if full is None:  # deleted between the two reads
            raise NotFound(f"plug-in {path!r} version {row.version} is not published")
        return full, True

    async def list_all(self, path: str | None = None) -> PluginList:
        async with self._pool.connection() as conn:
            rows = await store.plugins.list_plugins(conn, path)
        return PluginList(plugins=[_view(row) for row in rows])

    async def seed(self, folder: Path) -> int:
        """Publish every ``*.wasm`` under ``folder`` whose version is not yet stored; returns how many."""
        seeded = 0
        for name, data in await asyncio.to_thread(_read_seed_dir, folder):
            match = _SEED_FILE.match(name)
            if match is None:
                continue
            path, version = match.group("path"), int(match.group("version") or 1)
            async with self._pool.connection() as conn:
                existing = await store.plugins.get(conn, path, version, with_bytes=False)
            if existing is not None:
                continue
            await self.publish(path, data, version, WASM_MEDIA_TYPE)
            seeded += 1
            log.info("plugin_seeded", path=path, version=version, file=name)
        return seeded

    # -- objects ------------------------------------------------------------------------------
    async def put_object(self, key: str, data: bytes, media_type: str | None) -> ObjectReply:
        check_path(key, "object key")
        if len(data) > MAX_OBJECT_BYTES:
            raise PayloadTooLarge(f"object is {len(data)} bytes, over {MAX_OBJECT_BYTES}")
        digest = hashlib.sha256(data).hexdigest()
        media = (media_type or "application/octet-stream").split(";", 1)[
            0
        ].strip() or "application/octet-stream"
        async with self._pool.connection() as conn, conn.transaction():
            created = await store.plugins.put_object(conn, key, media, digest, data)
        return ObjectReply(key=key, digest=digest, size=len(data), created=created)

    async def get_object(self, key: str) -> tuple[str, str, bytes]:
        check_path(key, "object key")
        async with self._pool.connection() as conn:
            found = await store.plugins.get_object(conn, key)
        if found is None:
            raise NotFound(f"object {key!r} not found")
        return found
