"""Built-in tools against real servers: a local HTTP server, Postgres, DuckDB, nats-server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import nats
import psycopg
import pytest
from noetl_common import REDACTED, CommandSpec, Rule, TaskSpec
from noetl_system_worker import PipelineRunner, default_registry
from noetl_system_worker._egress import EgressPolicy, parse_networks
from noetl_system_worker._runtime import CredentialError, ToolRuntime, current_runtime
from noetl_system_worker.tools import (
    HttpStatusError,
    nats_helper,
    run_duckdb,
    run_http,
    run_nats,
    run_postgres,
    run_secrets,
)


class Echo(BaseHTTPRequestHandler):
    """``/status/<code>``, ``/fail-then-ok/<n>/<key>``, anything else echoes the request as JSON."""

    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = json.dumps(payload).encode() if content_type == "application/json" else str(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        with self.lock:
            self.calls[url.path] += 1
            count = self.calls[url.path]
        if parts[:1] == ["status"]:
            return self._send(int(parts[1]), {"status": int(parts[1])})
        if parts[:1] == ["fail-then-ok"]:
            return self._send(503 if count <= int(parts[1]) else 200, {"calls": count})
        if parts[:1] == ["text"]:
            return self._send(200, "plain words", "text/plain")
        body = json.loads(raw) if raw and "json" in (self.headers.get("Content-Type") or "") else raw or None
        return self._send(
            200,
            {
                "path": url.path,
                "method": self.command,
                "args": parse_qs(url.query),
                "body": body,
                "authorization": self.headers.get("Authorization"),
            },
        )

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


#: The local test servers listen on loopback, which the worker refuses unless allowed.
LOOPBACK = EgressPolicy.configured(allow=parse_networks("127.0.0.0/8"))


@pytest.fixture
def http_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Secrets:
    """Our control-api's resolve routes, in memory (the worker tests fake only our own API)."""

    def __init__(self, credentials: dict[str, Any] | None = None, keychain: dict[str, Any] | None = None):
        self.credentials = credentials or {}
        self.keychain = keychain or {}
        self.calls: list[tuple[str, list[str], int | None]] = []

    async def resolve_credentials(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("credentials", names, execution_id))
        missing = [n for n in names if n not in self.credentials]
        if missing:
            raise LookupError(f"HTTP 404: unknown credential(s): {missing}")
        return {n: self.credentials[n] for n in names}

    async def resolve_keychain(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        self.calls.append(("keychain", names, execution_id))
        return {n: self.keychain[n] for n in names if n in self.keychain}

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        return {"values": await self.resolve_keychain(names, execution_id)}


@pytest.fixture
def use_runtime() -> Any:
    """Install a runtime in the calling test's context (each async test runs in its own task,
    so the setting does not outlive the test)."""

    def install(**kwargs: Any) -> ToolRuntime:
        rt = ToolRuntime(**kwargs)
        current_runtime.set(rt)
        return rt

    return install


def pg_credential(database_url: str) -> dict[str, Any]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    return {
        "name": "pg_local",
        "credential_type": "postgres",
        "data": {
            "db_host": info.get("host", "127.0.0.1"),
            "db_port": str(info.get("port", "5432")),
            "db_user": info.get("user", "postgres"),
            "db_password": info.get("password", ""),
            "db_name": info["dbname"],
        },
    }


async def run_pipeline(*tasks: TaskSpec, context: dict[str, Any] | None = None) -> Any:
    async def no_sleep(_delay: float) -> None:
        return None

    runner = PipelineRunner(default_registry(), sleep=no_sleep)
    return await runner.run(CommandSpec(tasks=list(tasks), args={}, context=context or {}))


# -- http -----------------------------------------------------------------------------------


async def test_http_get_returns_status_headers_and_decoded_json(http_url: str, use_runtime: Any) -> None:
    use_runtime(egress=LOOPBACK)
    result = await run_http({"url": f"{http_url}/health", "params": {"q": "1"}}, {}, {})

    assert set(result) == {"status_code", "headers", "body"}
    assert result["status_code"] == 200
    assert result["headers"]["content-type"] == "application/json"
    assert result["body"] == {
        "path": "/health",
        "method": "GET",
        "args": {"q": ["1"]},
        "body": None,
        "authorization": None,
    }


async def test_http_post_json_and_text_bodies(http_url: str, use_runtime: Any) -> None:
    use_runtime(egress=LOOPBACK)
    posted = await run_http({"url": f"{http_url}/x", "method": "post", "body": {"a": [1, 2]}}, {}, {})
    text = await run_http({"url": f"{http_url}/text"}, {}, {})

    assert posted["body"]["method"] == "POST" and posted["body"]["body"] == {"a": [1, 2]}
    assert text["body"] == "plain words"


async def test_http_non_2xx_is_an_error_that_keeps_the_response(http_url: str, use_runtime: Any) -> None:
    use_runtime(egress=LOOPBACK)
    with pytest.raises(HttpStatusError) as caught:
        await run_http({"url": f"{http_url}/status/503"}, {}, {})
    assert caught.value.result["status_code"] == 503
    assert caught.value.result["body"] == {"status": 503}


async def test_http_rules_see_outcome_http_status_and_retry(http_url: str, use_runtime: Any) -> None:
    """The c2_http_retry_with_stop rule set: retry on 5xx, fail on other errors, else continue."""
    use_runtime(egress=LOOPBACK)
    rules = [
        Rule(when="{{ outcome.http.status in [500, 502, 503] }}", do="retry", attempts=3, delay=0.5),
        Rule(when="{{ outcome.status == 'error' }}", do="fail"),
        Rule(when=None, do="continue"),
    ]
    task = TaskSpec(name="start", kind="http", config={"url": "{{ url }}"}, rules=rules)

    ok = await run_pipeline(task, context={"url": f"{http_url}/fail-then-ok/2/a"})
    failed = await run_pipeline(task, context={"url": f"{http_url}/status/503"})

    assert ok.ok and ok.result["status_code"] == 200 and ok.task_runs == 3
    assert Echo.calls["/fail-then-ok/2/a"] == 3
    assert not failed.ok and failed.task_runs == 3
    assert "retries exhausted after 3" in failed.error["message"] and "HTTP 503" in failed.error["message"]


async def test_http_bearer_credential_is_resolved_and_sent(http_url: str, use_runtime: Any) -> None:
    source = Secrets(
        {"api": {"name": "api", "credential_type": "bearer", "data": {"token": "tok-abcdef-123"}}}
    )
    rt = use_runtime(api=source, execution_id=7, egress=LOOPBACK)

    result = await run_http({"url": f"{http_url}/me", "auth": "api"}, {}, {})

    assert result["body"]["authorization"] == "Bearer tok-abcdef-123"
    assert source.calls == [("credentials", ["api"], 7)]
    assert rt.redact(result)["body"]["authorization"] == f"Bearer {REDACTED}"


async def test_http_unreachable_is_an_error_outcome(use_runtime: Any) -> None:
    use_runtime(egress=LOOPBACK)
    out = await run_pipeline(
        TaskSpec(name="t", kind="http", config={"url": "http://127.0.0.1:9/x", "timeout": 2})
    )

    assert not out.ok and out.error["type"] in ("ConnectError", "ConnectTimeout")


# -- python source is not a template ------------------------------------------------------


async def test_python_code_with_braces_is_not_rendered() -> None:
    code = "d = {'a': {'b': 1}}\nresult = {'text': '{{ not_a_template }}', 'n': d['a']['b'], 'x': x}"
    task = TaskSpec(name="t", kind="python", config={"code": code, "args": {"x": "{{ who }}"}})

    out = await run_pipeline(task, context={"who": "me"})

    assert out.ok, out.error
    assert out.result == {"text": "{{ not_a_template }}", "n": 1, "x": "me"}


# -- postgres ---------------------------------------------------------------------------------


async def test_postgres_multi_statement_command_and_rows(database_url: str, use_runtime: Any) -> None:
    use_runtime(api=Secrets({"pg_local": pg_credential(database_url)}), execution_id=1)
    script = """
        CREATE TABLE t (id int PRIMARY KEY, name text, score numeric(5,2), doc jsonb, at timestamptz);
        INSERT INTO t VALUES (1, 'a', 1.50, '{"k": [1]}', '2026-01-02T03:04:05Z'), (2, 'b', 2, null, null);
        SELECT id, name, score, doc, at FROM t ORDER BY id;
    """

    result = await run_postgres({"auth": "pg_local", "command": script}, {}, {})

    assert result["rows"] == [
        {"id": 1, "name": "a", "score": 1.5, "doc": {"k": [1]}, "at": "2026-01-02T03:04:05+00:00"},
        {"id": 2, "name": "b", "score": 2.0, "doc": None, "at": None},
    ]
    assert result["columns"] == ["id", "name", "score", "doc", "at"] and result["row_count"] == 2
    assert [s["command"] for s in result["statements"]] == ["CREATE TABLE", "INSERT 0 2", "SELECT 2"]
    assert result["statements"][1]["row_count"] == 2


async def test_postgres_params_rowcount_and_errors(database_url: str, use_runtime: Any) -> None:
    use_runtime(api=Secrets({"pg_local": pg_credential(database_url)}))
    base = {"auth": {"credential": "pg_local"}}
    await run_postgres({**base, "command": "CREATE TABLE t (id int)"}, {}, {})

    inserted = await run_postgres(
        {**base, "query": "INSERT INTO t SELECT generate_series(1, %(n)s)", "params": {"n": 5}}, {}, {}
    )
    counted = await run_postgres(
        {**base, "query": "SELECT count(*) AS n FROM t WHERE id > %s", "params": [2]}, {}, {}
    )
    broken = await run_pipeline(
        TaskSpec(name="q", kind="postgres", config={**base, "query": "SELECT * FROM nope"})
    )

    assert inserted == {"rows": [], "columns": [], "row_count": 5, "command": "INSERT 0 5"}
    assert counted["rows"] == [{"n": 3}]
    assert not broken.ok and broken.error["type"] == "UndefinedTable"


async def test_postgres_multi_statement_is_one_transaction(database_url: str, use_runtime: Any) -> None:
    use_runtime(api=Secrets({"pg_local": pg_credential(database_url)}))
    await run_postgres({"auth": "pg_local", "command": "CREATE TABLE t (id int)"}, {}, {})

    with pytest.raises(psycopg.errors.DivisionByZero):
        await run_postgres({"auth": "pg_local", "command": "INSERT INTO t VALUES (1); SELECT 1/0;"}, {}, {})
    after = await run_postgres({"auth": "pg_local", "query": "SELECT count(*) AS n FROM t"}, {}, {})

    assert after["rows"] == [{"n": 0}]


async def test_postgres_unknown_credential_fails_the_task(use_runtime: Any) -> None:
    use_runtime(api=Secrets({}))

    out = await run_pipeline(
        TaskSpec(name="q", kind="postgres", config={"auth": "nope", "query": "SELECT 1"})
    )

    assert not out.ok and out.error["type"] == "CredentialError" and "nope" in out.error["message"]


@pytest.mark.parametrize(
    "field",
    [
        {"host": "pg.attacker.example"},
        {"db_host": "pg.attacker.example"},
        {"port": 6543},
        {"user": "someone"},
        {"password": "x"},
        {"dbname": "other"},
        {"database": "other"},
        {"db_name": "other"},
        {"dsn": "host=pg.attacker.example"},
        {"connection_string": "postgresql://pg.attacker.example/db"},
        {"sslmode": "disable"},
        {"connection": {"host": "pg.attacker.example"}},
    ],
    ids=lambda field: next(iter(field)),
)
async def test_postgres_connection_fields_beside_a_credential_are_refused(
    database_url: str, use_runtime: Any, field: dict[str, Any]
) -> None:
    source = Secrets({"pg_local": pg_credential(database_url)})
    use_runtime(api=source)

    out = await run_pipeline(
        TaskSpec(name="q", kind="postgres", config={"auth": "pg_local", "query": "SELECT 1", **field})
    )

    name = next(iter(field))
    assert not out.ok and out.error["type"] == "PermissionError"
    assert f"{name!r} cannot be set beside auth: 'pg_local'" in out.error["message"]
    # refused before the credential was even resolved: its password went nowhere
    assert source.calls == []


async def test_postgres_without_a_credential_connects_with_the_task_fields(database_url: str) -> None:
    result = await run_postgres({"connection": {"dsn": database_url}, "query": "SELECT 7 AS n"}, {}, {})

    assert result["rows"] == [{"n": 7}]


async def test_outcome_postgres_helper_is_visible_to_rules(database_url: str, use_runtime: Any) -> None:
    use_runtime(api=Secrets({"pg_local": pg_credential(database_url)}))
    rules = [
        Rule(
            when="{{ outcome.postgres.row_count == 3 }}",
            do="continue",
            set={"ctx.n": "{{ outcome.postgres.row_count }}"},
        )
    ]
    task = TaskSpec(
        name="q",
        kind="postgres",
        config={"auth": "pg_local", "query": "SELECT generate_series(1, 3) AS i"},
        rules=rules,
    )

    out = await run_pipeline(task)

    assert out.ok and out.set == {"ctx.n": 3}


# -- duckdb -----------------------------------------------------------------------------------


async def test_duckdb_in_memory_runs_the_upstream_fixture_query() -> None:
    query = (
        "CREATE TABLE users (id INTEGER, name VARCHAR, age INTEGER);\n"
        "INSERT INTO users VALUES (1, 'Alice', 30), (2, 'Bob', 25), (3, 'Charlie', 35);\n"
        "SELECT name, age FROM users WHERE age >= 30 ORDER BY age;\n"
    )

    rows = await run_duckdb({"database": ":memory:", "query": query}, {}, {})
    default = await run_duckdb(
        {"query": "SELECT 42 AS answer, 1.5::DECIMAL(4,1) AS d, DATE '2026-01-02' AS day"}, {}, {}
    )

    assert rows == [{"name": "Alice", "age": 30}, {"name": "Charlie", "age": 35}]
    assert default == [{"answer": 42, "d": 1.5, "day": "2026-01-02"}]


async def test_duckdb_file_database_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "db.duckdb"

    await run_duckdb({"database": str(path), "command": "CREATE TABLE t AS SELECT 1 AS x"}, {}, {})
    rows = await run_duckdb(
        {"database": str(path), "query": "SELECT x FROM t WHERE x = $1", "params": [1]}, {}, {}
    )

    assert path.exists() and rows == [{"x": 1}]


async def test_duckdb_error_is_an_error_outcome() -> None:
    out = await run_pipeline(TaskSpec(name="d", kind="duckdb", config={"query": "SELECT * FROM missing"}))

    assert not out.ok and "missing" in out.error["message"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT content FROM read_text('/proc/self/environ')",
        "SELECT * FROM read_csv('http://169.254.169.254/latest/meta-data/')",
        "INSTALL httpfs",
        "SET enable_external_access = true",
        "RESET lock_configuration",
    ],
)
async def test_duckdb_sql_reaches_no_file_url_or_setting_outside_its_database(
    sql: str, use_runtime: Any
) -> None:
    use_runtime()

    out = await run_pipeline(TaskSpec(name="d", kind="duckdb", config={"query": sql}))

    assert not out.ok and out.error["type"] in ("PermissionException", "InvalidInputException")


