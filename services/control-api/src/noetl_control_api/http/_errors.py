"""One exception handler family: every failure leaves as ``noetl_common.ErrorBody``."""

from __future__ import annotations

import math
from typing import Any

import psycopg
import psycopg_pool
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from noetl_common import ErrorBody, scrub, scrub_text

from .._errors import DomainError

log = structlog.get_logger(__name__)

_CODES = {
    400: "validation_error",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "unavailable",
}


def error_response(
    status_code: int,
    code: str,
    detail: str,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[ErrorBody]:
    """An ErrorBody response; detail and extra are scrubbed since they may echo input."""
    body = ErrorBody(
        status_code=status_code, error=code, detail=scrub_text(detail)[:2000], extra=scrub(extra)
    )
    return Response(body, status_code=status_code, media_type=MediaType.JSON, headers=headers)


def on_domain_error(_request: Request[Any, Any, Any], exc: DomainError) -> Response[ErrorBody]:
    headers = None
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if exc.status_code == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="noetl"'}
    return error_response(exc.status_code, exc.code, exc.detail, exc.extra, headers)


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """Litestar's own errors: body validation, unknown routes, oversize bodies, ..."""
    status = exc.status_code
    if status >= 500:
        return on_unexpected(request, exc)
    extra: dict[str, Any] | None = None
    if isinstance(exc.extra, list) and exc.extra:
        extra = {"errors": exc.extra}
    elif isinstance(exc.extra, dict) and exc.extra:
        extra = exc.extra
    return error_response(
        status, _CODES.get(status, "bad_request"), exc.detail or "bad request", extra, exc.headers
    )


def on_data_error(_request: Request[Any, Any, Any], exc: psycopg.DataError) -> Response[ErrorBody]:
    # values Postgres cannot store (NUL characters, out-of-range numbers) come from the client
    return error_response(400, "validation_error", f"a value cannot be stored: {exc}".splitlines()[0])


def on_recursion(_request: Request[Any, Any, Any], _exc: RecursionError) -> Response[ErrorBody]:
    # msgspec and YAML give up on pathologically nested input with RecursionError
    return error_response(400, "validation_error", "the body is nested too deeply")


def on_unavailable(_request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.warning("database_unavailable", error=str(exc))
    return error_response(
        503, "unavailable", "the database is unavailable; retry later", headers={"Retry-After": "1"}
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("request_failed", path=request.url.path, method=request.method)
    return error_response(500, "internal_error", "internal error; see the server log")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: on_domain_error,
    HTTPException: on_http_exception,
    psycopg.DataError: on_data_error,
    RecursionError: on_recursion,
    psycopg.OperationalError: on_unavailable,
    psycopg_pool.PoolTimeout: on_unavailable,
    Exception: on_unexpected,
}
