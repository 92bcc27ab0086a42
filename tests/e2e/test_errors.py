"""Bad input gets a 4xx in the one error shape, from the API and as one line from the CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from noetl_cli import Api

BAD_ARC = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_bad, path: e2e/bad}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: {spec: {mode: exclusive}, arcs: [{step: nowhere}]}
"""

CASES: list[tuple[str, str, str, Any, set[int], str | None]] = [
    # (id, method, path, json body, accepted statuses, expected error code)
    (
        "malformed-yaml",
        "POST",
        "/api/catalog/register",
        {"content": "a: [unclosed\n  b: {"},
        {400, 422},
        None,
    ),
    ("invalid-playbook", "POST", "/api/catalog/register", {"content": BAD_ARC}, {422}, "invalid_playbook"),
    ("unknown-path", "POST", "/api/execute", {"path": "no/such/playbook"}, {404}, "not_found"),
    ("unknown-resource", "POST", "/api/catalog/resource", {"path": "no/such/playbook"}, {404}, "not_found"),
    ("execute-no-path", "POST", "/api/execute", {"payload": {}}, {400, 422}, None),
    ("bad-execution-id", "GET", "/api/executions/not-a-number", None, {400, 404, 422}, None),
    ("unknown-execution", "GET", "/api/executions/12345", None, {404}, "not_found"),
    ("cancel-unknown", "POST", "/api/executions/12345/cancel", None, {404}, "not_found"),
    ("bad-command-id", "GET", "/api/commands/xyz", None, {400, 404, 422}, None),
    ("unknown-command", "GET", "/api/commands/12345", None, {404}, "not_found"),
    # worker events come from workers only: an admin's token is refused before the body is read
    ("events-as-admin", "POST", "/api/events", {"events": []}, {403}, "forbidden"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "statuses", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_requests_get_4xx_in_one_shape(
    api_url: str, auth: dict[str, str], method: str, path: str, body: Any, statuses: set[int], code: str | None
) -> None:
    reply = httpx.request(method, f"{api_url}{path}", json=body, headers=auth, timeout=10)

    assert reply.status_code in statuses, reply.text
    error = reply.json()
    assert set(error) <= {"status_code", "error", "detail", "extra"}, error
    assert error["status_code"] == reply.status_code
    assert isinstance(error["error"], str) and error["error"] and " " not in error["error"]
    assert isinstance(error["detail"], str) and error["detail"]
    if code is not None:
        assert error["error"] == code


def test_no_credential_is_401_in_the_same_shape(api_url: str) -> None:
    reply = httpx.get(f"{api_url}/api/internal/outbox/pending-count", timeout=10)
    assert reply.status_code == 401 and reply.json()["error"] == "unauthenticated"
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_an_invalid_playbook_error_names_the_step(api_url: str, auth: dict[str, str]) -> None:
    reply = httpx.post(f"{api_url}/api/catalog/register", json={"content": BAD_ARC}, headers=auth, timeout=10)

    assert reply.status_code == 422
    error = reply.json()
    assert error["error"] == "invalid_playbook"
    assert error["extra"]["step"] == "start"
    assert error["extra"]["field"].startswith("next")
    assert "nowhere" in error["detail"]


def test_a_raw_non_json_body_is_a_4xx(api_url: str, auth: dict[str, str]) -> None:
    reply = httpx.post(
        f"{api_url}/api/execute",
        content=b"{not json",
        headers={**auth, "content-type": "application/json"},
        timeout=10,
    )

    assert 400 <= reply.status_code < 500
    assert reply.json()["status_code"] == reply.status_code


def test_the_cli_prints_api_errors_as_one_line(cli: Callable[..., Any], tmp_path: Path) -> None:
    unknown = cli("execute", "no/such/playbook", "--wait")
    assert unknown.code == 1
    assert unknown.stdout == ""
    assert unknown.stderr.startswith("error: HTTP 404 not_found: ")
    assert unknown.stderr.count("\n") == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_ARC)
    rejected = cli("catalog", "register", str(bad))
    assert rejected.code == 1
    assert rejected.stderr.startswith("error: HTTP 422 invalid_playbook: ")
    assert rejected.stderr.count("\n") == 1


def test_unknown_execution_status_is_an_error(cli: Callable[..., Any], api: Api) -> None:
    done = cli("status", "12345")
    assert done.code == 1
    assert done.stderr.startswith("error: HTTP 404")