async def test_duckdb_reads_and_writes_files_only_in_allowed_directories(
    tmp_path: Path, use_runtime: Any
) -> None:
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    for folder in (shared, private):
        (folder / "in.csv").write_text("a,b\n1,2\n")
    use_runtime(duckdb_directories=(str(shared),))

    rows = await run_duckdb({"query": f"SELECT a + b AS s FROM read_csv('{shared}/in.csv')"}, {}, {})
    await run_duckdb({"command": f"COPY (SELECT 3 AS c) TO '{shared}/out.csv'"}, {}, {})
    refused = await run_pipeline(
        TaskSpec(name="d", kind="duckdb", config={"query": f"SELECT * FROM read_csv('{private}/in.csv')"})
    )
    escaped = await run_pipeline(
        TaskSpec(
            name="d", kind="duckdb", config={"query": f"SELECT * FROM read_csv('{shared}/../private/in.csv')"}
        )
    )

    assert rows == [{"s": 3}] and (shared / "out.csv").read_text().splitlines() == ["c", "3"]
    assert not refused.ok and refused.error["type"] == "PermissionException"
    assert not escaped.ok and escaped.error["type"] == "PermissionException"


# -- nats -------------------------------------------------------------------------------------


async def test_nats_publish_core_and_jetstream(nats_url: str, use_runtime: Any) -> None:
    use_runtime(nats_url=nats_url)
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe("app.orders")
        js = nc.jetstream()
        await js.add_stream(name="APP", subjects=["app.js.>"])

        core = await run_nats({"subject": "app.orders", "data": {"id": 1}, "headers": {"x-k": "v"}}, {}, {})
        msg = await sub.next_msg(timeout=5)
        first = await run_nats(
            {"subject": "app.js.a", "message": "hi", "jetstream": True, "msg_id": "m1"}, {}, {}
        )
        again = await run_nats(
            {"subject": "app.js.a", "message": "hi", "jetstream": True, "msg_id": "m1"}, {}, {}
        )
        info = await js.stream_info("APP")
    finally:
        await nc.close()

    assert json.loads(msg.data) == {"id": 1} and msg.headers == {"x-k": "v"}
    assert nats_helper(first) == {
        "subject": "app.js.a",
        "published": True,
        "stream": "APP",
        "seq": 1,
        "duplicate": False,
    }
    assert core == {"subject": "app.orders", "published": True, "size": len(msg.data)}
    assert first["stream"] == "APP" and first["seq"] == 1 and not first["duplicate"]
    assert again["duplicate"] and info.state.messages == 1


