"""The ``http`` tool (httpx, async), behind the worker's egress policy.

Config: ``method`` (GET), ``url``, ``headers``, ``params``, one of ``json`` / ``body`` /
``data`` (a mapping or list body is sent as JSON unless ``data`` is used, which is
form-encoded for a mapping), ``timeout`` seconds (30), ``follow_redirects`` (true),
``verify`` (true), ``auth: <credential>``. Result ``{status_code, headers, body}`` with a
JSON body decoded (else text). A non-2xx status is an error outcome whose result is
still the response, so rules can read ``outcome.http.status`` and retry. A ``retry`` list
with a pagination policy (``next_call`` / ``collect``) fetches page after page in the one
task (``_http_pages``).

Credentials for ``auth:``: type ``bearer`` / ``token`` (``token``), ``basic``
(``username``, ``password``), ``header`` / ``api_key`` (``header`` or ``name``, and
``value``); any other type contributes its ``headers`` mapping when it has one. A
credential whose data has ``allowed_hosts`` (host names or ``*.example.com`` patterns)
or ``base_url`` is sent only to URLs that match them.

Every hop — the first request and each redirect, followed here rather than by httpx, at
most :data:`MAX_REDIRECTS` — resolves its host, checks every address against the
worker's :class:`~noetl_system_worker._egress.EgressPolicy`, and connects to a checked
address while keeping the ``Host`` header and TLS (SNI, certificate check) on the name.
A redirect to another origin drops ``Authorization``, ``Cookie``, the credential's
headers and any header carrying a secret resolved for the command. Proxy settings of the
environment (``HTTP_PROXY`` ...) are ignored: a proxy would connect on the tool's behalf,
past the check.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx

from .._egress import host_matches, parse_hosts, resolve
from .._runtime import CredentialError, ToolRuntime, auth_name, runtime
from ._base import ToolError
from ._http_pages import paginate, pagination_policy

DEFAULT_TIMEOUT = 30.0
#: Response bodies larger than this are refused (a worker must not hold unbounded bodies).
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Redirects followed for one task before it fails.
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Headers that carry credentials whoever set them; never sent on to another origin.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


class HttpStatusError(ToolError):
    """The server answered with a non-2xx status; ``result`` is the response."""


def _auth_headers(credential: Mapping[str, Any]) -> dict[str, str]:
    kind = str(credential.get("credential_type") or "").lower()
    data = credential.get("data") or {}
    if kind in ("bearer", "token", "oauth2") and data.get("token"):
        return {"authorization": f"Bearer {data['token']}"}
    if kind == "basic" and "username" in data:
        raw = f"{data['username']}:{data.get('password', '')}".encode()
        return {"authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    if kind in ("header", "api_key", "apikey") and data.get("value") is not None:
        name = data.get("header") or data.get("name") or "x-api-key"
        return {str(name): str(data["value"])}
    headers = data.get("headers")
    if isinstance(headers, Mapping):
        return {str(k): str(v) for k, v in headers.items()}
    raise CredentialError(
        f"credential {credential.get('name')!r} of type {kind!r} gives no HTTP authentication"
        " (use bearer, basic, header or a data.headers mapping)"
    )


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _credential_scope(credential: Mapping[str, Any]) -> tuple[tuple[str, ...], httpx.URL | None]:
    """The ``allowed_hosts`` patterns and ``base_url`` a credential's data restricts it to."""
    data = credential.get("data") or {}
    hosts = data.get("allowed_hosts")
    if isinstance(hosts, str):
        patterns = parse_hosts(hosts)
    elif isinstance(hosts, list | tuple):
        patterns = tuple(str(h).strip().lower() for h in hosts if str(h).strip())
    elif hosts is None:
        patterns = ()
    else:
        raise CredentialError(
            f"credential {credential.get('name')!r}: allowed_hosts must be a list of host names"
        )
    base = data.get("base_url")
    return patterns, httpx.URL(str(base)) if base else None


def _in_scope(url: httpx.URL, scope: tuple[tuple[str, ...], httpx.URL | None]) -> bool:
    patterns, base = scope
    if patterns and not host_matches(url.host, patterns):
        return False
    if base is not None:
        if _origin(url) != _origin(base):
            return False
        prefix = base.path.rstrip("/")
        if prefix and url.path != prefix and not url.path.startswith(prefix + "/"):
            return False
    return True


def _body(config: Mapping[str, Any]) -> dict[str, Any]:
    if config.get("json") is not None:
        return {"json": config["json"]}
    if config.get("data") is not None:
        data = config["data"]
        return {"data": data} if isinstance(data, Mapping) else {"content": str(data).encode()}
    if config.get("body") is not None:
        body = config["body"]
        return {"json": body} if isinstance(body, Mapping | list) else {"content": str(body).encode()}
    return {}


