"""The project's ``noetl`` CLI with the verbs NoETL users type (upstream's ``run``,
``register playbook``, ``catalog list Playbook``, ``execute status``), ``executions list``
with its filters and pages, ``-o json|table`` and ``--version``, against the live stack."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def test_upstream_verbs(cli: Callable[..., Any]) -> None:
    assert cli("--version").stdout.startswith("noetl ")
    registered = cli("register", "playbook", "--file", "examples/hello.yaml")
    assert registered.code == 0 and "registered examples/hello" in registered.stdout, registered.stderr
    listed = cli("catalog", "list", "Playbook", "-o", "json")
    assert "examples/hello" in {e["path"] for e in json.loads(listed.stdout)}
    assert cli("list", "Agent", "-o", "json").stdout.strip() == "[]"

    done = cli("run", "examples/hello", "-r", "distributed", "--set", "name=Verbs", "--wait")
    assert done.code == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["status"] == "COMPLETED" and final["result"]["message"] == "Hello, Verbs!"
    status = cli("execute", "status", str(final["execution_id"]))
    assert status.code == 0 and json.loads(status.stdout)["status"] == "COMPLETED", status.stderr
    table = cli("status", str(final["execution_id"]), "-o", "table")
    assert table.stdout.split()[:2] == ["FIELD", "VALUE"] and "COMPLETED" in table.stdout
    refused = cli("run", "examples/hello", "-r", "local")
    assert refused.code == 2 and "-r distributed" in refused.stderr


def test_executions_list_filters_and_pages(cli: Callable[..., Any]) -> None:
    ids = []
    for name in ("a", "b", "c"):
        run = cli("run", "examples/hello", "--set", f"name={name}", "--wait")
        assert run.code == 0, run.stderr
        ids.append(json.loads(run.stdout)["execution_id"])
    first = json.loads(
        cli("executions", "list", "--path", "examples/hello", "--limit", "2", "-o", "json").stdout
    )
    assert [e["execution_id"] for e in first["executions"]] == [ids[2], ids[1]]
    cursor = str(first["next_cursor"])
    second = cli(
        "executions", "list", "--path", "examples/hello", "--limit", "2", "--before", cursor, "-o", "json"
    )
    assert json.loads(second.stdout)["executions"][0]["execution_id"] == ids[0]
    skipped = cli(
        "executions", "list", "--path", "examples/hello", "--offset", "1", "--limit", "1", "-o", "json"
    )
    assert [e["execution_id"] for e in json.loads(skipped.stdout)["executions"]] == [ids[1]]
    finished = json.loads(
        cli(
            "executions",
            "list",
            "--status",
            "completed",
            "--since",
            "2000-01-01",
            "--limit",
            "5",
            "-o",
            "json",
        ).stdout
    )
    assert all(e["status"] == "COMPLETED" for e in finished["executions"]) and finished["executions"]
    none = cli("executions", "list", "--until", "2000-01-01", "-o", "json")
    assert json.loads(none.stdout)["executions"] == []
    orphans = cli("executions", "list", "--parent", str(ids[0]), "-o", "json")
    assert json.loads(orphans.stdout)["executions"] == []
    table = cli("executions", "list", "--path", "examples/hello", "--limit", "1")
    assert table.stdout.split()[:2] == ["EXECUTION_ID", "STATUS"] and "more: --before" in table.stderr
