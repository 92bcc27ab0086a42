"""The Litestar application factory: settings → services (``_services``) → controllers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from noetl_common import Snowflake, configure_logging, settle_heap

from .._settings import Settings
from ..application import Principal
from ._auth import auth_middleware, principal_of
from ._compat import CompatController
from ._errors import EXCEPTION_HANDLERS
from ._internal import InternalController
from ._logs import StepLogController
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
from ._results import ResultController
from ._secrets import CredentialController, InternalSecretsController, KeychainController
from ._services import build_services, services_of
from ._shutdown import release_long_polls_on_signal
from ._stream import StreamController
from ._tokens import TokenController, whoami
from ._ui import InspectorController


def _version() -> str:
    try:
        return version("noetl-control-api")
    except PackageNotFoundError:
        return "0.0.0"


def _principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request.scope)


def create_app(
    settings: Settings, *, apply_migrations: bool = True, ids: Snowflake | None = None
) -> Litestar:
    """Build the app; the pool opens (and migrations run) in the app's lifespan.

    ``app.state.services`` holds the :class:`~._services.Services`; ``app.state.lifespan()``
    runs the lifespan outside a server (an embedding host, a test in its own event loop).
    """
    services = build_services(settings, ids)

    @asynccontextmanager
    async def lifespan(_app: Litestar | None = None) -> AsyncIterator[None]:
        async with services.running(migrate=apply_migrations):
            yield

    return Litestar(
        route_handlers=[
            *OPS_HANDLERS,
            CatalogController,
            ExecutionController,
            StepLogController,
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
            CompatController,
            InspectorController,
            whoami,
        ],
        dependencies={"principal": Provide(_principal, sync_to_thread=False), **services.dependencies()},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[latency_middleware, auth_middleware],
        lifespan=[lifespan],
        state=State({"services": services, "lifespan": lifespan}),
        request_max_body_size=settings.request_max_body_bytes,
        openapi_config=OpenAPIConfig(title="NoETL control API", version=_version(), path="/schema"),
        logging_config=None,
        debug=False,
    )


def app_from_env() -> Litestar:
    """Factory for uvicorn (`_server.serve`): settings from the environment, JSON logs."""
    settings = Settings.from_env()
    configure_logging("control-api", settings.log_level)
    app = create_app(settings)
    services = services_of(app.state)

    def release_on_signal() -> None:  # no parameter: Litestar would pass the app as one more release
        release_long_polls_on_signal(services.outbox.close, services.executions.close)

    app.on_startup.append(release_on_signal)
    app.on_startup.append(settle_heap)  # the app is built: set its objects aside from the collector
    return app
