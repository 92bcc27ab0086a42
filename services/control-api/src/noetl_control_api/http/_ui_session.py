"""The run inspector's browser session: the API token in an HttpOnly, SameSite=Strict cookie,
and a double-submit CSRF token (docs/decisions.md, docs/security.md §2)."""

from __future__ import annotations

import hmac
import secrets

from litestar.datastructures import Cookie
from litestar.types import Scope

SESSION_COOKIE = "noetl_session"
CSRF_COOKIE = "noetl_csrf"
CSRF_HEADER = "X-NoETL-CSRF"
LOGIN_PATH = "/ui/login"
#: a browser session lasts at most this long (the token itself may expire sooner)
SESSION_SECONDS = 8 * 3600
#: longest cookie value read (an API token is 49 characters, a JWT a few kilobytes)
_MAX_COOKIE_CHARS = 8192


def cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies (first of each name), bounded in size."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key != b"cookie" or len(value) > 4 * _MAX_COOKIE_CHARS:
            continue
        for part in value.decode("latin-1").split(";"):
            name, sep, raw = part.strip().partition("=")
            if sep and name not in found and len(raw) <= _MAX_COOKIE_CHARS:
                found[name] = raw.strip().strip('"')
    return found


def session_token(scope: Scope) -> str | None:
    return cookies(scope).get(SESSION_COOKIE) or None


def csrf_matches(scope: Scope) -> bool:
    """Whether the CSRF header equals the CSRF cookie (both present)."""
    cookie = cookies(scope).get(CSRF_COOKIE, "")
    header = ""
    for key, value in scope.get("headers", ()):
        if key == CSRF_HEADER.lower().encode():
            header = value.decode("latin-1")
            break
    return bool(cookie) and hmac.compare_digest(cookie.encode(), header.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def _secure(scope: Scope) -> bool:
    return scope.get("scheme") == "https"


def session_cookies(scope: Scope, token: str, csrf: str) -> list[Cookie]:
    """Set on sign-in: the token (HttpOnly) and the CSRF value the page's script echoes."""
    return [
        Cookie(key=SESSION_COOKIE, value=token, path="/", httponly=True, samesite="strict",
               secure=_secure(scope), max_age=SESSION_SECONDS),
        csrf_cookie(scope, csrf),
    ]


def csrf_cookie(scope: Scope, csrf: str) -> Cookie:
    return Cookie(key=CSRF_COOKIE, value=csrf, path="/", httponly=False, samesite="strict",
                  secure=_secure(scope), max_age=SESSION_SECONDS)


def cleared_cookies() -> list[Cookie]:
    return [
        Cookie(key=SESSION_COOKIE, value="", path="/", httponly=True, samesite="strict", max_age=0),
        Cookie(key=CSRF_COOKIE, value="", path="/", samesite="strict", max_age=0),
    ]
