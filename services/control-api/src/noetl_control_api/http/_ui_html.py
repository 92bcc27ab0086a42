"""HTML of the run inspector, built on the server with every value escaped. The pages load one
script and one stylesheet from ``/ui/static`` and nothing inline (the CSP forbids it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from ..application import ExecutionView, Principal

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
#: the filters of the runs list, as query parameters of ``/ui`` and ``GET /api/executions``
FILTERS = ("status", "path", "since", "until", "parent_execution_id")


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, principal: Principal | None = None, script: bool = True) -> str:
    who = (
        f'<span class="who">{_e(principal.name)} ({_e(principal.role)})</span>'
        ' <button type="button" id="logout">Sign out</button>'
        if principal is not None
        else ""
    )
    js = '<script src="/ui/static/inspector.js" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)} - NoETL</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="/ui/static/inspector.css">{js}</head><body>'
        f'<header><a href="/ui" class="brand">NoETL runs</a>{who}</header><main>{body}</main></body></html>'
    )


def login_page(csrf: str, error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        '<section class="login"><h1>Sign in</h1>'
        "<p>Paste an API token (<code>noetl token create NAME --role viewer</code>). It is kept in an"
        " HttpOnly cookie of this site, never in a URL.</p>"
        f'{problem}<form method="post" action="/ui/login">'
        f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
        '<label>API token <input type="password" name="token" id="token" autocomplete="off" required'
        ' maxlength="8192"></label> <button type="submit" id="sign-in">Sign in</button></form></section>'
    )
    return page("Sign in", body, script=False)


def _short(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


def runs_rows(rows: Sequence[ExecutionView]) -> str:
    """The ``<tbody>`` of the runs list (also served alone for the live refresh)."""
    out = []
    for r in rows:
        eid = _e(r.execution_id)
        parent = (
            f'<a href="/ui/runs/{_e(r.parent_execution_id)}">{_e(r.parent_execution_id)}</a>'
            if r.parent_execution_id
            else ""
        )
        out.append(
            f'<tr data-id="{eid}" data-status="{_e(r.status)}"><td><a class="run" href="/ui/runs/{eid}">{eid}</a></td>'
            f"<td>{_e(r.path)} <small>v{_e(r.version)}</small></td>"
            f'<td><span class="status s-{_e(r.status)}">{_e(r.status)}</span></td>'
            f"<td>{_e(_short(r.created_at))}</td><td>{_e(_short(r.updated_at))}</td><td>{parent}</td></tr>"
        )
    if not out:
        out.append('<tr><td colspan="6" class="empty">No execution matches these filters.</td></tr>')
    return f'<tbody id="runs-body">{"".join(out)}</tbody>'


def runs_page(
    principal: Principal, filters: Mapping[str, str], rows: Sequence[ExecutionView], next_cursor: int | None
) -> str:
    options = "".join(
        f'<option value="{s}"{" selected" if filters.get("status") == s else ""}>{s}</option>' for s in STATUSES
    )
    form = (
        '<form class="filters" method="get" action="/ui" id="filters">'
        f'<label>Status <select name="status"><option value="">any</option>{options}</select></label>'
        f'<label>Path <input name="path" value="{_e(filters.get("path"))}" maxlength="512"></label>'
        f'<label>From (UTC) <input name="since" type="datetime-local" step="1" value="{_e(filters.get("since"))}"></label>'
        f'<label>To (UTC) <input name="until" type="datetime-local" step="1" value="{_e(filters.get("until"))}"></label>'
        f'<label>Parent <input name="parent_execution_id" value="{_e(filters.get("parent_execution_id"))}"'
        ' maxlength="20" inputmode="numeric"></label>'
        '<button type="submit">Filter</button> <a href="/ui">Clear</a></form>'
    )
    kept = {k: v for k, v in filters.items() if k in FILTERS and v}
    pager = '<nav class="pager">'
    if filters.get("before"):
        pager += f'<a href="/ui?{_e(urlencode(kept))}">Newest</a> '
    if next_cursor is not None:
        pager += f'<a id="older" href="/ui?{_e(urlencode({**kept, "before": str(next_cursor)}))}">Older</a>'
    pager += "</nav>"
    live = "" if filters.get("before") else ' data-live="1"'
    table = (
        f'<table class="runs" id="runs"{live} data-query="{_e(urlencode(kept))}"><thead><tr><th>Execution</th>'
        "<th>Playbook</th><th>Status</th><th>Created (UTC)</th><th>Updated (UTC)</th><th>Parent</th></tr></thead>"
        f"{runs_rows(rows)}</table>"
    )
    return page("Runs", f'<h1>Runs</h1>{form}{table}{pager}<div id="page" data-page="runs"></div>', principal=principal)


def run_page(principal: Principal, execution_id: int, can: Mapping[str, bool]) -> str:
    """The run page's frame; the script fills it from the summary route and the SSE stream."""
    buttons = ""
    if can.get("cancel"):
        buttons += '<button type="button" id="cancel" hidden>Cancel</button>'
    if can.get("restart"):
        buttons += '<button type="button" id="restart" hidden>Restart from a step...</button>'
    body = (
        f'<div id="page" data-page="run" data-execution-id="{_e(execution_id)}">'
        f'<h1>Execution <span id="run-id">{_e(execution_id)}</span> <span id="run-status" class="status"></span>'
        ' <span id="replay" class="badge" title="state rebuilt from the event log vs stored state"></span>'
        ' <span id="live" class="badge"></span></h1>'
        f'<p id="run-meta"></p><div class="actions">{buttons}</div>'
        '<div id="run-error" class="error" hidden></div>'
        '<section><h2>Graph</h2><div id="graph" class="graph"></div></section>'
        '<section><h2>Timeline</h2><div id="gantt" class="gantt"></div></section>'
        '<section class="split"><div><h2>Steps</h2><table id="steps" class="steps"></table></div>'
        '<div id="step-detail" class="detail"><p class="hint">Select a step to see its input, output,'
        " error and logs.</p></div></section>"
        '<section><h2>Child executions</h2><ul id="children"></ul></section>'
        '<section><h2>Events</h2><form id="event-filters" class="filters">'
        '<label>Type <select name="event_type"><option value="">any</option>'
        + "".join(
            f'<option value="{t}">{t}</option>'
            for t in ("playbook.", "step.", "command.", "call.", "loop.", "next.evaluated", "command.failed")
        )
        + '</select></label><label>Step <select name="step" id="event-step"><option value="">any</option>'
        '</select></label></form><div class="events-box"><table id="events" class="events"><thead><tr><th>Time (UTC)</th><th>Type</th>'
        '<th>Step</th><th>Status</th><th>Detail</th></tr></thead><tbody></tbody></table></div>'
        '<button type="button" id="more-events" hidden>More events</button></section>'
        '<dialog id="restart-dialog"><form method="dialog" id="restart-form"><h2>Restart from a step</h2>'
        '<label>Step <select name="from_step" id="restart-step"></select></label>'
        '<label><input type="checkbox" name="failed_iterations_only" id="restart-failed-only">'
        " only the failed iterations of a loop</label>"
        '<div id="restart-plan"></div><p id="restart-error" class="error" hidden></p><menu>'
        '<button type="button" id="restart-preview">Preview (dry run)</button>'
        '<button type="button" id="restart-confirm" disabled>Restart</button>'
        '<button type="button" id="restart-close">Close</button></menu></form></dialog></div>'
    )
    return page(f"Execution {execution_id}", body, principal=principal)


def error_page(principal: Principal | None, message: str) -> str:
    return page("Error", f'<p class="error" role="alert">{_e(message)}</p>', principal=principal)


def as_filters(query: Mapping[str, Any]) -> dict[str, str]:
    """The list's filters from a query string, each bounded."""
    return {k: str(query[k])[:512] for k in (*FILTERS, "before") if query.get(k)}
