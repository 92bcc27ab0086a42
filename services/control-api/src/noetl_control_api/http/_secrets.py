"""Credentials and keychain routes, and the worker's internal resolve routes."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from ..application import (
    CredentialIn,
    CredentialList,
    CredentialService,
    CredentialView,
    KeychainIn,
    KeychainList,
    KeychainService,
    KeychainTokenIn,
    KeychainView,
    Principal,
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
        self,
        credentials: NamedDependency[CredentialService],
        type: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
    ) -> CredentialList:
        """Names, types and descriptions; never data. ``q``: a part of the name or description."""
        return await credentials.list_all(type, q)

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

    @post("/keychain/token", status_code=200, opt=action("secret.resolve"))
    async def store_keychain_token(
        self,
        data: JSONBody[KeychainTokenIn],
        keychain: NamedDependency[KeychainService],
        principal: NamedDependency[Principal],
    ) -> dict[str, Any]:
        """``{name, value, event_id, worker_id}``: the token an ``oauth2`` entry of the playbook's
        ``keychain:`` block answered, kept sealed with the execution → ``{name, expires_at}``."""
        return await keychain.store_token(data, principal)
