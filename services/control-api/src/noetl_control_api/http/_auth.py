"""Authentication and the route-level policy check, as one ASGI middleware.

Every route handler names its action in ``opt={"action": ...}`` (see :func:`action`), or is
public (``opt={"public": True}``: liveness, readiness, metrics). The middleware resolves the
bearer credential to a :class:`Principal` (401 when there is none or it is unknown), asks
the policy decision point whether that principal may take the route's action (403 when
not), and leaves the principal in ``scope["user"]`` for the handler. A handler that names
no action is refused: a new route cannot be open by mistake.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.types import ASGIApp, Receive, Scope, Send

from .._errors import Forbidden, Unauthenticated
from ..application import Principal, require
from ._services import services_of

#: Routes Litestar adds itself (the OpenAPI document); they carry no data.
_PUBLIC_PREFIXES = ("/schema",)

log = structlog.get_logger("noetl.control_api.auth")


def action(*names: str) -> dict[str, Any]:
    """``opt`` of a route handler that needs one of ``names`` (actions of ``application._policy``)."""
    return {"action": names}


PUBLIC: dict[str, Any] = {"public": True}


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    return None


def auth_middleware(app: ASGIApp) -> ASGIApp:
    """Authenticate, check the route's action, then call the handler."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        handler = scope.get("route_handler")
        opt: dict[str, Any] = getattr(handler, "opt", None) or {}
        if opt.get("public") or scope.get("path", "").startswith(_PUBLIC_PREFIXES):
            await app(scope, receive, send)
            return
        services = services_of(scope["litestar_app"].state)
        credential = _bearer(scope)
        principal = await services.tokens.authenticate(credential) if credential else None
        if principal is None:
            raise Unauthenticated(
                "missing or invalid credential: send Authorization: Bearer <token>"
                if credential is None
                else "the bearer token is unknown, expired or revoked"
            )
        names = opt.get("action")
        if not names:
            log.error("route_refused", reason="the route names no action", path=scope.get("path"))
            raise Forbidden("this route names no action and is closed")
        if not any(services.policy.allows(principal, name) for name in names):
            require(services.policy, principal, names[0])
        scope["user"] = principal
        await app(scope, receive, send)

    return middleware


def principal_of(scope: Scope) -> Principal:
    """The principal the middleware authenticated for this request."""
    user = scope.get("user")
    assert isinstance(user, Principal), "route reached without authentication"
    return user
