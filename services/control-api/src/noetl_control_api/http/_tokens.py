"""``/api/tokens`` (admin) and ``/api/auth/whoami`` (anyone authenticated)."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from ..application import Principal, TokenCreate, TokenCreated, TokenList, TokenService, TokenView
from ._auth import action


class TokenController(Controller):
    """API tokens: the value is shown once, in the creation reply; only its hash is kept."""

    path = "/api/tokens"
    tags = ["auth"]

    @post("/", status_code=201, opt=action("token.manage"))
    async def create(
        self,
        data: JSONBody[TokenCreate],
        tokens: NamedDependency[TokenService],
        principal: NamedDependency[Principal],
    ) -> TokenCreated:
        """``{name, role, pool?, expires_in_seconds?}`` → the token (once) and its metadata."""
        return await tokens.create(data, principal)

    @get("/", opt=action("token.manage"))
    async def list_all(
        self, tokens: NamedDependency[TokenService], include_revoked: FromQuery[bool] = False
    ) -> TokenList:
        """Metadata of every token (configured ones first); never a token or its hash."""
        return await tokens.list_all(include_revoked)

    @delete("/{name:str}", status_code=200, opt=action("token.manage"))
    async def revoke(
        self, name: FromPath[str], tokens: NamedDependency[TokenService], principal: NamedDependency[Principal]
    ) -> TokenView:
        """Revoke the live token ``name``: refused everywhere within ``NOETL_AUTH_CACHE_SECONDS``."""
        return await tokens.revoke(name, principal)


@get("/api/auth/whoami", tags=["auth"], opt=action("auth.whoami"))
async def whoami(principal: NamedDependency[Principal]) -> Principal:
    """The caller as the API sees it: name, role, pool, and where the credential came from."""
    return principal
