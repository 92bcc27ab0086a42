"""Catalog: register (JSON or raw YAML), versions, list, resource, one error shape."""

from __future__ import annotations

from typing import Any

import msgspec


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status_code"] == status
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


async def test_register_versions_and_list(api: Any) -> None:
    first = await api.register()
    assert {k: first[k] for k in ("path", "version", "name", "kind")} == {
        "path": "tests/linear",
        "version": 1,
        "name": "linear",
        "kind": "Playbook",
    }
    assert (await api.register())["version"] == 1  # identical content keeps its version
    changed = api.linear.replace("greeting: hello", "greeting: hey")
    assert (await api.register(changed))["version"] == 2

    listing = (await api.client.get("/api/catalog/list")).json()["entries"]
    assert [(e["path"], e["version"], e["name"]) for e in listing] == [("tests/linear", 2, "linear")]

    latest = await api.client.post("/api/catalog/resource", json={"path": "tests/linear"})
    assert latest.status_code == 200
    assert latest.json()["version"] == 2 and "greeting: hey" in latest.json()["content"]
    old = await api.client.post("/api/catalog/resource", json={"path": "tests/linear", "version": "1"})
    assert old.json()["content"] == api.linear


async def test_register_raw_yaml_body(api: Any) -> None:
    response = await api.client.post(
        "/api/catalog/register", content=api.linear.encode(), headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 201
    assert response.json()["path"] == "tests/linear"


async def test_unknown_resource_is_404(api: Any) -> None:
    _assert_error(await api.client.post("/api/catalog/resource", json={"path": "nope"}), 404, "not_found")
    await api.register()
    missing = await api.client.post("/api/catalog/resource", json={"path": "tests/linear", "version": 9})
    _assert_error(missing, 404, "not_found")


async def test_malformed_yaml_is_422_with_location(api: Any) -> None:
    response = await api.client.post("/api/catalog/register", json={"content": "workflow: [unclosed"})
    body = _assert_error(response, 422, "invalid_playbook")
    assert set(body["extra"]) == {"step", "field"}


async def test_invalid_playbook_names_step_and_field(api: Any) -> None:
    bad = api.linear.replace("arcs: [{step: second}]", "arcs: [{step: nowhere}]")
    body = _assert_error(
        await api.client.post("/api/catalog/register", json={"content": bad}), 422, "invalid_playbook"
    )
    assert body["extra"]["step"] == "start"
    assert "nowhere" in body["detail"]


async def test_bad_register_bodies_are_client_errors(api: Any) -> None:
    client = api.client
    _assert_error(await client.post("/api/catalog/register", json={"nope": 1}), 400, "validation_error")
    _assert_error(
        await client.post(
            "/api/catalog/register", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
        "validation_error",
    )
    _assert_error(
        await client.post(
            "/api/catalog/register", content=b"\xff\xfe", headers={"content-type": "text/plain"}
        ),
        400,
        "validation_error",
    )
    _assert_error(
        await client.post("/api/catalog/register", json={"content": "[1, 2]"}), 422, "invalid_playbook"
    )
    bad_path = api.linear.replace("path: tests/linear", "path: ../etc/passwd")
    body = _assert_error(
        await client.post("/api/catalog/register", json={"content": bad_path}), 422, "invalid_playbook"
    )
    assert body["extra"]["field"] == "metadata.path"


LOOSE = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loose, path: tests/loose}
workflow:
  - step: start
    case: []
    tool: {kind: python, code: "result = 1", retry: 3}
"""


async def test_unknown_keys_are_refused_unless_the_setting_says_warn(
    api: Any, serve_app: Any, settings: Any
) -> None:
    refused = await api.client.post("/api/catalog/register", json={"content": LOOSE})
    body = _assert_error(refused, 422, "invalid_playbook")
    assert body["extra"] == {"step": "start", "field": "case"} and "unknown key 'case'" in body["detail"]

    async with serve_app(msgspec.structs.replace(settings, dsl_unknown_keys="warn")) as loose:
        registered = await loose.post("/api/catalog/register", json={"content": LOOSE})
        assert registered.status_code == 201, registered.text
        message = registered.json()["message"]
        assert "field 'case': unknown key 'case'" in message and "field 'tool.retry'" in message
    # registered under warn, it still starts under the strict setting: stored playbooks are not re-checked
    started = await api.client.post("/api/execute", json={"path": "tests/loose"})
    assert started.status_code == 201, started.text
