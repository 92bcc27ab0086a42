"""API tokens: minting, listing, revoking, and verifying a presented bearer token.

A token is ``noetl_`` + 43 url-safe characters (32 random bytes); only its sha256 is stored.
SHA-256 without salt or stretching is right for 256-bit random secrets: there is nothing to
guess, and a slow hash would cost every request. Verification is cached in the process for
``cache_seconds`` (a revocation reaches every replica within that time), misses included, so
random tokens do not reach Postgres on every try. ``last_used_at`` is written in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import msgspec
import structlog
from noetl_common import Snowflake
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, NotFound, ValidationFailed
from ..store import TokenRow
from ._oidc import OidcVerifier
from ._policy import POOLS, ROLES, Principal

TOKEN_PREFIX = "noetl_"
_TOKEN_CHARS = len(TOKEN_PREFIX) + 43
MAX_NAME = 100
MAX_TOKEN_CHARS = 4096
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]*$")
_NEGATIVE_CACHE = 10_000
_TOUCH_INTERVAL = 60.0

log = structlog.get_logger("noetl.control_api.auth")


def new_token() -> str:
    """A fresh opaque token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenCreate(msgspec.Struct, kw_only=True):
    """``POST /api/tokens`` body."""

    name: str
    role: str
    pool: str | None = None
    expires_in_seconds: int | None = None


class TokenView(msgspec.Struct, kw_only=True):
    """A token as replies show it: metadata only (the value appears once, in :class:`TokenCreated`)."""

    name: str
    role: str
    pool: str | None = None
    source: str = "token"
    created_by: str | None = None
    created_at: str | None = None
    expires_at: str | None = None
    last_used_at: str | None = None
    revoked_at: str | None = None


class TokenCreated(msgspec.Struct, kw_only=True):
    token: str
    name: str
    role: str
    pool: str | None
    expires_at: str | None


class TokenList(msgspec.Struct, kw_only=True):
    tokens: list[TokenView]


def _view(row: TokenRow) -> TokenView:
    return TokenView(
        name=row.name,
        role=row.role,
        pool=row.pool,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _check_role(role: str, pool: str | None) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(ROLES)}; got {role[:40]!r}")
    if role == "worker" and pool not in POOLS:
        raise ValidationFailed(f"a worker token needs pool = one of {', '.join(POOLS)}")
    if role != "worker" and pool is not None:
        raise ValidationFailed("only a worker token has a pool")


class _Cached(msgspec.Struct):
    principal: Principal | None
    until: float
    expires_at: float | None


