"""The ``http`` tool (httpx, async).

Config: ``method`` (GET), ``url``, ``headers``, ``params``, one of ``json`` / ``body`` /
``data`` (a mapping or list body is sent as JSON unless ``data`` is used, which is
form-encoded for a mapping), ``timeout`` seconds (30), ``follow_redirects`` (true),
``verify`` (true), ``auth: <credential>``. Result ``{status_code, headers, body}`` with a
JSON body decoded (else text). A non-2xx status is an error outcome whose result is
still the response, so rules can read ``outcome.http.status`` and retry.

Credentials for ``auth:``: type ``bearer`` / ``token`` (``token``), ``basic``
(``username``, ``password``), ``header`` / ``api_key`` (``header`` or ``name``, and
``value``); any other type contributes its ``headers`` mapping when it has one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx

from .._runtime import CredentialError, auth_name, runtime
from .._tools import ToolError

DEFAULT_TIMEOUT = 30.0
#: Response bodies larger than this are refused (a worker must not hold unbounded bodies).
MAX_BODY_BYTES = 64 * 1024 * 1024


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


async def run_http(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Send one request; see the module docstring for config and result."""
    url = config.get("url") or config.get("endpoint")
    if not isinstance(url, str) or not url:
        raise ValueError("http tool: 'url' is required")
    method = str(config.get("method") or "GET").upper()
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    name = auth_name(config.get("auth"))
    if name:
        headers.update(_auth_headers(await runtime().credential(name)))
    request: dict[str, Any] = {"headers": headers, "params": config.get("params") or None}
    if config.get("json") is not None:
        request["json"] = config["json"]
    elif config.get("data") is not None:
        data = config["data"]
        request["data" if isinstance(data, Mapping) else "content"] = (
            data if isinstance(data, Mapping) else str(data).encode()
        )
    elif config.get("body") is not None:
        body = config["body"]
        if isinstance(body, Mapping | list):
            request["json"] = body
        else:
            request["content"] = str(body).encode()
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    async with httpx.AsyncClient(
        timeout=timeout,
        follow_redirects=bool(config.get("follow_redirects", True)),
        verify=bool(config.get("verify", True)),
    ) as client:
        async with client.stream(method, url, **request) as response:
            size = 0
            chunks: list[bytes] = []
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ToolError(
                        f"http tool: response body over {MAX_BODY_BYTES} bytes", type_name="HttpError"
                    )
                chunks.append(chunk)
    result = {
        "status_code": response.status_code,
        "headers": dict(response.headers),
        "body": _decode(response, b"".join(chunks)),
    }
    if not 200 <= response.status_code < 300:
        raise HttpStatusError(f"HTTP {response.status_code} from {method} {url}", result=result)
    return result


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
