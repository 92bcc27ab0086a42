"""Authentication and the route-level policy check, as one ASGI middleware.

Every route handler names its action in ``opt={"action": ...}`` (see :func:`action`), or is
public (``opt={"public": True}``: liveness, readiness, metrics). The middleware resolves the
bearer credential to a :class:`Principal` (401 when there is none or it is unknown), asks
the policy decision point whether that principal may take the route's action (403 when
not), and leaves the principal in ``scope["user"]`` for the handler. A handler that names
no action is refused: a new route cannot be open by mistake.

The run inspector (``/ui``) signs a browser in with the session cookie ``_ui_session`` sets
(the API token, HttpOnly, SameSite=Strict); a request without ``Authorization`` may carry that
cookie instead. A state-changing request (any method but GET/HEAD/OPTIONS) authenticated by
the cookie must also send the ``X-NoETL-CSRF`` header equal to the ``noetl_csrf`` cookie
(double submit), else 403: a page of another origin can neither read that cookie nor set the
header. A ``/ui`` page (``opt["ui"]``) answers a missing credential with a redirect to the
login page instead of 401.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from .._errors import Forbidden, Unauthenticated
from ..application import Principal, require
from ._services import services_of
from ._ui_session import CSRF_HEADER, LOGIN_PATH, csrf_matches, session_token

#: methods that change nothing; any other needs the CSRF header when the cookie authenticates
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

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


def _has_authorization(scope: Scope) -> bool:
    return any(key == b"authorization" for key, _ in scope.get("headers", ()))


async def _redirect(send: Send, location: str) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 303,
        "headers": [(b"location", location.encode()), (b"content-length", b"0"), (b"cache-control", b"no-store")],
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": b"", "more_body": False}
    await send(body)


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
        from_cookie = credential is None and not _has_authorization(scope)
        if from_cookie:
            credential = session_token(scope)
        principal = await services.tokens.authenticate(credential) if credential else None
        if principal is None and opt.get("ui"):
            await _redirect(send, LOGIN_PATH)
            return
        if principal is None:
            raise Unauthenticated(
                "missing or invalid credential: send Authorization: Bearer <token>"
                if credential is None
                else "the bearer token is unknown, expired or revoked"
            )
        if from_cookie and scope.get("method", "GET") not in _SAFE_METHODS and not csrf_matches(scope):
            raise Forbidden(f"a request signed in by the session cookie must send {CSRF_HEADER} (docs/security.md)")
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
