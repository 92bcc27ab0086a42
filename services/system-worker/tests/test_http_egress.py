"""The http tool's egress policy and credential scope, against real servers on loopback.

Every socket the test process connects is recorded through the ``socket.connect`` audit
event, so "refused before any connection" is observed, not inferred from an error type.
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import trustme
from noetl_common import CommandSpec, TaskSpec
from noetl_dev.fakes import FakeControlPlane
from noetl_system_worker import PipelineRunner, StepOutcome, WorkerConfig, default_registry
from noetl_system_worker._egress import EgressPolicy, EgressRefused, parse_networks
from noetl_system_worker._runtime import ToolRuntime, current_runtime
from noetl_system_worker.tools import run_http, run_secrets
from noetl_system_worker.tools._http import MAX_REDIRECTS

#: Addresses of every socket.connect made by this process, in order.
CONNECTS: list[Any] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        CONNECTS.append(args[1])


sys.addaudithook(_audit)

#: What the dev stack and the test harness set: loopback allowed, link-local still refused.
DEV = EgressPolicy.configured(allow=parse_networks("127.0.0.0/8"))


@dataclass
class Seen:
    """One request a server received."""

    path: str
    headers: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    """``.../redirect?to=URL[&code=N]``, ``/hops/<n>`` (n redirects to go), anything else echoes."""

    server: Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.seen.append(Seen(url.path, {k.lower(): v for k, v in self.headers.items()}))
        query = parse_qs(url.query)
        if url.path.endswith("/redirect"):
            return self._redirect(int(query.get("code", ["302"])[0]), query["to"][0])
        if url.path.startswith("/hops/"):
            left = int(url.path.rsplit("/", 1)[1])
            if left > 0:
                return self._redirect(302, f"/hops/{left - 1}")
        data = json.dumps({"path": url.path, "sni": self.server.sni}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _redirect(self, code: int, to: str) -> None:
        self.send_response(code)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    seen: list[Seen]
    sni: list[str | None]

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@dataclass
class Servers:
    """Start local servers for a test; all are stopped after it."""

    running: list[Server] = field(default_factory=list)

    def start(self, context: ssl.SSLContext | None = None) -> Server:
        server = Server(("127.0.0.1", 0), Handler)
        server.seen, server.sni = [], []
        if context is not None:
            context.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.running.append(server)
        return server


@pytest.fixture
def servers() -> Iterator[Servers]:
    started = Servers()
    try:
        yield started
    finally:
        for server in started.running:
            server.shutdown()
            server.server_close()


@pytest.fixture
def connects() -> list[Any]:
    """The connections made from here on (a live view: read it after the call)."""
    CONNECTS.clear()
    return CONNECTS


def install(policy: EgressPolicy, **kwargs: Any) -> ToolRuntime:
    rt = ToolRuntime(egress=policy, **kwargs)
    current_runtime.set(rt)
    return rt


def bearer(**data: Any) -> FakeControlPlane:
    """A control-api that resolves the bearer credential ``api`` with ``data``."""
    return FakeControlPlane(credentials={"api": {"name": "api", "credential_type": "bearer", "data": data}})


async def run_task(task: TaskSpec) -> StepOutcome:
    return await PipelineRunner(default_registry()).run(CommandSpec(tasks=[task], args={}, context={}))


# -- refused addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",  # IPv4-mapped IPv6
        "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one decimal number
        "http://0251.0376.0124776/latest/meta-data/",  # ... in octal, three parts
        "http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/",  # ... in hexadecimal
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # ... behind NAT64
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fe80::1]/",
        "http://0.0.0.0:9/",
        "http://[::]:9/",
        "http://[::1]:9/",  # only 127.0.0.0/8 is allowed here
    ],
)
async def test_metadata_link_local_and_unspecified_addresses_are_refused_before_connecting(
    url: str, connects: list[Any]
) -> None:
    install(DEV)

    with pytest.raises(EgressRefused) as caught:
        await run_http({"url": url, "timeout": 5}, {}, {})

    assert connects == []
    message = str(caught.value)
    assert repr(httpx.URL(url).host) in message
    assert "WORKER_HTTP_ALLOW_CIDRS" in message and "WORKER_HTTP_ALLOW_HOSTS" in message


async def test_metadata_address_names_the_address_it_leads_to(connects: list[Any]) -> None:
    install(DEV)

    with pytest.raises(EgressRefused) as caught:
        await run_http({"url": "http://[::ffff:169.254.169.254]/"}, {}, {})

    assert "169.254.169.254, in 169.254.0.0/16 (link-local, cloud metadata)" in str(caught.value)


async def test_a_refusal_is_a_task_error_naming_host_and_setting(connects: list[Any]) -> None:
    install(DEV)

    out = await run_task(
        TaskSpec(name="meta", kind="http", config={"url": "http://169.254.169.254/latest/meta-data/"})
    )

    assert not out.ok and out.error is not None
    assert out.error["type"] == "EgressRefused" and out.error["task"] == "meta"
    assert "'169.254.169.254'" in out.error["message"] and "WORKER_HTTP_ALLOW_CIDRS" in out.error["message"]
    assert connects == []


async def test_a_name_that_resolves_to_a_denied_address_is_refused(
    servers: Servers, connects: list[Any]
) -> None:
    server = servers.start()
    install(EgressPolicy())

    for url in (f"http://localhost:{server.port}/", f"http://127.0.0.1:{server.port}/"):
        with pytest.raises(EgressRefused, match="loopback"):
            await run_http({"url": url}, {}, {})

    assert connects == [] and server.seen == []


async def test_a_name_that_does_not_resolve_is_a_connect_error_naming_it(connects: list[Any]) -> None:
    install(DEV)

    out = await run_task(TaskSpec(name="t", kind="http", config={"url": "http://no-such-host.invalid/"}))

    assert not out.ok and out.error is not None and out.error["type"] == "ConnectError"
    assert "'no-such-host.invalid'" in out.error["message"] and connects == []


# -- the allow-lists -------------------------------------------------------------------------


def policy(**env: str) -> EgressPolicy:
    base = {
        "NOETL_SERVER_URL": "http://api:8082",
        "NOETL_API_TOKEN": "worker-token-for-the-egress-tests-0123456789",
    }
    return WorkerConfig.from_env({**base, **env}).http_egress


async def test_allow_cidrs_open_a_denied_range(servers: Servers) -> None:
    server = servers.start()
    install(policy(WORKER_HTTP_ALLOW_CIDRS="127.0.0.0/8"))

    result = await run_http({"url": f"http://127.0.0.1:{server.port}/ok"}, {}, {})

    assert result["body"]["path"] == "/ok"


async def test_allow_hosts_open_a_name_but_not_its_address(servers: Servers) -> None:
    server = servers.start()
    install(policy(WORKER_HTTP_ALLOW_HOSTS="localhost"))

    result = await run_http({"url": f"http://localhost:{server.port}/ok"}, {}, {})
    with pytest.raises(EgressRefused):
        await run_http({"url": f"http://127.0.0.1:{server.port}/ok"}, {}, {})

    assert result["body"]["path"] == "/ok" and len(server.seen) == 1
    assert server.seen[0].headers["host"] == f"localhost:{server.port}"


async def test_deny_cidrs_refuse_more_and_name_their_setting(connects: list[Any]) -> None:
    install(policy(WORKER_HTTP_DENY_CIDRS="10.0.0.0/8, fd12::/16"))

    with pytest.raises(EgressRefused, match=r"10\.0\.0\.0/8 \(denied by WORKER_HTTP_DENY_CIDRS\)"):
        await run_http({"url": "http://10.96.0.1/api"}, {}, {})

    assert connects == []


# -- redirects -----------------------------------------------------------------------------------


async def test_a_redirect_to_the_metadata_address_is_refused_at_the_hop(
    servers: Servers, connects: list[Any]
) -> None:
    server = servers.start()
    install(DEV)
    url = f"http://127.0.0.1:{server.port}/redirect?to=http://169.254.169.254/latest/meta-data/"

    with pytest.raises(EgressRefused, match=re.escape("'169.254.169.254'")):
        await run_http({"url": url}, {}, {})

    assert [s.path for s in server.seen] == ["/redirect"]
    assert {address[0] for address in connects} == {"127.0.0.1"}


async def test_redirects_are_followed_up_to_the_limit(servers: Servers) -> None:
    server = servers.start()
    install(DEV)
    base = f"http://127.0.0.1:{server.port}"

    followed = await run_http({"url": f"{base}/hops/{MAX_REDIRECTS}"}, {}, {})
    server.seen.clear()
    out = await run_task(TaskSpec(name="t", kind="http", config={"url": f"{base}/hops/{MAX_REDIRECTS + 1}"}))

    assert followed["body"]["path"] == "/hops/0"
    assert not out.ok and out.error is not None and out.error["type"] == "TooManyRedirects"
    assert len(server.seen) == MAX_REDIRECTS + 1


async def test_a_cross_origin_redirect_drops_every_credential(servers: Servers) -> None:
    first, other = servers.start(), servers.start()
    source = bearer(token="tok-abcdef-123")
    source.keychain["partner_key"] = "kc-secret-9876"
    install(DEV, api=source)
    key = (await run_secrets({"name": "partner_key"}, {}, {}))["value"]
    headers = {"Cookie": "session=s1", "X-Partner-Key": key, "X-Trace": "t-1"}
    base = f"http://127.0.0.1:{first.port}"

    await run_http({"url": f"{base}/redirect?to=/landing", "auth": "api", "headers": headers}, {}, {})
    away = f"http://127.0.0.1:{other.port}/landing"
    await run_http({"url": f"{base}/redirect?to={away}", "auth": "api", "headers": headers}, {}, {})

    same_origin = first.seen[1].headers
    assert same_origin["authorization"] == "Bearer tok-abcdef-123" and same_origin["cookie"] == "session=s1"
    assert first.seen[2].headers["authorization"] == "Bearer tok-abcdef-123"
    crossed = other.seen[0].headers
    assert "authorization" not in crossed and "cookie" not in crossed and "x-partner-key" not in crossed
    assert crossed["x-trace"] == "t-1" and crossed["host"] == f"127.0.0.1:{other.port}"


# -- credential scope ----------------------------------------------------------------------------


async def test_a_credential_goes_only_to_its_allowed_hosts(servers: Servers, connects: list[Any]) -> None:
    server = servers.start()
    install(DEV, api=bearer(token="tok-abcdef-123", allowed_hosts=["api.example.com", "*.example.org"]))

    with pytest.raises(PermissionError, match=re.escape("credential 'api' may not be sent to '127.0.0.1'")):
        await run_http({"url": f"http://127.0.0.1:{server.port}/x", "auth": "api"}, {}, {})

    assert connects == [] and server.seen == []


async def test_a_credential_with_base_url_is_sent_only_below_it(servers: Servers) -> None:
    server = servers.start()
    base = f"http://127.0.0.1:{server.port}"
    install(DEV, api=bearer(token="tok-abcdef-123", base_url=f"{base}/api/"))

    await run_http({"url": f"{base}/api/v1/items", "auth": "api"}, {}, {})
    with pytest.raises(PermissionError, match="base_url"):
        await run_http({"url": f"{base}/apix", "auth": "api"}, {}, {})
    await run_http({"url": f"{base}/api/redirect?to=/elsewhere", "auth": "api"}, {}, {})

    paths = [(s.path, s.headers.get("authorization")) for s in server.seen]
    assert paths == [
        ("/api/v1/items", "Bearer tok-abcdef-123"),
        ("/api/redirect", "Bearer tok-abcdef-123"),
        ("/elsewhere", None),
    ]


# -- connecting to the checked address --------------------------------------------------------


async def test_tls_is_verified_against_the_name_while_connecting_to_the_checked_address(
    servers: Servers, connects: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    server = servers.start(context)
    install(policy(WORKER_HTTP_ALLOW_HOSTS="localhost"))

    result = await run_http({"url": f"https://localhost:{server.port}/tls"}, {}, {})

    assert result["body"] == {"path": "/tls", "sni": ["localhost"]}
    assert server.seen[0].headers["host"] == f"localhost:{server.port}"
    assert ("127.0.0.1", server.port) in [tuple(a[:2]) for a in connects]


async def test_proxies_from_the_environment_are_not_used(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, proxy = servers.start(), servers.start()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    install(DEV)

    await run_http({"url": f"http://127.0.0.1:{target.port}/direct"}, {}, {})

    assert [s.path for s in target.seen] == ["/direct"] and proxy.seen == []