def _decode(response: httpx.Response, content: bytes) -> Any:
    """JSON bodies decoded, anything else as text (None when empty)."""
    if not content:
        return None
    text = content.decode(response.encoding or "utf-8", "replace")
    if "json" in response.headers.get("content-type", "").lower():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


async def send_checked(
    client: httpx.AsyncClient,
    rt: ToolRuntime,
    method: str,
    url: httpx.URL,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
) -> httpx.Response:
    """One hop: resolve, check every address, then connect to a checked address (streamed)."""
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"http tool: {str(url)!r} is not an http(s) URL")
    try:
        async with asyncio.timeout(client.timeout.connect):  # a stuck resolver is a slow connect
            addresses = await resolve(url.host, _origin(url)[2])
    except ConnectionError as exc:
        # the error type rules already know for a name that does not resolve
        raise httpx.ConnectError(str(exc)) from None
    rt.egress.check(url.host, addresses)
    merged = httpx.Headers(client.headers)
    merged.update(headers)
    merged["Host"] = url.netloc.decode("ascii")
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    failure: httpx.ConnectError | None = None
    for address in addresses:
        pinned = url.copy_with(host=str(address))
        request = httpx.Request(method, pinned, headers=merged, extensions=extensions, **body)
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc  # the name has more addresses: try the next one, as a resolver would
    assert failure is not None
    raise failure


async def run_http(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Send the request (or, with a ``retry`` pagination policy, each page's); see the module docstring."""
    policy = pagination_policy(config.get("retry"))
    if policy is not None:
        return await paginate(config, policy, ctx, fetch_once)
    return await fetch_once(config)


async def fetch_once(config: Mapping[str, Any]) -> dict[str, Any]:
    """Send one request, following redirects hop by hop; a non-2xx answer raises."""
    url = config.get("url") or config.get("endpoint")
    if not isinstance(url, str) or not url:
        raise ValueError("http tool: 'url' is required")
    rt = runtime()
    method = asked = str(config.get("method") or "GET").upper()
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    target = httpx.URL(url)
    if config.get("params"):
        target = target.copy_merge_params(config["params"])
    credential_headers: dict[str, str] = {}
    scope: tuple[tuple[str, ...], httpx.URL | None] = ((), None)
    name = auth_name(config.get("auth"))
    if name:
        credential = await rt.credential(name)
        credential_headers = _auth_headers(credential)
        scope = _credential_scope(credential)
        if not _in_scope(target, scope):
            raise PermissionError(
                f"http tool: credential {name!r} may not be sent to {target.host!r}"
                " (outside its allowed_hosts / base_url)"
            )
    body = _body(config)
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    follow = bool(config.get("follow_redirects", True))
    # the CA settings of the environment still apply; its proxy settings must not (trust_env=False)
    verify = httpx.create_ssl_context(verify=bool(config.get("verify", True)), trust_env=True)
    async with httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False) as client:
        for hop in range(MAX_REDIRECTS + 1):
            attach = bool(credential_headers) and _in_scope(target, scope)
            response = await send_checked(
                client, rt, method, target, {**headers, **credential_headers} if attach else headers, body
            )
            location = response.headers.get("location")
            if not (follow and response.status_code in _REDIRECTS and location):
                break
            await response.aclose()
            if hop == MAX_REDIRECTS:
                raise ToolError(
                    f"http tool: more than {MAX_REDIRECTS} redirects from {asked} {url}",
                    type_name="TooManyRedirects",
                )
            following = target.join(location)
            if _origin(following) != _origin(target):
                credential_headers = {}
                headers = _without_credentials(headers, rt.secrets)
            if (response.status_code == 303 and method != "HEAD") or (
                response.status_code in (301, 302) and method == "POST"
            ):
                # as browsers (and httpx) do: the next request is a GET without the body
                method, body = "GET", {}
            target = following
        try:
            size = 0
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ToolError(
                        f"http tool: response body over {MAX_BODY_BYTES} bytes", type_name="HttpError"
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
    result = {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(response, b"".join(chunks)),
    }
    if not 200 <= response.status_code < 300:
        raise HttpStatusError(f"HTTP {response.status_code} from {asked} {url}", result=result)
    return result


def _without_credentials(headers: Mapping[str, str], secrets: set[str]) -> dict[str, str]:
    """``headers`` less those that carry credentials: by name, or by a secret in the value."""
    return {
        k: v
        for k, v in headers.items()
        if k.lower() not in _CREDENTIAL_HEADERS and not any(s in v for s in secrets)
    }


def http_helper(result: Any) -> dict[str, Any]:
    """``outcome.http``: ``status`` (= ``status_code``), ``headers``, ``body``, ``ok``."""
    if not isinstance(result, Mapping):
        return {"status": None, "status_code": None, "headers": {}, "body": None, "ok": False}
    status = result.get("status_code")
    return {
        "status": status,
        "status_code": status,
        "headers": result.get("headers") or {},
        "body": result.get("body"),
        "ok": isinstance(status, int) and 200 <= status < 300,
    }
