"""NoETL users switch without rewriting anything: the upstream ``noetl`` CLI from PyPI (a Rust
binary, pinned) drives the real stack with a suite API token (docs/compatibility.md).

Its command is also named ``noetl``, so it lives in a virtual environment of its own under
the pytest cache, never in the project's ``.venv``. PyPI unreachable is a failure that says
so, not a skip: the point of the test is that this exact client works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from noetl_cli import Api
from noetl_dev.testing import wait_until

UPSTREAM_VERSION = "5.3.2"
Conn = psycopg.Connection[dict[str, Any]]

GREET = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: upstream_greet, path: compat/upstream_greet}
workload: {greeting: Hello, name: World, count: 1}
workflow:
  - step: start
    tool:
      kind: python
      input: {greeting: "{{ greeting }}", name: "{{ name }}", count: "{{ count }}"}
      code: |
        result = {"message": f"{greeting}, {name}!", "count": count}
"""

SLEEP = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: upstream_sleep, path: compat/upstream_sleep}
workload: {seconds: 20}
workflow:
  - step: start
    tool:
      kind: python
      input: {seconds: "{{ seconds }}"}
      code: |
        import time
        time.sleep(seconds)
        result = {"slept": seconds}
"""

PARENT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: upstream_parent, path: compat/upstream_parent}
workflow:
  - step: start
    tool: {kind: playbook, path: compat/upstream_sleep, return_step: start}
"""

