"""Plug-in registry and object store routes (``/api/internal``, behind the bearer token)."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ..application import ObjectReply, PluginList, PluginService, PublishReply, decode_publish
from ._auth import action


def _etag_values(header: str | None) -> frozenset[str]:
    return frozenset(
        {item.strip().removeprefix("W/").strip('"') for item in (header or "").split(",") if item.strip()}
    )


class PluginController(Controller):
    """``/api/internal/plugins`` (WASM modules) and ``/api/internal/objects`` (plug-in outputs)."""

    path = "/api/internal"
    tags = ["internal", "plugins"]

    @get("/plugins", opt=action("plugin.read"))
    async def list_plugins(
        self, plugins: NamedDependency[PluginService], path: FromQuery[str | None] = None
    ) -> PluginList:
        """Every published version (of ``path`` when given), without bytes."""
        return await plugins.list_all(path)

    @post("/plugins/{path:path}", status_code=201, opt=action("plugin.publish"))
    async def publish(
        self,
        path: FromPath[str],
        request: Request,
        plugins: NamedDependency[PluginService],
        version: FromQuery[int | None] = None,
    ) -> Response[PublishReply]:
        """Body: the module bytes, or JSON ``{module_base64, version?}``; ``?version=`` wins."""
        data, body_version, media_type = decode_publish(
            await request.body(), request.headers.get("content-type")
        )
        reply = await plugins.publish(
            path.lstrip("/"), data, version if version is not None else body_version, media_type
        )
        return Response(reply, status_code=201 if reply.changed else 200)

    @get("/plugins/{path:path}", media_type="application/wasm", opt=action("plugin.read"))
    async def fetch(
        self,
        path: FromPath[str],
        request: Request,
        plugins: NamedDependency[PluginService],
        version: FromQuery[int | None] = None,
    ) -> Response[bytes]:
        """The module (latest or ``?version=``); ``If-None-Match: <digest>`` answers 304 when current."""
        known = _etag_values(request.headers.get("if-none-match"))
        row, modified = await plugins.get(path.lstrip("/"), version, known)
        headers = {
            "etag": f'"{row.digest}"',
            "x-plugin-version": str(row.version),
            "cache-control": "no-cache",
        }
        if not modified or row.data is None:
            return Response(b"", status_code=304, headers=headers)
        return Response(row.data, media_type=row.media_type, headers=headers)

    @put("/objects/{key:path}", status_code=200, opt=action("object.write"))
    async def put_object(
        self, key: FromPath[str], request: Request, plugins: NamedDependency[PluginService]
    ) -> Response[ObjectReply]:
        """Create (201) or replace (200) an object; the body is stored as sent."""
        reply = await plugins.put_object(
            key.lstrip("/"), await request.body(), request.headers.get("content-type")
        )
        return Response(reply, status_code=201 if reply.created else 200)

    @get("/objects/{key:path}", media_type="application/octet-stream", opt=action("object.read"))
    async def get_object(
        self, key: FromPath[str], plugins: NamedDependency[PluginService]
    ) -> Response[bytes]:
        media_type, digest, data = await plugins.get_object(key.lstrip("/"))
        return Response(data, media_type=media_type, headers={"etag": f'"{digest}"'})