@pytest.mark.parametrize("subject", ["noetl.commands.shared.1", "$JS.API.STREAM.LIST", "app.*"])
async def test_nats_refuses_reserved_and_wildcard_subjects(
    nats_url: str, use_runtime: Any, subject: str
) -> None:
    use_runtime(nats_url=nats_url)

    with pytest.raises((PermissionError, ValueError)):
        await run_nats({"subject": subject, "data": "x"}, {}, {})


@pytest.mark.parametrize("auth", [None, "bus"])
@pytest.mark.parametrize(
    "field",
    [
        {"url": "nats://nats.attacker.example:4222"},
        {"servers": ["nats://x:4222"]},
        {"user": "u"},
        {"token": "t"},
    ],
    ids=lambda field: next(iter(field)),
)
async def test_nats_task_cannot_name_a_server_or_credentials(
    nats_url: str, use_runtime: Any, auth: str | None, field: dict[str, Any]
) -> None:
    source = Secrets({"bus": {"name": "bus", "credential_type": "nats", "data": {"url": nats_url}}})
    # the worker's own NATS credentials must never travel to a server the task names
    use_runtime(api=source, nats_url=nats_url, nats_user="worker", nats_password="worker-pass")
    config = {"subject": "app.orders", "data": "x", **field} | ({"auth": auth} if auth else {})

    out = await run_pipeline(TaskSpec(name="n", kind="nats", config=config))

    assert not out.ok and out.error["type"] == "PermissionError"
    assert f"{next(iter(field))!r} cannot be set in the task" in out.error["message"]
    assert source.calls == []


