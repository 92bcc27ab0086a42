"""``/ui``: the run inspector, served by the control-api itself (docs/inspector.md).

Server-rendered pages plus one hand-written script and stylesheet shipped in the package
(``static/``); no build step. The pages read and act through the ordinary API routes, signed
in by the session cookie (``_ui_session``), so every action keeps its role check."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect

from .._errors import DomainError, NotFound
from ..application import HUMAN_ROLES, ExecutionService, Principal, client_id, optional_id
from ._auth import PUBLIC, action
from ._services import services_of
from ._ui_html import as_filters, error_page, login_page, run_page, runs_page, runs_rows
from ._ui_session import CSRF_COOKIE, cleared_cookies, cookies, csrf_cookie, new_csrf, session_cookies

#: the only files ``/ui/static`` serves, with their media types
_STATIC = {"inspector.js": "text/javascript; charset=utf-8", "inspector.css": "text/css; charset=utf-8"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
_LOGIN_MAX_BYTES = 16384
#: rows of one page of the runs list
_PAGE_ROWS = 50

UI = {"action": ("ui.view",), "ui": True}


def _html(text: str, status: int = 200, cookies_: list[Any] | None = None) -> Response[str]:
    return Response(text, status_code=status, media_type="text/html; charset=utf-8", headers=_HEADERS,
                    cookies=cookies_ or [])


@cache
def _asset(name: str) -> bytes:
    return files("noetl_control_api.http").joinpath("static", name).read_bytes()


class InspectorController(Controller):
    """The browser pages of the run inspector."""

    tags = ["inspector"]
    include_in_schema = False

    @get("/ui/login", opt=PUBLIC)
    async def login_form(self, request: Request[Any, Any, Any]) -> Response[str]:
        csrf = cookies(request.scope).get(CSRF_COOKIE) or new_csrf()
        return _html(login_page(csrf), cookies_=[csrf_cookie(request.scope, csrf)])

    @post("/ui/login", opt=PUBLIC, status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Form ``token`` + ``csrf`` (= the ``noetl_csrf`` cookie the form page set): a human
        role's valid token becomes the session cookie."""
        body = await request.body()
        form = parse_qs(body[:_LOGIN_MAX_BYTES].decode("utf-8", "replace"), max_num_fields=4)
        token = (form.get("token") or [""])[0].strip()
        sent = (form.get("csrf") or [""])[0]
        expected = cookies(request.scope).get(CSRF_COOKIE, "")
        csrf = new_csrf()
        if not expected or sent != expected:
            return _html(login_page(csrf, "The form expired; sign in again."), 403,
                         [csrf_cookie(request.scope, csrf)])
        principal = await services_of(request.app.state).tokens.authenticate(token) if token else None
        if principal is None or principal.role not in HUMAN_ROLES:
            message = "That token is unknown, expired or revoked." if principal is None else (
                f"A {principal.role} token cannot sign in here; use a viewer, operator, developer or admin token."
            )
            return _html(login_page(csrf, message), 401, [csrf_cookie(request.scope, csrf)])
        return Redirect("/ui", status_code=303, headers=_HEADERS, cookies=session_cookies(request.scope, token, csrf))

    @post("/ui/logout", opt=action("auth.whoami"), status_code=303)
    async def logout(self) -> Redirect:
        return Redirect("/ui/login", status_code=303, cookies=cleared_cookies())

    @get("/ui/static/{name:str}", opt=PUBLIC)
    async def static(self, name: FromPath[str]) -> Response[bytes]:
        if name not in _STATIC:
            raise NotFound(f"no asset {name[:40]!r}")
        return Response(_asset(name), media_type=_STATIC[name],
                        headers={"x-content-type-options": "nosniff", "cache-control": "no-cache"})

    @get("/ui", opt=UI)
    async def runs(
        self,
        request: Request[Any, Any, Any],
        executions: NamedDependency[ExecutionService],
        principal: NamedDependency[Principal],
    ) -> Response[str]:
        """The runs list: ``GET /api/executions``'s filters and cursor (``before``)."""
        filters = as_filters(request.query_params)
        try:
            page = await self._list(executions, filters)
        except DomainError as exc:
            return _html(error_page(principal, exc.detail), exc.status_code)
        return _html(runs_page(principal, filters, page.executions, page.next_cursor))

    @get("/ui/rows", opt=UI)
    async def rows(self, request: Request[Any, Any, Any], executions: NamedDependency[ExecutionService]) -> Response[str]:
        """The list's rows alone, for the page's live refresh."""
        page = await self._list(executions, as_filters(request.query_params))
        return _html(runs_rows(page.executions))

    @get("/ui/runs/{execution_id:str}", opt=UI)
    async def run(
        self,
        execution_id: FromPath[str],
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
    ) -> Response[str]:
        eid = client_id(execution_id, "execution_id")
        policy = services_of(request.app.state).policy
        can = {
            "cancel": policy.allows(principal, "execution.cancel"),
            "restart": policy.allows(principal, "execution.start"),
        }
        return _html(run_page(principal, eid, can))

    @staticmethod
    async def _list(executions: ExecutionService, filters: dict[str, str]) -> Any:
        return await executions.list_recent(
            limit=_PAGE_ROWS,
            status=filters.get("status"),
            path=filters.get("path"),
            parent=optional_id(filters.get("parent_execution_id"), "parent_execution_id"),
            since=filters.get("since"),
            until=filters.get("until"),
            before=optional_id(filters.get("before"), "before"),
        )
