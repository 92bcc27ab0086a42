"""OIDC bearer tokens: JWTs verified with PyJWT against the issuer's JWKS.

The JWKS is fetched (asynchronously, never inside a request's verification path when it is
fresh) from ``jwks_url`` or the issuer's discovery document, kept for an hour, and fetched
again when a token names a key id it does not hold (at most every 30 s, so a stream of
tokens with made-up key ids cannot make the API hammer the issuer). Issuer, audience,
expiry and algorithms are checked by PyJWT; the role comes from a claim (a dotted path) and
must be one of the human roles: OIDC never grants a service role (a valid token without
one is authenticated with no rights: 403 everywhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import jwt
import structlog

from .._options import OidcSettings
from ._policy import HUMAN_ROLES, Principal

_JWKS_MAX_AGE = 3600.0
_REFETCH_MIN_INTERVAL = 30.0
_LEEWAY_SECONDS = 30

log = structlog.get_logger("noetl.control_api.oidc")


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def role_from_claim(value: Any) -> str | None:
    """The highest human role named by a claim value (a string or a list of strings)."""
    names: Sequence[Any] = value if isinstance(value, list) else [value]
    found = [HUMAN_ROLES.index(v) for v in names if isinstance(v, str) and v in HUMAN_ROLES]
    return HUMAN_ROLES[max(found)] if found else None


class OidcVerifier:
    """Verifies JWTs of one issuer."""

    def __init__(self, settings: OidcSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _jwks_url(self) -> str:
        if self.settings.jwks_url:
            return self.settings.jwks_url
        discovery = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        reply = await self._http.get(discovery)
        reply.raise_for_status()
        url = reply.json().get("jwks_uri")
        if not isinstance(url, str) or not url:
            raise ValueError(f"{discovery} has no jwks_uri")
        return url

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys and (age < _REFETCH_MIN_INTERVAL or (not force and age < _JWKS_MAX_AGE)):
                return
            try:
                reply = await self._http.get(await self._jwks_url())
                reply.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(reply.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                self._fetched_at = time.monotonic()  # do not retry on every request
                log.warning("oidc_jwks_fetch_failed", issuer=self.settings.issuer, error=str(exc)[:200])
                return
            self._keys = {key.key_id or "": key for key in keyset.keys}
            self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> Principal | None:
        """The principal of a valid token with a known role; None otherwise (logged, never the token)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        kid = str(header.get("kid") or "")
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        key = self._keys.get(kid)
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=list(self.settings.algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            log.info("oidc_token_refused", reason=type(exc).__name__)
            return None
        role = role_from_claim(_claim(claims, self.settings.role_claim))
        if role is None:
            # authenticated, but granted nothing: every route answers 403, not 401
            log.info("oidc_token_without_role", subject=str(claims["sub"])[:200], claim=self.settings.role_claim)
            role = "none"
        return Principal(name=f"oidc:{claims['sub']}"[:200], role=role, source="oidc")