class TokenService:
    """Tokens of ``noetl.api_token`` plus those configured in the environment, and OIDC."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        ids: Snowflake,
        *,
        configured: Mapping[str, Principal] | None = None,
        cache_seconds: float = 5.0,
        oidc: OidcVerifier | None = None,
    ) -> None:
        self._pool = pool
        self._ids = ids
        self._configured = {token_hash(token): principal for token, principal in (configured or {}).items()}
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._used: set[int] = set()
        self._oidc = oidc
        self._flusher: asyncio.Task[None] | None = None

    # -- verification -------------------------------------------------------------------

    async def authenticate(self, presented: str) -> Principal | None:
        """The principal of a bearer credential, or None when it is unknown, expired or revoked."""
        presented = presented.strip()
        if not presented or len(presented) > MAX_TOKEN_CHARS:
            return None
        if self._oidc is not None and not presented.startswith(TOKEN_PREFIX) and presented.count(".") == 2:
            return await self._oidc.verify(presented)
        digest = token_hash(presented)
        configured = self._configured.get(digest)
        if configured is not None:
            return configured
        if not presented.startswith(TOKEN_PREFIX) or len(presented) != _TOKEN_CHARS:
            return None  # not a token this API mints: no database round trip for it
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached.until > now:
            if cached.principal is None:
                return None
            if cached.expires_at is None or cached.expires_at > time.time():
                self._note_use(cached.principal)
                return cached.principal
        row = await self._lookup(digest)
        principal = None
        expires_at = None
        if row is not None:
            principal = Principal(name=row.name, role=row.role, pool=row.pool, token_id=row.token_id)
            if row.expires_at is not None:
                expires_at = datetime.fromisoformat(row.expires_at).timestamp()
        self._cache[digest] = _Cached(principal, now + self._cache_seconds, expires_at)
        self._cache.move_to_end(digest)
        while len(self._cache) > _NEGATIVE_CACHE:
            self._cache.popitem(last=False)
        if principal is not None:
            self._note_use(principal)
        return principal

    async def _lookup(self, digest: bytes) -> TokenRow | None:
        async with self._pool.connection() as conn:
            return await store.tokens.by_hash(conn, digest)

    def _note_use(self, principal: Principal) -> None:
        if principal.token_id is not None:
            self._used.add(principal.token_id)

    # -- management ----------------------------------------------------------------------

    async def create(self, request: TokenCreate, created_by: Principal) -> TokenCreated:
        name = request.name.strip()
        if not name or len(name) > MAX_NAME or not _NAME.match(name):
            raise ValidationFailed(
                f"token name must be 1..{MAX_NAME} of letters, digits and _ . : @ / - (starting with a"
                " letter or digit)"
            )
        _check_role(request.role, request.pool)
        if any(p.name == name for p in self._configured.values()):
            raise Conflict(f"{name!r} is the name of a token configured in the environment")
        expires_at = None
        if request.expires_in_seconds is not None:
            if not 60 <= request.expires_in_seconds <= 10 * 366 * 86400:
                raise ValidationFailed("expires_in_seconds must be within 60 s .. 10 years")
            expires_at = datetime.now(UTC) + timedelta(seconds=request.expires_in_seconds)
        token = new_token()
        async with self._pool.connection() as conn:
            row = await store.tokens.insert(
                conn,
                token_id=self._ids.next_id(),
                name=name,
                role=request.role,
                pool=request.pool,
                token_hash=token_hash(token),
                created_by=created_by.name,
                expires_at=expires_at,
            )
        if row is None:
            raise Conflict(f"a live token is already called {name!r}; revoke it first or pick another name")
        log.info("token_created", token_name=name, role=request.role, pool=request.pool, by=created_by.name)
        return TokenCreated(token=token, name=row.name, role=row.role, pool=row.pool, expires_at=row.expires_at)

    async def list_all(self, include_revoked: bool = False) -> TokenList:
        async with self._pool.connection() as conn:
            rows = await store.tokens.list_all(conn, include_revoked=include_revoked)
        configured = [
            TokenView(name=p.name, role=p.role, pool=p.pool, source="config")
            for p in sorted(self._configured.values(), key=lambda p: p.name)
        ]
        return TokenList(tokens=configured + [_view(r) for r in rows])

    async def revoke(self, name: str, by: Principal) -> TokenView:
        if any(p.name == name for p in self._configured.values()):
            raise Conflict(f"{name!r} is configured in the environment: change the Secret to revoke it")
        async with self._pool.connection() as conn:
            row = await store.tokens.revoke(conn, name)
        if row is None:
            raise NotFound(f"no live token called {name!r}")
        # this replica forgets it at once; the others within their cache time
        for digest, cached in list(self._cache.items()):
            if cached.principal is not None and cached.principal.token_id == row.token_id:
                del self._cache[digest]
        log.info("token_revoked", token_name=name, by=by.name)
        return _view(row)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background writer of ``last_used_at``."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="noetl-token-last-used")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write the ``last_used_at`` of tokens used since the last flush."""
        used, self._used = self._used, set()
        if not used:
            return
        try:
            async with self._pool.connection() as conn:
                await store.tokens.touch(conn, sorted(used))
        except Exception as exc:  # best effort: a lost touch only makes last_used_at older
            self._used |= used
            log.warning("token_last_used_update_failed", error=str(exc)[:200])

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(_TOUCH_INTERVAL)
            await self.flush()
