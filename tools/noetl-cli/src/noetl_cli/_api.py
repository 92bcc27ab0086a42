"""A small synchronous client of the control-api's public routes, for the CLI and dev tools."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8082"
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: the longest ``?wait=`` the control-api accepts on ``GET /api/executions/{id}``
MAX_WAIT_SECONDS = 60.0
#: what one request of :meth:`Api.wait` asks for: inside that bound and the idle timeout of a
#: proxy in between (often 60 s)
LONG_POLL_SECONDS = 30.0
#: a held reply may take this much longer than the wait asked for before the client gives up
READ_MARGIN_SECONDS = 10.0


class CliError(Exception):
    """Anything the user should see as one line: an API error reply or an unreachable server."""

    def __init__(self, message: str, status_code: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.error = error


class WaitTimeout(CliError):
    """The execution was still running when ``--timeout`` ran out."""

    def __init__(self, message: str, last: dict[str, Any]):
        super().__init__(message)
        self.last = last


def _error_from(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        code = str(body.get("error") or "error")
        detail = " ".join(str(body["detail"]).split())
        extra = body.get("extra")
        suffix = f" {json.dumps(extra, sort_keys=True)}" if extra else ""
        return CliError(f"HTTP {response.status_code} {code}: {detail}{suffix}", response.status_code, code)
    text = " ".join(response.text.split())[:300]
    return CliError(f"HTTP {response.status_code}: {text or response.reason_phrase}", response.status_code)


class Api:
    """The public control-api routes the CLI needs (sync httpx, JSON in and out)."""

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 30.0, token: str | None = None) -> None:
        self.server = server.rstrip("/")
        #: what every request of this client carries (empty without a token)
        self.auth_headers: dict[str, str] = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.server, timeout=timeout, headers=self.auth_headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                json=body if content is None else None,
                content=content,
                params=params,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the control-api at {self.server}: {exc or type(exc).__name__}"
            ) from None
        if response.status_code >= 300:
            raise _error_from(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"HTTP {response.status_code}: reply is not JSON") from None

    # -- catalog ------------------------------------------------------------------------------
    def register(self, content: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("POST", "/api/catalog/register", {"content": content})
        return reply

    def register_file(self, path: Path) -> dict[str, Any]:
        try:
            content = path.read_text()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
        return self.register(content)

    def catalog(self) -> list[dict[str, Any]]:
        reply = self.request("GET", "/api/catalog/list")
        entries: list[dict[str, Any]] = reply.get("entries", []) if isinstance(reply, dict) else []
        return entries

    # -- executions ---------------------------------------------------------------------------
    def execute(
        self, path: str, payload: dict[str, Any] | None = None, version: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"path": path}
        if version is not None:
            body["version"] = version
        if payload is not None:
            body["payload"] = payload
        reply: dict[str, Any] = self.request("POST", "/api/execute", body)
        return reply

    def executions(
        self, *, path: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Executions, newest first, optionally filtered by catalog path and status."""
        params: dict[str, Any] = {"limit": limit}
        if path is not None:
            params["path"] = path
        if status is not None:
            params["status"] = status
        reply = self.request("GET", "/api/executions", params=params)
        executions: list[dict[str, Any]] = reply.get("executions", []) if isinstance(reply, dict) else []
        return executions

    def executions_page(self, **filters: Any) -> dict[str, Any]:
        """One page of ``GET /api/executions`` as the server sends it: ``{executions, next_cursor}``.
        ``filters``: ``limit``, ``status``, ``path``, ``parent_execution_id``, ``since``, ``until``,
        ``before``, ``offset``; None values are left out."""
        params = {key: value for key, value in filters.items() if value is not None}
        reply: dict[str, Any] = self.request("GET", "/api/executions", params=params)
        return reply

    def events(self, execution_id: int | str, page: int = 500) -> list[dict[str, Any]]:
        """Every event of an execution in ``event_id`` order, following ``after`` pages."""
        events: list[dict[str, Any]] = []
        after: int | None = None
        while True:
            params: dict[str, Any] = {"limit": page}
            if after is not None:
                params["after"] = after
            reply = self.request("GET", f"/api/executions/{execution_id}/events", params=params)
            batch: list[dict[str, Any]] = reply.get("events", []) if isinstance(reply, dict) else []
            events.extend(batch)
            if not batch:  # a page may end early at the server's byte budget: only an empty one is the end
                return events
            after = int(batch[-1]["event_id"])

    def cancel(self, execution_id: int | str, reason: str | None = None) -> dict[str, Any]:
        """Cancel it and its running children; the reply lists every execution it ended."""
        body = {"reason": reason} if reason else None
        reply: dict[str, Any] = self.request("POST", f"/api/executions/{execution_id}/cancel", body)
        return reply

    def execution(self, execution_id: int | str, wait: float | None = None) -> dict[str, Any]:
        """``GET /api/executions/{id}``; with ``wait``, the server holds a RUNNING execution's
        reply until it ends or ``wait`` seconds (0 < wait <= 60) pass."""
        if wait is None:
            reply: dict[str, Any] = self.request("GET", f"/api/executions/{execution_id}")
            return reply
        wait = min(MAX_WAIT_SECONDS, max(0.001, wait))
        read = httpx.Timeout(self._http.timeout.connect, read=wait + READ_MARGIN_SECONDS)
        reply = self.request(
            "GET", f"/api/executions/{execution_id}", params={"wait": f"{wait:.3f}"}, timeout=read
        )
        return reply

    def wait(self, execution_id: int | str, timeout: float, interval: float = 0.2) -> dict[str, Any]:
        """Long-poll ``GET /api/executions/{id}?wait=`` until the status is terminal or ``timeout`` passes.

        The server answers as soon as the execution ends: no poll interval to sit out. A
        RUNNING reply that comes back well before the wait asked for (a server shutting down,
        or one that ignores ``wait``) is followed by a pause of ``interval``, not a tight loop."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = min(LONG_POLL_SECONDS, remaining) if remaining >= 0.001 else None
            asked = time.monotonic()
            execution = self.execution(execution_id, wait)
            if execution.get("status") in TERMINAL:
                return execution
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"execution {execution_id} still {execution.get('status')} after {timeout:g}s", execution
                )
            if wait is None or time.monotonic() - asked < wait / 2:
                time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    # -- credentials -------------------------------------------------------------------------
    def put_credential(
        self,
        name: str,
        credential_type: str,
        data: dict[str, Any],
        description: str | None = None,
        allowed_paths: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create or replace a credential; the reply shows its data redacted."""
        body = {
            "name": name,
            "credential_type": credential_type,
            "data": data,
            "description": description,
            "allowed_paths": allowed_paths,
        }
        reply: dict[str, Any] = self.request("POST", "/api/credentials", body)
        return reply

    def credentials(self) -> list[dict[str, Any]]:
        reply = self.request("GET", "/api/credentials")
        found: list[dict[str, Any]] = reply.get("credentials", []) if isinstance(reply, dict) else []
        return found

    def credential(self, name: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", f"/api/credentials/{name}")
        return reply

    def delete_credential(self, name: str) -> None:
        self.request("DELETE", f"/api/credentials/{name}")

    # -- tokens and identity (admin) ------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", "/api/auth/whoami")
        return reply

    def create_token(
        self, name: str, role: str, pool: str | None = None, expires_in_seconds: int | None = None
    ) -> dict[str, Any]:
        """A new API token: the reply carries the token itself, this once."""
        body = {"name": name, "role": role, "pool": pool, "expires_in_seconds": expires_in_seconds}
        reply: dict[str, Any] = self.request("POST", "/api/tokens", body)
        return reply

    def tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        params = {"include_revoked": "true"} if include_revoked else None
        reply = self.request("GET", "/api/tokens", params=params)
        found: list[dict[str, Any]] = reply.get("tokens", []) if isinstance(reply, dict) else []
        return found

    def revoke_token(self, name: str) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("DELETE", f"/api/tokens/{name}")
        return reply

    # -- plug-in registry (admin) ----------------------------------------------------------------
    def publish_plugin(self, path: str, module: bytes, version: int | None = None) -> dict[str, Any]:
        """``POST /api/internal/plugins/{path}``: the module bytes; no version = the next one."""
        params = {"version": version} if version is not None else None
        headers = {"content-type": "application/wasm"}
        reply: dict[str, Any] = self.request(
            "POST", f"/api/internal/plugins/{path}", params=params, content=module, headers=headers
        )
        return reply

    def plugins(self, path: str | None = None) -> list[dict[str, Any]]:
        """Every published plug-in version (of ``path`` when given)."""
        params = {"path": path} if path else None
        reply = self.request("GET", "/api/internal/plugins", params=params)
        found: list[dict[str, Any]] = reply.get("plugins", []) if isinstance(reply, dict) else []
        return found
