"""Connection pool and JSON adaptation shared by every store module."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Json, set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

_encoder = msgspec.json.Encoder()


def _dumps(value: Any) -> str:
    # psycopg's default json.dumps is several times slower than msgspec on the hot paths
    return _encoder.encode(value).decode()


def _as_is(raw: Any) -> Any:
    """A ``dumps`` for JSON text already encoded: it is written as it is."""
    return raw


def json_param(value: Any) -> Json:
    """A ``json`` parameter: JSON text already encoded (bytes) as it is, anything else encoded."""
    return Json(value, dumps=_as_is) if isinstance(value, bytes) else Json(value)


async def _configure(conn: AsyncConnection[Any]) -> None:
    set_json_dumps(_dumps, conn)
    set_json_loads(msgspec.json.decode, conn)


def configure_json(conn: AsyncConnection[Any]) -> None:
    """Use msgspec for jsonb on a connection opened outside the pool."""
    set_json_dumps(_dumps, conn)
    set_json_loads(msgspec.json.decode, conn)


def create_pool(database_url: str, size: int) -> AsyncConnectionPool:
    """An unopened pool; the app opens it in its lifespan."""
    return AsyncConnectionPool(
        database_url,
        min_size=min(2, size),
        max_size=size,
        open=False,
        configure=_configure,
        kwargs={"autocommit": False},
        name="noetl-control-api",
    )
