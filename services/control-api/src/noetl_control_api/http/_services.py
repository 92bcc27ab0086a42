"""The one place the control-api's services are built from its settings: the app's wiring."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import structlog
from litestar.datastructures import State
from litestar.di import Provide
from noetl_common import LimitsReply, Snowflake
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._settings import CONFIGURED_TOKENS, Settings
from ..application import (
    CatalogService,
    ClaimService,
    CompatService,
    CredentialService,
    DeadLetterService,
    EventIngest,
    EventStreamService,
    ExecutionService,
    KeychainService,
    NodeLease,
    OidcVerifier,
    OutboxService,
    PlaybookCache,
    PlaybookKeychain,
    PluginService,
    Principal,
    ProjectionService,
    Recorder,
    RerunService,
    ResultService,
    RoleTable,
    SecretBox,
    StepLogService,
    StreamLimits,
    SummaryService,
    Sweeper,
    TokenService,
    WorkerService,
)

log = structlog.get_logger("noetl.control_api.auth")


@dataclass(frozen=True, kw_only=True)
class Services:
    """Everything the handlers, the middleware and the lifespan use, built by :func:`build_services`."""

    settings: Settings
    pool: AsyncConnectionPool
    notifier: store.OutboxNotifier
    event_notifier: store.KeyedNotifier
    done_notifier: store.KeyedNotifier
    node_lease: NodeLease | None
    oidc: OidcVerifier | None
    policy: RoleTable
    tokens: TokenService
    stream_limits: StreamLimits
    streams: EventStreamService
    catalog: CatalogService
    executions: ExecutionService
    ingest: EventIngest
    claims: ClaimService
    outbox: OutboxService
    projection: ProjectionService
    workers: WorkerService
    credentials: CredentialService
    keychain: KeychainService
    results: ResultService
    plugins: PluginService
    deadletter: DeadLetterService
    sweeper: Sweeper
    compat: CompatService
    summaries: SummaryService
    step_logs: StepLogService

    #: what route handlers never take by name: the plumbing under the use cases
    _NOT_INJECTED: ClassVar[frozenset[str]] = frozenset(
        {"settings", "pool", "notifier", "event_notifier", "done_notifier", "node_lease", "oidc", "policy", "sweeper"}
    )

    def dependencies(self) -> dict[str, Provide]:
        """A Litestar dependency per use-case service, named as the handlers' parameters."""
        return {
            field.name: _constant(getattr(self, field.name))
            for field in fields(self)
            if field.name not in self._NOT_INJECTED
        }

    @asynccontextmanager
    async def running(self, *, migrate: bool) -> AsyncIterator[None]:
        """Migrate, open the pool, start the listeners; undo on the way out."""
        settings = self.settings
        if migrate:
            await store.apply_migrations(settings.database_url)
        await self.pool.open(wait=True, timeout=30.0)
        try:
            if self.node_lease is not None:
                await self.node_lease.start()  # before any id is minted
            if settings.plugin_seed_dir:
                await self.plugins.seed(Path(settings.plugin_seed_dir))
            await self.notifier.start()
            await self.event_notifier.start()
            await self.done_notifier.start()
            self.tokens.start()
            self.sweeper.start()
            if "NOETL_ADMIN_TOKEN" not in settings.tokens and settings.oidc is None:
                log.warning(
                    "admin_token_missing",
                    detail="no NOETL_ADMIN_TOKEN and no OIDC issuer: only tokens already in"
                    " noetl.api_token can call the API (docs/security.md)",
                )
            yield
        finally:
            await self.sweeper.stop()
            await self.tokens.stop()
            if self.oidc is not None:
                await self.oidc.aclose()
            if self.node_lease is not None:
                await self.node_lease.stop()
            self.outbox.close()
            self.executions.close()
            await self.done_notifier.stop()
            await self.event_notifier.stop()
            await self.notifier.stop()
            await self.pool.close()


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, sync_to_thread=False)


def configured_principals(settings: Settings) -> dict[str, Principal]:
    """``{token: principal}`` of the tokens set in the environment (docs/security.md)."""
    return {
        settings.tokens[variable]: Principal(name=name, role=role, pool=pool, source="config")
        for variable, name, role, pool in CONFIGURED_TOKENS
        if variable in settings.tokens
    }


