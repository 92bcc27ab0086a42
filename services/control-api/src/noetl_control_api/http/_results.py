"""The result store's routes (architecture.md §5.6): store a step's large result, resolve a reference."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ..application import Principal, ResultService
from ._auth import action


class ResultController(Controller):
    """``PUT /api/result/{execution_id}``, ``GET /api/result/resolve?key=``."""

    path = "/api/result"
    tags = ["results"]

    @put("/{execution_id:str}", status_code=201, opt=action("result.write"))
    async def store(
        self,
        execution_id: FromPath[str],
        request: Request[Any, Any, Any],
        results: NamedDependency[ResultService],
        principal: NamedDependency[Principal],
    ) -> dict[str, Any]:
        """Body: JSON, an Arrow IPC stream, or any bytes (``content-type`` says which)."""
        body = await request.body()
        return await results.put(execution_id, body, request.headers.get("content-type"), principal)

    @get("/resolve", opt=action("result.read"))
    async def resolve(
        self, key: FromQuery[str], results: NamedDependency[ResultService], format: FromQuery[str] = "json"
    ) -> Response[Any]:
        """``format=json`` (default): the value as JSON, Arrow decoded to rows; ``format=raw``: the stored bytes."""
        if format == "raw":
            found = await results.fetch(key)
            return Response(found.data, media_type=found.media_type)
        value = await results.resolve(key)
        if isinstance(value, bytes):
            return Response(value, media_type="application/octet-stream")
        return Response(msgspec.json.encode(value), media_type="application/json")
