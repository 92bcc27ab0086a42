"""``{{ keychain.<name>.<field> }}`` in a task's config: the names it reads and their values.

Before a task's config is rendered, the worker looks for ``keychain.<name>`` (or
``keychain['<name>']``) in its templates and resolves those names once per command through
the control-api, for the command whose lease it holds. A name the playbook's root
``keychain:`` block declares as ``oauth2`` may come back as a token request instead of a
value: the worker sends it here, behind its egress policy (the same check as the http tool,
no redirects, :data:`TOKEN_TIMEOUT_SECONDS`, at most :data:`TOKEN_MAX_BYTES` of reply), and
brings the token back to the control-api, which keeps it sealed with the execution until
shortly before it expires. Every value and every secret sent is remembered by the command's
runtime, so it is redacted from every event the worker sends.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from noetl_common.templating import has_template

from .._runtime import CredentialError, ToolRuntime
from ._http import send_checked

#: ``keychain.name`` or ``keychain['name']`` inside a template.
_REFERENCE = re.compile(
    r"\bkeychain(?:\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)|\s*\[\s*['\"]([A-Za-z0-9_-]{1,100})['\"]\s*\])"
)
#: Names one task may read; far above real use.
MAX_NAMES = 100
#: Bounds of one token request.
TOKEN_TIMEOUT_SECONDS = 10.0
TOKEN_MAX_BYTES = 64 * 1024


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def keychain_names(config: Any) -> list[str]:
    """The keychain names the templates of ``config`` read, in order of first use."""
    names: dict[str, None] = {}
    for text in _strings(config):
        if "keychain" not in text or not has_template(text):
            continue
        for match in _REFERENCE.finditer(text):
            names[match.group(1) or match.group(2)] = None
    if len(names) > MAX_NAMES:
        raise CredentialError(f"a task reads {len(names)} keychain entries, more than {MAX_NAMES}")
    return list(names)


async def keychain_values(rt: ToolRuntime, names: list[str]) -> dict[str, Any]:
    """``{name: value}`` for ``names``, resolved once per command (oauth2 tokens fetched here)."""
    wanted = [n for n in names if n not in rt.keychain_values]
    if wanted:
        if rt.api is None:
            raise CredentialError("keychain: this worker has no control-api to resolve entries")
        try:
            reply = await rt.api.keychain_entries(
                wanted, rt.execution_id, event_id=rt.event_id, worker_id=rt.worker_id
            )
        except Exception as exc:
            raise CredentialError(
                f"keychain entr(ies) {', '.join(wanted)} cannot be resolved: {exc}"
            ) from None
        # entries whose sensitive fields only are secrets, and the other fields that are
        sensitive: dict[str, list[str]] = dict(reply.get("sensitive_only") or {})
        found = dict(reply.get("values") or {})
        for name, request in dict(reply.get("fetch") or {}).items():
            found[name] = await _fetch_token(rt, name, request)
            sensitive.setdefault(name, [str(request.get("token_field") or "access_token")])
        for name, value in found.items():
            if name not in sensitive:
                rt.remember(value)
                continue
            rt.remember(value, sensitive_only=True)
            if isinstance(value, Mapping):
                rt.remember([value.get(f) for f in sensitive[name] if isinstance(value.get(f), str)])
        rt.keychain_values.update(found)
    missing = [n for n in names if n not in rt.keychain_values]
    if missing:
        raise CredentialError(f"keychain entr(ies) not found: {', '.join(missing)}")
    return {n: rt.keychain_values[n] for n in names}


async def _fetch_token(rt: ToolRuntime, name: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """Send an oauth2 entry's token request and keep the token with the execution."""
    headers = {str(k): str(v) for k, v in dict(request.get("headers") or {}).items()}
    form = {str(k): str(v) for k, v in dict(request.get("form") or {}).items()}
    # the client secret must not come back in clear, whatever the token URL echoes
    rt.remember(form, sensitive_only=True)
    rt.remember(headers, sensitive_only=True)
    method = str(request.get("method") or "POST").upper()
    url = httpx.URL(str(request.get("endpoint") or ""))
    body: dict[str, Any] = {"data": form}
    if method == "GET":
        url, body = url.copy_merge_params(form), {}
    headers.setdefault("accept", "application/json")
    verify = httpx.create_ssl_context(trust_env=True)
    try:
        async with httpx.AsyncClient(timeout=TOKEN_TIMEOUT_SECONDS, verify=verify, trust_env=False) as client:
            response = await send_checked(client, rt, method, url, headers, body)
            try:
                content = await _bounded(response, name)
            finally:
                await response.aclose()
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise CredentialError(f"keychain.{name}: token request to {url.host!r} failed: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise CredentialError(f"keychain.{name}: token URL {url.host!r} answered HTTP {response.status_code}")
    token_field = str(request.get("token_field") or "access_token")
    token = _token_reply(name, content, token_field)
    rt.remember(token, sensitive_only=True)
    rt.remember(token[token_field])
    assert rt.api is not None
    try:
        await rt.api.store_keychain_token(name, token, event_id=rt.event_id, worker_id=rt.worker_id)
    except Exception as exc:
        raise CredentialError(f"keychain.{name}: the control-api did not keep the token: {exc}") from None
    return token


async def _bounded(response: httpx.Response, name: str) -> bytes:
    size, chunks = 0, []
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > TOKEN_MAX_BYTES:
            raise ValueError(f"token reply over {TOKEN_MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _token_reply(name: str, content: bytes, token_field: str) -> dict[str, Any]:
    """The token reply as a mapping holding ``token_field`` (upstream also takes it under ``data``)."""
    try:
        reply = json.loads(content)
    except ValueError:
        raise CredentialError(f"keychain.{name}: the token URL did not answer JSON") from None
    if isinstance(reply, dict) and token_field not in reply and isinstance(reply.get("data"), dict):
        reply = reply["data"]
    if not isinstance(reply, dict) or not isinstance(reply.get(token_field), str) or not reply[token_field]:
        raise CredentialError(f"keychain.{name}: the token reply has no {token_field!r} string")
    return reply
