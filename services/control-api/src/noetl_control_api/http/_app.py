"""The Litestar application factory: wires settings → store → application → controllers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from noetl_common import LimitsReply, Snowflake, configure_logging

from .. import store
from .._settings import CONFIGURED_TOKENS, Settings
from ..application import (
    CatalogService,
    ClaimService,
    CredentialService,
    DeadLetterService,
    EventIngest,
    ExecutionService,
    KeychainService,
    NodeLease,
    OidcVerifier,
    OutboxService,
    PlaybookCache,
    Principal,
    ProjectionService,
    Recorder,
    ResultService,
    RoleTable,
    SecretBox,
    TokenService,
    WorkerService,
)
from ..application._plugins import PluginService
from ..application._stream import EventStreamService
from ..application._stream_limits import StreamLimits
from ._auth import auth_middleware, principal_of
from ._errors import EXCEPTION_HANDLERS
from ._internal import InternalController
from ._middleware import latency_middleware
from ._ops import OPS_HANDLERS
from ._plugins import PluginController
from ._public import (
    CatalogController,
    CommandController,
    EventController,
    ExecutionController,
    WorkerPoolController,
)
from ._secrets import (
    CredentialController,
    InternalSecretsController,
    KeychainController,
    ResultController,
)
from ._shutdown import release_long_polls_on_signal
from ._stream import StreamController
from ._tokens import TokenController, whoami


def _version() -> str:
    try:
        return version("noetl-control-api")
    except PackageNotFoundError:
        return "0.0.0"


def _provider(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state, name)

    return Provide(provide, sync_to_thread=False)


def _principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request.scope)


def configured_principals(settings: Settings) -> dict[str, Principal]:
    """``{token: principal}`` of the tokens set in the environment (docs/security.md)."""
    return {
        settings.tokens[variable]: Principal(name=name, role=role, pool=pool, source="config")
        for variable, name, role, pool in CONFIGURED_TOKENS
        if variable in settings.tokens
    }


def create_app(
    settings: Settings, *, apply_migrations: bool = True, ids: Snowflake | None = None
) -> Litestar:
    """Build the app; the pool opens (and migrations run) in the app's lifespan."""
    pool = store.create_pool(settings.database_url, settings.db_pool_size)
    notifier = store.OutboxNotifier(settings.database_url)
    event_notifier = store.KeyedNotifier(settings.database_url, store.EVENT_CHANNEL)
    done_notifier = store.KeyedNotifier(settings.database_url, store.EXECUTION_DONE_CHANNEL)
    playbooks = PlaybookCache()
    lease_node = ids is None and settings.snowflake_node_lease
    if ids is None:
        epoch, node = settings.snowflake_epoch_ms, settings.snowflake_node_id
        ids = Snowflake(node) if epoch is None else Snowflake(node, epoch)
    node_lease = NodeLease(pool, ids, ttl_seconds=settings.node_lease_seconds) if lease_node else None
    recorder = Recorder(
        ids,
        shard_count=settings.event_shard_count,
        server_url=settings.server_url,
        max_event_bytes=settings.max_event_bytes,
    )
    policy = RoleTable()
    executions = ExecutionService(
        pool,
        playbooks,
        recorder,
        done_notifier,
        policy,
        payload_max_bytes=settings.execute_payload_max_bytes,
        page_max_bytes=settings.page_max_bytes,
        template_limits=settings.template_limits,
    )
    limits = LimitsReply(
        nats_max_payload=settings.nats_max_payload_bytes, max_event_bytes=settings.max_event_bytes
    )
    oidc = OidcVerifier(settings.oidc) if settings.oidc is not None else None
    services: dict[str, Any] = {
        "settings": settings,
        "policy": policy,
        "tokens": TokenService(
            pool, ids, configured=configured_principals(settings), cache_seconds=settings.auth_cache_seconds, oidc=oidc
        ),
        "stream_limits": StreamLimits(
            total=settings.sse_max_streams, per_principal=settings.sse_max_streams_per_principal
        ),
        "pool": pool,
        "notifier": notifier,
        "event_notifier": event_notifier,
        "done_notifier": done_notifier,
        "streams": EventStreamService(pool, event_notifier, page_max_bytes=settings.page_max_bytes),
        "catalog": CatalogService(pool, playbooks, policy, max_bytes=settings.playbook_max_bytes),
        "executions": executions,
        "ingest": EventIngest(
            pool,
            playbooks,
            recorder,
            lease_seconds=settings.command_lease_seconds,
            context_max_bytes=settings.event_result_context_max_bytes,
            arrow_limits=settings.arrow_limits,
            template_limits=settings.template_limits,
        ),
        "claims": ClaimService(pool, recorder, lease_seconds=settings.command_lease_seconds),
        "outbox": OutboxService(
            pool,
            notifier,
            executions,
            lease_seconds=settings.outbox_lease_seconds,
            limits=limits,
            retention=settings.retention,
        ),
        "projection": ProjectionService(pool),
        "workers": WorkerService(pool, node_lease_seconds=settings.node_lease_seconds),
        "credentials": CredentialService(pool, box := SecretBox(settings.credentials_key)),
        "keychain": KeychainService(pool, box),
        "results": ResultService(pool, settings.arrow_limits),
        "plugins": PluginService(pool),
    }

    services["deadletter"] = DeadLetterService(pool, services["claims"], services["ingest"])

    @asynccontextmanager
    async def lifespan(_app: Litestar | None = None) -> AsyncIterator[None]:
        """Migrate, open the pool, start the listeners; undo on the way out."""
        if apply_migrations:
            await store.apply_migrations(settings.database_url)
        await pool.open(wait=True, timeout=30.0)
        try:
            if node_lease is not None:
                await node_lease.start()  # before any id is minted
            if settings.plugin_seed_dir:
                await services["plugins"].seed(Path(settings.plugin_seed_dir))
            await notifier.start()
            await event_notifier.start()
            await done_notifier.start()
            services["tokens"].start()
            if "NOETL_ADMIN_TOKEN" not in settings.tokens and settings.oidc is None:
                structlog.get_logger("noetl.control_api.auth").warning(
                    "no NOETL_ADMIN_TOKEN and no OIDC issuer: only tokens already in noetl.api_token"
                    " can call the API (docs/security.md)"
                )
            yield
        finally:
            await services["tokens"].stop()
            if oidc is not None:
                await oidc.aclose()
            if node_lease is not None:
                await node_lease.stop()
            services["outbox"].close()
            services["executions"].close()
            await done_notifier.stop()
            await event_notifier.stop()
            await notifier.stop()
            await pool.close()

    # exposed so an embedding host (or a test in its own event loop) can run it directly
    services["lifespan"] = lifespan

    return Litestar(
        route_handlers=[
            *OPS_HANDLERS,
            CatalogController,
            ExecutionController,
            StreamController,
            EventController,
            CommandController,
            WorkerPoolController,
            InternalController,
            CredentialController,
            KeychainController,
            ResultController,
            InternalSecretsController,
            PluginController,
            TokenController,
            whoami,
        ],
        dependencies={
            "principal": Provide(_principal, sync_to_thread=False),
            **{
                name: _provider(name)
                for name in services
                if name
                not in ("settings", "pool", "notifier", "event_notifier", "done_notifier", "lifespan", "policy")
            },
        },
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[latency_middleware, auth_middleware],
        lifespan=[lifespan],
        state=State(services),
        request_max_body_size=settings.request_max_body_bytes,
        openapi_config=OpenAPIConfig(title="NoETL control API", version=_version(), path="/schema"),
        logging_config=None,
        debug=False,
    )


def app_from_env() -> Litestar:
    """Factory for granian: settings from the environment, JSON logs in the worker process."""
    settings = Settings.from_env()
    configure_logging("control-api", settings.log_level)
    app = create_app(settings)
    app.on_startup.append(
        partial(release_long_polls_on_signal, app.state.outbox.close, app.state.executions.close)
    )
    return app
