"""Credentials, keychain and result-store routes; the internal resolve routes are guarded."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from ..application import CredentialService, KeychainService, Principal, ResultService
from ..application._secrets import (
    CredentialIn,
    CredentialList,
    CredentialView,
    KeychainIn,
    KeychainList,
    KeychainView,
    ResolveRequest,
)
from ._auth import action


class CredentialController(Controller):
    """``/api/credentials``: data is write-only; replies show its keys with values redacted."""

    path = "/api/credentials"
    tags = ["credentials"]

    @post("/", status_code=201, opt=action("credential.write"))
    async def create(
        self, data: JSONBody[CredentialIn], credentials: NamedDependency[CredentialService]
    ) -> Response[CredentialView]:
        """Create (201) or replace (200) a credential ``{name, credential_type, data, description?}``."""
        view, created = await credentials.put(data)
        return Response(view, status_code=201 if created else 200)

    @get("/", opt=action("credential.read"))
    async def list_all(
        self, credentials: NamedDependency[CredentialService], type: FromQuery[str | None] = None
    ) -> CredentialList:
        """Names, types and descriptions; never data."""
        return await credentials.list_all(type)

    @get("/{name:str}", opt=action("credential.read"))
    async def get_one(
        self, name: FromPath[str], credentials: NamedDependency[CredentialService]
    ) -> CredentialView:
        return await credentials.get(name)

    @delete("/{name:str}", status_code=204, opt=action("credential.write"))
    async def remove(self, name: FromPath[str], credentials: NamedDependency[CredentialService]) -> None:
        await credentials.delete(name)


class KeychainController(Controller):
    """``/api/keychain``: global entries, or per execution with ``execution_id``."""

    path = "/api/keychain"
    tags = ["keychain"]

    @post("/", status_code=201, opt=action("keychain.write"))
    async def create(
        self, data: JSONBody[KeychainIn], keychain: NamedDependency[KeychainService]
    ) -> Response[KeychainView]:
        view, created = await keychain.put(data)
        return Response(view, status_code=201 if created else 200)

    @get("/", opt=action("keychain.read"))
    async def list_all(
        self, keychain: NamedDependency[KeychainService], execution_id: FromQuery[str | None] = None
    ) -> KeychainList:
        return await keychain.list_all(execution_id)

    @get("/{name:str}", opt=action("keychain.read"))
    async def get_one(
        self,
        name: FromPath[str],
        keychain: NamedDependency[KeychainService],
        execution_id: FromQuery[str | None] = None,
    ) -> KeychainView:
        return await keychain.get(name, execution_id)

    @delete("/{name:str}", status_code=204, opt=action("keychain.write"))
    async def remove(
        self,
        name: FromPath[str],
        keychain: NamedDependency[KeychainService],
        execution_id: FromQuery[str | None] = None,
    ) -> None:
        await keychain.delete(name, execution_id)


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


class InternalSecretsController(Controller):
    """The worker's resolve calls: clear values, for the command whose lease it holds."""

    path = "/api/internal"
    tags = ["internal"]

    @post("/credentials/resolve", status_code=200, opt=action("secret.resolve"))
    async def resolve_credentials(
        self,
        data: JSONBody[ResolveRequest],
        credentials: NamedDependency[CredentialService],
        principal: NamedDependency[Principal],
    ) -> dict[str, Any]:
        """``{names, event_id, worker_id}`` → ``{credentials: {name: {name, credential_type, data}}}`` in clear."""
        return await credentials.resolve(data, principal)

    @post("/keychain/resolve", status_code=200, opt=action("secret.resolve"))
    async def resolve_keychain(
        self,
        data: JSONBody[ResolveRequest],
        keychain: NamedDependency[KeychainService],
        principal: NamedDependency[Principal],
    ) -> dict[str, Any]:
        """``{names, event_id, worker_id}`` → ``{values: {name: value}}`` in clear."""
        return await keychain.resolve(data, principal)
