"""``{{ keychain.<name> }}`` in task configs: names found, values resolved once per command,
oauth2 tokens fetched behind the egress policy from a real token server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from noetl_common import CommandSpec, TaskSpec
from noetl_dev.testing import JsonHandler, local_http, url_of
from noetl_system_worker import PipelineRunner, StepOutcome, default_registry
from noetl_system_worker._egress import EgressPolicy, parse_networks
from noetl_system_worker._runtime import ToolRuntime, current_runtime
from noetl_system_worker.tools import keychain_names
from noetl_system_worker.tools._keychain import TOKEN_MAX_BYTES

CLIENT_SECRET = "cl1ent-s3cret-value"
DEV = EgressPolicy.configured(allow=parse_networks("127.0.0.0/8"))


class Handler(JsonHandler):
    """``POST /token`` answers a new token (or ``server.token_reply``); ``GET /api`` echoes
    the Authorization header it got."""

    server: TokenServer

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.server.forms.append({k: v[0] for k, v in form.items()})
        status, body = self.server.token_reply or (
            200,
            json.dumps(
                {
                    "access_token": f"tok-{len(self.server.forms)}-abcdef",
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }
            ),
        )
        self.send_json(status, body.encode())

    def do_GET(self) -> None:
        self.server.auth.append(self.headers.get("Authorization"))
        self.send_json(200, json.dumps({"you_sent": self.headers.get("Authorization")}).encode())
        self.send_json(200, {"you_sent": self.headers.get("Authorization")})


class TokenServer(ThreadingHTTPServer):
    forms: list[dict[str, str]]
    auth: list[str | None]
    token_reply: tuple[int, str] | None

    @property
    def url(self) -> str:
        return url_of(self)


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with local_http(Handler, TokenServer) as started:
        started.forms, started.auth, started.token_reply = [], [], None
        yield started


class Keychain:
    """The control-api's keychain routes as the worker sees them: an oauth2 entry ``svc``
    without a token is a request to send; a stored token is served."""

    def __init__(self, endpoint: str, token_field: str = "access_token") -> None:
        self.endpoint = endpoint
        self.token_field = token_field
        self.stored: dict[str, dict[str, Any]] = {}
        self.asked: list[list[str]] = []

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        self.asked.append(names)
        values = {n: self.stored[n] for n in names if n in self.stored}
        fetch = {
            n: {
                "endpoint": self.endpoint,
                "method": "POST",
                "headers": {},
                "form": {
                    "grant_type": "client_credentials",
                    "client_id": "c",
                    "client_secret": CLIENT_SECRET,
                },
                "token_field": self.token_field,
            }
            for n in names
            if n == "svc" and n not in self.stored
        }
        return {"values": values, "fetch": fetch, "sensitive_only": {"svc": [self.token_field]}}

    async def store_keychain_token(
        self, name: str, value: dict[str, Any], *, event_id: int | None, worker_id: str | None
    ) -> dict[str, Any]:
        self.stored[name] = value
        return {"name": name, "expires_at": None}


def install(api: Any, policy: EgressPolicy = DEV) -> ToolRuntime:
    rt = ToolRuntime(api=api, execution_id=1, event_id=2, worker_id="w1", egress=policy)
    current_runtime.set(rt)
    return rt


def call_api(server: TokenServer, name: str = "call") -> TaskSpec:
    return TaskSpec(
        name=name,
        kind="http",
        config={
            "url": f"{server.url}/api",
            "headers": {"Authorization": "Bearer {{ keychain.svc.access_token }}"},
        },
    )


async def run(*tasks: TaskSpec) -> StepOutcome:
    return await PipelineRunner(default_registry()).run(CommandSpec(tasks=list(tasks), args={}, context={}))


def test_names_come_from_templates_in_either_spelling() -> None:
    config = {
        "url": "{{ keychain.a.url }}/x",
        "headers": {"k": "{{ keychain['b-c'].key }} {{ keychain.a.other }}"},
        "body": ["keychain.not_a_template", {"q": "{% if keychain . d %}y{% endif %}"}],
        "code": 5,
    }

    assert keychain_names(config) == ["a", "b-c", "d"]
    assert keychain_names({"url": "http://x"}) == []


async def test_an_oauth2_token_is_fetched_once_sent_as_bearer_and_kept_out_of_the_result(
    server: TokenServer,
) -> None:
    api = Keychain(f"{server.url}/token")
    rt = install(api)

    outcome = await run(call_api(server, "first"), call_api(server, "second"))

    assert outcome.ok, outcome.error
    assert server.auth == ["Bearer tok-1-abcdef", "Bearer tok-1-abcdef"]
    assert server.forms == [
        {"grant_type": "client_credentials", "client_id": "c", "client_secret": CLIENT_SECRET}
    ]
    assert api.stored["svc"]["access_token"] == "tok-1-abcdef" and api.asked == [["svc"]]
    # the server echoed the token: what the worker reports carries it redacted
    assert outcome.result["body"]["you_sent"] == "Bearer tok-1-abcdef"
    reported = json.dumps(rt.redact(outcome.result))
    assert "tok-1-abcdef" not in reported and "[REDACTED]" in reported
    assert CLIENT_SECRET in rt.secrets


async def test_a_token_under_another_field_is_a_secret_and_its_plain_fields_are_not(
    server: TokenServer,
) -> None:
    server.token_reply = (
        200,
        json.dumps({"jwt": "opaque-value-123", "token_type": "Bearer", "expires_in": 3600}),
    )
    rt = install(Keychain(f"{server.url}/token", token_field="jwt"))
    task = TaskSpec(
        name="call",
        kind="http",
        config={"url": f"{server.url}/api", "headers": {"X": "{{ keychain.svc.jwt }}"}},
    )

    outcome = await run(task)

    assert outcome.ok, outcome.error
    assert "opaque-value-123" in rt.secrets and not {"Bearer", "3600"} & rt.secrets


async def test_python_source_is_not_searched_for_keychain_names() -> None:
    install(None)
    code = "result = {'text': '{{ keychain.nothing.here }}'}"

    outcome = await run(TaskSpec(name="py", kind="python", config={"code": code}))

    assert outcome.ok, outcome.error
    assert outcome.result == {"text": "{{ keychain.nothing.here }}"}


async def test_a_stored_token_is_used_without_a_request(server: TokenServer) -> None:
    api = Keychain(f"{server.url}/token")
    api.stored["svc"] = {"access_token": "tok-stored-123456", "expires_in": 3600}
    install(api)

    outcome = await run(call_api(server))

    assert outcome.ok, outcome.error
    assert server.forms == [] and server.auth == ["Bearer tok-stored-123456"]


async def test_the_token_url_is_held_to_the_egress_policy(server: TokenServer) -> None:
    install(Keychain("http://169.254.169.254/token"))

    outcome = await run(call_api(server))

    assert not outcome.ok and outcome.error is not None
    assert outcome.error["type"] == "CredentialError"
    assert "keychain.svc" in outcome.error["message"] and "169.254.169.254" in outcome.error["message"]
    assert server.auth == []


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        ((401, json.dumps({"error": "invalid_client", "echo": CLIENT_SECRET})), "answered HTTP 401"),
        ((200, json.dumps({"token": "x" * (TOKEN_MAX_BYTES + 1)})), f"over {TOKEN_MAX_BYTES} bytes"),
        ((200, json.dumps({"token_type": "Bearer"})), "no 'access_token' string"),
        ((200, "not json"), "did not answer JSON"),
    ],
)
async def test_a_bad_token_reply_fails_the_step_without_echoing_it(
    server: TokenServer, reply: tuple[int, str], words: str
) -> None:
    server.token_reply = reply
    api = Keychain(f"{server.url}/token")
    install(api)

    outcome = await run(call_api(server))

    assert not outcome.ok and outcome.error is not None
    assert words in outcome.error["message"] and CLIENT_SECRET not in outcome.error["message"]
    assert api.stored == {} and server.auth == []
