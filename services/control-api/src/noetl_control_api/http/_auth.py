"""The guard of ``/api/internal/*``: a bearer token compared in constant time."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from .._errors import Forbidden, Unavailable


def internal_guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """Token unset on the server → 503; missing or wrong → 403."""
    expected: str | None = connection.app.state.settings.internal_api_token
    if not expected:
        raise Unavailable("the internal API is disabled: NOETL_INTERNAL_API_TOKEN is not set on the server")
    scheme, _, presented = connection.headers.get("authorization", "").partition(" ")
    ok = hmac.compare_digest(presented.strip().encode(), expected.encode())
    if scheme.lower() != "bearer" or not ok:
        raise Forbidden("missing or wrong internal API token")