@pytest.mark.parametrize("stream", ["NOETL_COMMANDS", "NOETL_EVENTS", "NOETL_DLQ"])
async def test_nats_jetstream_cannot_name_a_suite_stream(
    nats_url: str, use_runtime: Any, stream: str
) -> None:
    use_runtime(nats_url=nats_url)

    with pytest.raises(PermissionError, match=f"stream '{stream}' is reserved"):
        await run_nats({"subject": "app.js.a", "data": "x", "jetstream": True, "stream": stream}, {}, {})


# -- secrets ----------------------------------------------------------------------------------


async def test_secrets_from_allowed_env_keychain_and_credential(use_runtime: Any) -> None:
    source = Secrets(
        {"pg_local": {"name": "pg_local", "credential_type": "postgres", "data": {"db_password": "pw-9876"}}},
        {"api_key": "kc-value-1234"},
    )
    rt = use_runtime(
        api=source,
        execution_id=5,
        keychain_env_vars=("MY_TOKEN",),
        env={"MY_TOKEN": "env-tok-555", "OTHER": "x"},
    )

    env = await run_secrets({"env": "MY_TOKEN"}, {}, {})
    env_by_name = await run_secrets({"name": "MY_TOKEN"}, {}, {})
    keychain = await run_secrets({"name": "api_key"}, {}, {})
    credential = await run_secrets({"credential": "pg_local"}, {}, {})

    assert env == {"name": "MY_TOKEN", "provider": "env", "value": "env-tok-555"}
    assert env_by_name["value"] == "env-tok-555"
    assert keychain == {"name": "api_key", "provider": "keychain", "value": "kc-value-1234"}
    assert credential["value"] == {"db_password": "pw-9876"}
    assert ("keychain", ["api_key"], 5) in source.calls
    redacted = rt.redact({"all": [env, keychain, credential], "text": "token=env-tok-555;"})
    assert "env-tok-555" not in json.dumps(redacted) and "kc-value-1234" not in json.dumps(redacted)
    assert "pw-9876" not in json.dumps(redacted) and redacted["text"] == f"token={REDACTED};"


