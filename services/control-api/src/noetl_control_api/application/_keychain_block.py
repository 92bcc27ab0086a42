"""A playbook's root ``keychain:`` block, resolved for one execution.

An entry's value is kept as a keychain row of the execution (``scope_id`` = its id), sealed
like every stored secret, so retention purges it with the execution. ``static``, ``bearer``
and ``credential`` entries are built here, on first use. An ``oauth2`` entry is fetched by
the worker, never by the control-api: the token URL is the playbook's to choose, and the
worker's egress policy is what keeps such a request off the metadata service and the
cluster. The control-api hands the worker the token request (with the credential's client
secret, for the command whose lease it holds only) and stores the token the worker brings
back, until shortly before it expires (:data:`RENEW_BEFORE_SECONDS`); the next resolve after
that asks for a new one.
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import msgspec
from noetl_common.templating import DEFAULT_LIMITS, TemplateError, TemplateLimits, render

from .. import store
from .._errors import Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from ..dsl import KeychainEntry, Playbook
from ..store import ExecutionRow
from ._playbooks import PlaybookCache
from ._secrets import MAX_DATA_BYTES, SecretBox, path_allowed

#: A stored token this close to its expiry is renewed instead of used.
RENEW_BEFORE_SECONDS = 60.0
#: Lifetime of a token whose reply names none (``expires_in``), as upstream assumes.
DEFAULT_TOKEN_SECONDS = 3600.0
MAX_TOKEN_SECONDS = 10 * 365 * 86400.0


class KeychainTokenIn(msgspec.Struct, kw_only=True):
    """``POST /api/internal/keychain/token`` body: the reply of an oauth2 entry's token URL,
    brought back by the worker that fetched it, for the command whose lease it holds."""

    name: str
    value: dict[str, Any]
    event_id: int | str | None = None
    worker_id: str | None = None


@dataclass
class BlockValues:
    """Resolved entries (``values``), token requests for the worker to send (``fetch``), and
    the entries whose sensitive fields only are secrets, with the other fields that are
    (``sensitive_only``: an oauth2 entry's ``token_field``)."""

    values: dict[str, Any] = field(default_factory=dict)
    fetch: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitive_only: dict[str, list[str]] = field(default_factory=dict)


def _workload(execution: ExecutionRow) -> dict[str, Any]:
    state = execution.state
    found = state.get("workload") if isinstance(state, Mapping) else getattr(state, "workload", None)
    return dict(found) if isinstance(found, Mapping) else {}


class PlaybookKeychain:
    """Builds, stores and reads the entries of an execution's root ``keychain:`` block."""

    def __init__(self, box: SecretBox, playbooks: PlaybookCache, limits: TemplateLimits = DEFAULT_LIMITS) -> None:
        self._box = box
        self._playbooks = playbooks
        self._limits = limits

    async def playbook(self, conn: Any, execution: ExecutionRow) -> Playbook:
        """The parsed playbook the execution runs."""
        found = self._playbooks.cached(execution.path, execution.version)
        if found is None:
            entry = await store.catalog.get(conn, execution.path, execution.version)
            assert entry is not None  # the foreign key guarantees it
            found = self._playbooks.get(entry.path, entry.version, entry.content)
        return found

    async def resolve(self, conn: Any, execution: ExecutionRow, entries: list[KeychainEntry]) -> BlockValues:
        """Values of ``entries`` for the execution: stored ones while fresh, the others built
        and stored now (``oauth2``: a request for the worker to send)."""
        out = BlockValues()
        scope = execution.execution_id
        renew_at = datetime.now(UTC) + timedelta(seconds=RENEW_BEFORE_SECONDS)
        async with conn.transaction():
            for entry in entries:
                if entry.kind != "static":
                    out.sensitive_only[entry.name] = [entry.token_field] if entry.kind == "oauth2" else []
                row = await store.secrets.get_keychain(conn, scope, entry.name)
                if row is not None and (row.expires_at is None or row.expires_at > renew_at):
                    out.values[entry.name] = self._box.open(row.value_enc)
                    continue
                context = self._context(execution)
                if entry.kind == "oauth2":
                    out.fetch[entry.name] = await self._token_request(conn, execution, entry, context)
                    continue
                value = await self._build(conn, execution, entry, context)
                expires = None
                if entry.ttl_seconds is not None:
                    expires = datetime.now(UTC) + timedelta(seconds=entry.ttl_seconds)
                await self._put(conn, scope, entry, value, expires)
                out.values[entry.name] = value
        return out

    async def store_token(self, conn: Any, execution: ExecutionRow, body: KeychainTokenIn) -> dict[str, Any]:
        """Keep the token an ``oauth2`` entry's URL answered until shortly before it expires."""
        entry = (await self.playbook(conn, execution)).keychain_entry(body.name)
        if entry is None or entry.kind != "oauth2":
            raise Forbidden(f"the playbook of execution {execution.execution_id} declares no oauth2 keychain entry {body.name[:100]!r}")
        if len(msgspec.json.encode(body.value)) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"value must be at most {MAX_DATA_BYTES} bytes of JSON", {"field": "value"})
        token = body.value.get(entry.token_field)
        if not isinstance(token, str) or not token:
            raise ValidationFailed(f"the token reply has no {entry.token_field!r} string")
        lifetime = _lifetime(body.value.get("expires_in"))
        if entry.ttl_seconds is not None:
            lifetime = min(lifetime, entry.ttl_seconds)
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        async with conn.transaction():
            await self._put(conn, execution.execution_id, entry, body.value, expires)
        return {"name": entry.name, "expires_at": expires.isoformat().replace("+00:00", "Z")}

    async def _put(self, conn: Any, scope: int, entry: KeychainEntry, value: Any, expires: datetime | None) -> None:
        if len(msgspec.json.encode(value)) > MAX_DATA_BYTES:
            raise PayloadTooLarge(f"keychain entry {entry.name!r} is over {MAX_DATA_BYTES} bytes of JSON")
        description = entry.description or f"{entry.kind} entry of the playbook's keychain block"
        await store.secrets.upsert_keychain(conn, scope, entry.name, description, self._box.seal(value), expires, None)

    def _context(self, execution: ExecutionRow) -> dict[str, Any]:
        workload = _workload(execution)
        return {**workload, "workload": workload, "execution_id": str(execution.execution_id)}

    def _render(self, entry: KeychainEntry, value: Any, context: Mapping[str, Any], where: str) -> Any:
        try:
            return render(value, context, self._limits)
        except TemplateError as exc:
            raise ValidationFailed(f"keychain.{entry.name}.{where}: {exc.message}") from None

    async def _credential(self, conn: Any, execution: ExecutionRow, entry: KeychainEntry) -> dict[str, Any]:
        name = str(entry.credential)
        rows = await store.secrets.get_credentials(conn, [name])
        if not rows:
            raise NotFound(f"keychain.{entry.name}: unknown credential {name!r}", {"missing": [name]})
        if not path_allowed(execution.path, rows[0].allowed_paths):
            raise Forbidden(
                f"keychain.{entry.name}: credential {name!r} may not be used by playbook {execution.path!r}"
                " (see the credential's allowed_paths)",
                {"refused": [name], "path": execution.path},
            )
        data = self._box.open(rows[0].data_enc)
        return dict(data) if isinstance(data, Mapping) else {}

    async def _build(self, conn: Any, execution: ExecutionRow, entry: KeychainEntry, context: Mapping[str, Any]) -> Any:
        if entry.kind == "static":
            return self._render(entry, entry.map, context, "map")
        if entry.kind == "bearer":
            return {"access_token": str(self._render(entry, entry.token, context, "token")), "token_type": "Bearer"}
        return await self._credential(conn, execution, entry)

    async def _token_request(
        self, conn: Any, execution: ExecutionRow, entry: KeychainEntry, context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What the worker sends: ``{endpoint, method, headers, form, token_field}``."""
        client = await self._credential(conn, execution, entry) if entry.credential else {}
        bound = client.get("token_url") or client.get("endpoint")
        endpoint = self._render(entry, entry.endpoint, context, "endpoint") if entry.endpoint else bound
        if not isinstance(endpoint, str) or not endpoint:
            raise ValidationFailed(f"keychain.{entry.name}: no token URL (endpoint, or the credential's token_url)")
        _check_endpoint(entry, endpoint, bound, client.get("allowed_hosts"))
        headers = {str(k): str(v) for k, v in self._render(entry, entry.headers, context, "headers").items()}
        form: dict[str, Any] = {}
        if entry.credential:
            form["grant_type"] = "client_credentials"
            for key in ("scope", "audience"):
                if client.get(key) is not None:
                    form[key] = client[key]
            client_id, secret = client.get("client_id"), client.get("client_secret")
            if not isinstance(client_id, str) or not isinstance(secret, str):
                raise ValidationFailed(
                    f"keychain.{entry.name}: credential {entry.credential!r} needs client_id and client_secret strings"
                )
            if entry.client_auth == "basic":
                raw = f"{client_id}:{secret}".encode()
                headers["authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
            else:
                form.update({"client_id": client_id, "client_secret": secret})
        form.update({str(k): v for k, v in self._render(entry, entry.data, context, "data").items()})
        return {
            "endpoint": endpoint,
            "method": entry.method,
            "headers": headers,
            "form": {k: "" if v is None else str(v) for k, v in form.items()},
            "token_field": entry.token_field,
        }


def _check_endpoint(entry: KeychainEntry, endpoint: str, bound: Any, allowed_hosts: Any) -> None:
    """A playbook cannot send a credential's client secret elsewhere than its operator said."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(f"keychain.{entry.name}: endpoint {endpoint[:200]!r} is not an http(s) URL")
    if isinstance(bound, str) and bound and endpoint != bound:
        raise Forbidden(
            f"keychain.{entry.name}: credential {entry.credential!r} is bound to its own token_url;"
            " the entry's endpoint may not differ from it"
        )
    if isinstance(allowed_hosts, list) and allowed_hosts:
        host = parts.hostname.lower()
        if not any(isinstance(p, str) and fnmatch.fnmatchcase(host, p.lower()) for p in allowed_hosts):
            raise Forbidden(
                f"keychain.{entry.name}: credential {entry.credential!r} may not be sent to {host!r}"
                " (outside its allowed_hosts)"
            )


def _lifetime(raw: Any) -> float:
    """Seconds a token lives: its ``expires_in`` when that is a sane number, else the default."""
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return DEFAULT_TOKEN_SECONDS
    if not 0 < seconds <= MAX_TOKEN_SECONDS:
        return DEFAULT_TOKEN_SECONDS
    return seconds