CREDENTIAL = {
    "name": "compat_pg",
    "type": "postgres",
    "description": "registered by the upstream CLI",
    "data": {"db_host": "127.0.0.1", "db_user": "noetl", "db_password": "upstream-Secret-9"},
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="session")
def upstream_noetl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``noetl`` of PyPI's ``noetl==UPSTREAM_VERSION``, installed once into the pytest cache
    (into the session's temporary folder when the cache is off)."""
    name = f"upstream-noetl-{UPSTREAM_VERSION}"
    cache = getattr(request.config, "cache", None)
    home = Path(cache.mkdir(name)) if cache is not None else tmp_path_factory.mktemp(name)
    venv = home / "venv"
    exe = venv / "bin" / "noetl"
    if exe.exists():
        probe = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        if probe.stdout.strip() == f"noetl {UPSTREAM_VERSION}":
            return exe
    shutil.rmtree(venv, ignore_errors=True)
    steps = (
        [*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        [
            *_uv(),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            f"noetl=={UPSTREAM_VERSION}",
        ],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            pytest.fail(
                f"could not install the upstream NoETL CLI (noetl=={UPSTREAM_VERSION}) from PyPI into {venv}:"
                f" `{' '.join(map(str, step))}` exited {done.returncode}:\n{done.stderr.strip()[-2000:]}\n"
                "This test needs PyPI to be reachable (or the package in uv's cache).",
                pytrace=False,
            )
    return exe


@pytest.fixture(scope="session")
def developer_token(api: Api) -> str:
    """A suite API token of role developer, minted for the test: what a user would hold."""
    created = api.create_token(f"upstream-cli-{os.getpid()}", "developer")
    token: str = created["token"]
    return token


@pytest.fixture
def upstream(upstream_noetl: Path, api_url: str, developer_token: str, tmp_path: Path) -> Callable[..., Run]:
    """Run the upstream CLI with ``--host/--port`` against the API under test. The token goes
    in ``NOETL_SESSION_TOKEN`` (``token=`` sends it with ``--session-token`` instead, or none)."""
    where = urlsplit(api_url)
    home = tmp_path / "home"  # the upstream CLI keeps its contexts under $HOME
    home.mkdir()

    def run(*args: str, token: str | None = developer_token, flag: bool = False) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_")}
        env.update(HOME=str(home), NO_COLOR="1")
        auth: list[str] = []
        if token is not None and flag:
            auth = ["--session-token", token]
        elif token is not None:
            env["NOETL_SESSION_TOKEN"] = token
        command = [
            str(upstream_noetl),
            "--host",
            str(where.hostname),
            "--port",
            str(where.port),
            *auth,
            *args,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path, env=env
        )
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def _json_after(text: str, marker: str) -> Any:
    """The JSON document printed after ``marker``."""
    start = text.index("{", text.index(marker))
    return json.JSONDecoder().raw_decode(text[start:])[0]


def _started(run: Run) -> int:
    assert run.code == 0, run.text
    return int(_json_after(run.stdout, "Execution started:")["execution_id"])


def test_upstream_cli_drives_the_stack(
    upstream: Callable[..., Run], api: Api, db: Conn, tmp_path: Path
) -> None:
    version = upstream("--version", token=None)
    assert version.stdout.strip() == f"noetl {UPSTREAM_VERSION}"
    for name, text in (("greet.yaml", GREET), ("sleep.yaml", SLEEP), ("parent.yaml", PARENT)):
        (tmp_path / name).write_text(text)
    (tmp_path / "cred.json").write_text(json.dumps(CREDENTIAL))

    # register: playbooks (sent base64-encoded) and a credential (upstream's `type`)
    for name in ("greet.yaml", "sleep.yaml", "parent.yaml"):
        registered = upstream("register", "playbook", "--file", name)
        assert registered.code == 0 and "registered successfully" in registered.stdout, registered.text
    credential = upstream("register", "credential", "--file", "cred.json", flag=True)
    assert credential.code == 0 and "registered successfully" in credential.stdout, credential.text
    shown = upstream("get", "credential", "compat_pg")
    assert shown.code == 0, shown.text
    assert "compat_pg" in shown.stdout and "postgres" in shown.stdout
    assert "upstream-Secret-9" not in shown.text  # data stays write-only

    # list: POST /api/catalog/list, both verbs
    listed = upstream("catalog", "list", "Playbook", "--json")
    assert listed.code == 0, listed.text
    paths = {e["path"] for e in json.loads(listed.stdout)["entries"]}
    assert {"compat/upstream_greet", "compat/upstream_sleep", "compat/upstream_parent"} <= paths
    legacy = upstream("list", "Playbook", flag=True)
    assert legacy.code == 0 and "compat/upstream_greet" in legacy.stdout, legacy.text
    fetched = upstream("catalog", "get", "compat/upstream_greet")
    assert fetched.code == 0 and "upstream_greet" in fetched.stdout, fetched.text

    # run -r distributed with --set: the values become the workload, typed as upstream types them
    execution_id = _started(
        upstream(
            "run", "compat/upstream_greet", "-r", "distributed", "--set", "name=Upstream", "--set", "count=3"
        )
    )
    final = api.wait(execution_id, timeout=120)
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == {"message": "Hello, Upstream!", "count": 3}
    status = upstream("status", str(execution_id), "--json")
    assert status.code == 0, status.text
    body = json.loads(status.stdout)
    assert (body["status"], body["completed"], body["failed"]) == ("COMPLETED", True, False)
    assert body["completed_steps"] == ["start"]
    legacy_status = upstream("execute", "status", str(execution_id))
    assert legacy_status.code == 0 and "COMPLETED" in legacy_status.stdout, legacy_status.text
    rerun = upstream("execute", "rerun", str(execution_id))
    assert rerun.code == 0, rerun.text
    again = api.wait(int(_json_after(rerun.stdout, "Rerun started:")["execution_id"]), timeout=120)
    assert again["results"]["start"] == {"message": "Hello, Upstream!", "count": 3}

    # bulk load: POST /api/catalog/register/batch, one outcome per file
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "greet2.yaml").write_text(GREET.replace("upstream_greet", "upstream_greet2"))
    loaded = upstream("catalog", "load", "load")
    assert loaded.code == 0 and "registered 1, failed 0" in loaded.stdout, loaded.text

    # cancel --cascade: a parent whose child is still running; both end CANCELLED
    parent_id = _started(upstream("run", "compat/upstream_parent", "-r", "distributed"))
    child_id = wait_until(
        lambda: (
            db.execute(
                "select execution_id from noetl.execution where parent_execution_id = %s and status = 'RUNNING'",
                (parent_id,),
            ).fetchone()
            or {}
        ).get("execution_id"),
        60,
        f"a running child of execution {parent_id}",
    )
    cancelled = upstream("cancel", str(parent_id), "--cascade", "--reason", "switching", "--json")
    assert cancelled.code == 0, cancelled.text
    reply = json.loads(cancelled.stdout)
    assert set(reply["cancelled_executions"]) == {str(parent_id), str(child_id)}
    child = upstream("status", str(child_id), "--json")
    assert json.loads(child.stdout)["status"] == "CANCELLED", child.text
    assert api.execution(parent_id)["status"] == "CANCELLED"


def test_upstream_cli_needs_a_valid_token(upstream: Callable[..., Run]) -> None:
    # the upstream CLI prints the server's refusal (and exits 0 all the same)
    for token in (None, "noetl_" + "x" * 43):
        refused = upstream("catalog", "list", "Playbook", "--json", token=token)
        assert "401 Unauthorized" in refused.text and "unauthenticated" in refused.text, refused.text
        assert "compat/upstream" not in refused.stdout
