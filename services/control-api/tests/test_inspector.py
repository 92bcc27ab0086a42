"""The run inspector's session (cookie sign-in, CSRF, redirects) and the summary it draws from."""

from __future__ import annotations

import re
from typing import Any

import httpx

#: no Authorization header: the client's RoleAuth would add the route owner's token
ANON = httpx.Auth()
VIEWER_PAGES = ("/ui", "/ui/rows", "/ui/runs/1")


async def _viewer_token(api: Any, role: str = "viewer") -> str:
    made = await api.client.post("/api/tokens", json={"name": f"ui-{role}", "role": role})
    assert made.status_code == 201, made.text
    return str(made.json()["token"])


async def _sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/ui/login", auth=ANON)
    assert form.status_code == 200
    csrf = form.cookies["noetl_csrf"]
    assert f'value="{csrf}"' in form.text
    return await client.post("/ui/login", data={"token": token, "csrf": csrf}, auth=ANON)


async def test_a_token_signs_in_into_an_httponly_strict_cookie(api: Any) -> None:
    token = await _viewer_token(api)
    reply = await _sign_in(api.client, token)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui"
    session = next(c for c in reply.headers.get_list("set-cookie") if c.startswith("noetl_session="))
    assert re.search(r"HttpOnly", session, re.I) and re.search(r"SameSite=Strict", session, re.I), session
    assert token not in reply.headers["location"]
    page = await api.client.get("/ui", auth=ANON)
    assert page.status_code == 200 and "ui-viewer (viewer)" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    run = await api.client.get("/ui/runs/1", auth=ANON)
    # a viewer sees no action buttons: cancel and restart are for roles that may take them
    assert run.status_code == 200 and 'id="cancel"' not in run.text and 'id="restart"' not in run.text


async def test_an_operator_gets_the_action_buttons(api: Any) -> None:
    await _sign_in(api.client, await _viewer_token(api, "operator"))
    run = await api.client.get("/ui/runs/1", auth=ANON)
    assert 'id="cancel"' in run.text and 'id="restart"' in run.text


async def test_pages_send_a_signed_out_browser_to_the_login_page(api: Any) -> None:
    for path in VIEWER_PAGES:
        reply = await api.client.get(path, auth=ANON)
        assert reply.status_code == 303 and reply.headers["location"] == "/ui/login", path
    assert (await api.client.get("/api/executions", auth=ANON)).status_code == 401


async def test_login_refuses_a_bad_token_a_service_token_and_a_forged_form(api: Any, auth: Any) -> None:
    assert (await _sign_in(api.client, "noetl_" + "x" * 43)).status_code == 401
    worker = auth.TOKENS["NOETL_WORKER_TOKEN_SHARED"]
    refused = await _sign_in(api.client, worker)
    assert refused.status_code == 401 and "cannot sign in here" in refused.text
    api.client.cookies.clear()
    forged = await api.client.post("/ui/login", data={"token": await _viewer_token(api), "csrf": "x"}, auth=ANON)
    assert forged.status_code == 403 and "noetl_session" not in forged.headers.get("set-cookie", "")


async def test_a_service_token_in_a_bearer_header_cannot_open_the_pages(api: Any, auth: Any) -> None:
    worker = auth.TOKENS["NOETL_WORKER_TOKEN_SHARED"]
    for path in VIEWER_PAGES:
        reply = await api.client.get(path, headers={"Authorization": f"Bearer {worker}"}, auth=ANON)
        assert reply.status_code == 403 and reply.json()["extra"] == {"role": "worker", "action": "ui.view"}, path
    viewer = await _viewer_token(api)
    page = await api.client.get("/ui", headers={"Authorization": f"Bearer {viewer}"}, auth=ANON)
    assert page.status_code == 200


async def test_a_cookie_signed_state_change_needs_the_csrf_header(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await _sign_in(api.client, await _viewer_token(api, "operator"))
    path = f"/api/executions/{execution_id}/cancel"
    refused = await api.client.post(path, json={}, auth=ANON)
    assert refused.status_code == 403 and "X-NoETL-CSRF" in refused.text
    wrong = await api.client.post(path, json={}, headers={"x-noetl-csrf": "nope"}, auth=ANON)
    assert wrong.status_code == 403
    still = await api.client.get(f"/api/executions/{execution_id}", auth=ANON)
    assert still.json()["status"] == "RUNNING"
    csrf = api.client.cookies["noetl_csrf"]
    done = await api.client.post(path, json={}, headers={"x-noetl-csrf": csrf}, auth=ANON)
    assert done.status_code == 200 and done.json()["status"] == "CANCELLED", done.text


async def test_a_viewer_session_cannot_cancel_even_with_the_csrf_header(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await _sign_in(api.client, await _viewer_token(api))
    csrf = api.client.cookies["noetl_csrf"]
    reply = await api.client.post(
        f"/api/executions/{execution_id}/cancel", json={}, headers={"x-noetl-csrf": csrf}, auth=ANON
    )
    assert reply.status_code == 403 and reply.json()["extra"]["role"] == "viewer"


async def test_static_assets_are_only_the_named_ones(api: Any) -> None:
    js = await api.client.get("/ui/static/inspector.js", auth=ANON)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    for name in ("..%2F_ui.py", "_ui.py", "inspector.js.map"):
        assert (await api.client.get(f"/ui/static/{name}", auth=ANON)).status_code == 404


async def test_the_summary_folds_steps_attempts_arcs_and_filters_events(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})
    await api.project(execution_id)
    summary = (await api.client.get(f"/api/executions/{execution_id}/summary")).json()
    assert summary["status"] == "COMPLETED" and summary["execution_id"] == str(execution_id)
    assert summary["complete"] is True and summary["events"] > 0
    assert [s["name"] for s in summary["steps"]] == ["start", "second", "end"]
    assert [s["status"] for s in summary["steps"]] == ["COMPLETED"] * 3
    assert {(a["source"], a["target"], a["fired"]) for a in summary["arcs"]} == {("start", "second", 1), ("second", "end", 1)}
    assert [b["label"] for b in summary["bars"]] == ["start", "second", "end"]
    assert all(b["start"] and b["end"] and b["status"] == "COMPLETED" for b in summary["bars"])
    assert summary["steps"][1]["output"] == {"n": 2} and summary["error"] is None
    events = f"/api/executions/{execution_id}/events"
    fired = (await api.client.get(events, params={"event_type": "next.evaluated"})).json()["events"]
    assert [e["step"] for e in fired] == ["start", "second", "end"]
    commands = (await api.client.get(events, params={"event_type": "command.", "step": "second"})).json()["events"]
    assert commands and {e["event_type"].split(".")[0] for e in commands} == {"command"}
    assert {e["step"] for e in commands} == {"second"}
    assert (await api.client.get(events, params={"step": "x" * 201})).status_code == 400
    assert (await api.client.get("/api/executions/1/summary")).status_code == 404
