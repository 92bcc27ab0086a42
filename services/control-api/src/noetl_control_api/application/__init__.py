"""Use cases of the control-api: each service owns its transactions and calls the store
and the pure orchestrator; the HTTP layer only parses, calls one of these and replies."""

from ._catalog import CatalogService
from ._claims import ClaimService
from ._executions import ExecutionService
from ._ingest import EventIngest
from ._internal import OutboxService, ProjectionService
from ._playbooks import PlaybookCache
from ._recorder import Recorder
from ._workers import WorkerService

__all__ = [
    "CatalogService",
    "ClaimService",
    "EventIngest",
    "ExecutionService",
    "OutboxService",
    "PlaybookCache",
    "ProjectionService",
    "Recorder",
    "WorkerService",
]