def build_services(settings: Settings, ids: Snowflake | None = None) -> Services:
    """Every service of one app; ``ids`` given (a test's) means no node id is leased."""
    pool = store.create_pool(settings.database_url, settings.db_pool_size)
    notifier = store.OutboxNotifier(settings.database_url)
    event_notifier = store.KeyedNotifier(settings.database_url, store.EVENT_CHANNEL)
    done_notifier = store.KeyedNotifier(settings.database_url, store.EXECUTION_DONE_CHANNEL)
    playbooks = PlaybookCache()
    lease_node = ids is None and settings.snowflake_node_lease
    if ids is None:
        epoch, node = settings.snowflake_epoch_ms, settings.snowflake_node_id
        ids = Snowflake(node) if epoch is None else Snowflake(node, epoch)
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
    ingest = EventIngest(
        pool,
        playbooks,
        recorder,
        lease_seconds=settings.command_lease_seconds,
        context_max_bytes=settings.event_result_context_max_bytes,
        arrow_limits=settings.arrow_limits,
        template_limits=settings.template_limits,
    )
    claims = ClaimService(pool, recorder, lease_seconds=settings.command_lease_seconds)
    oidc = OidcVerifier(settings.oidc) if settings.oidc is not None else None
    box = SecretBox(settings.credentials_key)
    outbox = OutboxService(
        pool,
        notifier,
        executions,
        lease_seconds=settings.outbox_lease_seconds,
        limits=LimitsReply(
            nats_max_payload=settings.nats_max_payload_bytes,
            max_event_bytes=settings.max_event_bytes,
            event_shard_count=settings.event_shard_count,
        ),
        retention=settings.retention,
    )
    deadletter = DeadLetterService(pool, claims, ingest)
    catalog = CatalogService(
        pool, playbooks, policy, max_bytes=settings.playbook_max_bytes, unknown_keys=settings.dsl_unknown_keys
    )
    keychain = KeychainService(pool, box, PlaybookKeychain(box, playbooks, settings.template_limits))
    return Services(
        settings=settings,
        pool=pool,
        notifier=notifier,
        event_notifier=event_notifier,
        done_notifier=done_notifier,
        node_lease=NodeLease(pool, ids, ttl_seconds=settings.node_lease_seconds) if lease_node else None,
        oidc=oidc,
        policy=policy,
        tokens=TokenService(
            pool,
            ids,
            configured=configured_principals(settings),
            cache_seconds=settings.auth_cache_seconds,
            oidc=oidc,
        ),
        stream_limits=StreamLimits(
            total=settings.sse_max_streams, per_principal=settings.sse_max_streams_per_principal
        ),
        streams=EventStreamService(pool, event_notifier, page_max_bytes=settings.page_max_bytes),
        catalog=catalog,
        executions=executions,
        ingest=ingest,
        claims=claims,
        outbox=outbox,
        projection=ProjectionService(pool),
        workers=WorkerService(pool, node_lease_seconds=settings.node_lease_seconds),
        credentials=CredentialService(pool, box),
        keychain=keychain,
        results=ResultService(pool, settings.arrow_limits),
        plugins=PluginService(pool),
        deadletter=deadletter,
        sweeper=Sweeper(
            pool,
            recorder,
            executions,
            deadletter,
            outbox,
            policy=settings.sweep,
            lease_seconds=settings.command_lease_seconds,
        ),
        compat=CompatService(
            pool,
            catalog,
            executions,
            keychain,
            RerunService(
                pool,
                playbooks,
                recorder,
                policy,
                payload_max_bytes=settings.execute_payload_max_bytes,
                template_limits=settings.template_limits,
            ),
            page_max_bytes=settings.page_max_bytes,
        ),
        summaries=SummaryService(pool, playbooks),
        step_logs=StepLogService(pool, page_max_bytes=settings.page_max_bytes),
    )


def services_of(state: State) -> Services:
    """The services an app built by ``create_app`` keeps in its state."""
    services: Services = state.services
    return services