async def test_secrets_refuses_env_vars_not_allowed(use_runtime: Any) -> None:
    use_runtime(keychain_env_vars=("MY_TOKEN",), env={"OTHER": "x", "MY_TOKEN": "t"})

    with pytest.raises(CredentialError, match="NOETL_KEYCHAIN_ENV_VARS"):
        await run_secrets({"env": "OTHER"}, {}, {})
    with pytest.raises(CredentialError, match="no control-api"):
        await run_secrets({"name": "OTHER"}, {}, {})


@pytest.mark.parametrize("name", ["NOETL_API_TOKEN", "NOETL_WORKER_TOKEN_SHARED", "NATS_PASSWORD"])
async def test_secrets_never_read_the_workers_own_secrets(use_runtime: Any, name: str) -> None:
    source = Secrets(keychain={})
    # listed by mistake, on a runtime built without the config's check
    use_runtime(api=source, keychain_env_vars=(name,), env={name: "worker-secret-1"})

    with pytest.raises(CredentialError, match="one of the worker's own secrets"):
        await run_secrets({"env": name}, {}, {})
    with pytest.raises(CredentialError, match="not found"):
        await run_secrets({"name": name}, {}, {})

    assert source.calls == [("keychain", [name], None)]


async def test_secrets_in_a_pipeline_reach_the_next_task(use_runtime: Any) -> None:
    use_runtime(keychain_env_vars=("MY_TOKEN",), env={"MY_TOKEN": "env-tok-555"})
    seen = Rule(
        when="{{ outcome.secrets.found and outcome.secrets.provider == 'env' }}",
        do="continue",
        set={"ctx.secret_name": "{{ outcome.secrets.name }}", "ctx.helper": "{{ outcome.secrets }}"},
    )
    out = await run_pipeline(
        TaskSpec(name="s", kind="secrets", config={"env": "MY_TOKEN"}, rules=[seen]),
        TaskSpec(
            name="use",
            kind="python",
            config={"code": "result = {'len': len(tok)}", "args": {"tok": "{{ s.value }}"}},
        ),
    )

    assert out.ok and out.result == {"len": len("env-tok-555")}
    assert out.set["ctx.secret_name"] == "MY_TOKEN" and "env-tok-555" not in str(out.set["ctx.helper"])


async def test_tools_run_concurrently_without_sharing_runtimes(use_runtime: Any) -> None:
    async def one(token: str) -> Any:
        current_runtime.set(ToolRuntime(keychain_env_vars=("T",), env={"T": token}))
        return (await run_secrets({"env": "T"}, {}, {}))["value"]

    assert await asyncio.gather(one("aaaa1"), one("bbbb2")) == ["aaaa1", "bbbb2"]


async def test_python_libs_are_imported_as_globals_but_not_inputs() -> None:
    code = "result = {'dumped': json.dumps({'a': 1}), 'root': m.sqrt(16), 'inputs': sorted(input_data)}"
    task = TaskSpec(
        name="t",
        kind="python",
        config={"code": code, "libs": {"json": "json", "m": "math"}, "args": {"x": 1}},
    )
    bad = TaskSpec(
        name="t", kind="python", config={"code": "result = 1", "libs": {"nope": "no_such_module_xyz"}}
    )

    out = await run_pipeline(task)
    failed = await run_pipeline(bad)

    assert out.ok and out.result == {"dumped": '{"a": 1}', "root": 4.0, "inputs": ["x"]}
    assert not failed.ok and "no_such_module_xyz" in failed.error["message"]
