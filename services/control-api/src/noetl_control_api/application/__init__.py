"""Use cases of the control-api: each service owns its transactions and calls the store
and the pure orchestrator; the HTTP layer only parses, calls one of these and replies."""

from ._catalog import CatalogService
from ._claims import ClaimService
from ._deadletter import CommandFailReply, CommandFailRequest, DeadLetterService
from ._executions import ExecutionService
from ._ingest import EventIngest
from ._internal import OutboxService, ProjectionService
from ._nodes import NodeLease
from ._oidc import OidcSettings, OidcVerifier
from ._playbooks import PlaybookCache
from ._policy import ACTIONS, GRANTS, Policy, Principal, RoleTable, require
from ._recorder import Recorder
from ._results import ResultService
from ._secrets import CredentialService, KeychainService, SecretBox, check_key_present
from ._tokens import TokenCreate, TokenCreated, TokenList, TokenService, TokenView
from ._workers import WorkerRegisterReply, WorkerService

__all__ = [
    "ACTIONS",
    "GRANTS",
    "CatalogService",
    "ClaimService",
    "CommandFailReply",
    "CommandFailRequest",
    "CredentialService",
    "DeadLetterService",
    "EventIngest",
    "ExecutionService",
    "KeychainService",
    "NodeLease",
    "OidcSettings",
    "OidcVerifier",
    "OutboxService",
    "PlaybookCache",
    "Policy",
    "Principal",
    "ProjectionService",
    "Recorder",
    "ResultService",
    "RoleTable",
    "SecretBox",
    "TokenCreate",
    "TokenCreated",
    "TokenList",
    "TokenService",
    "TokenView",
    "WorkerRegisterReply",
    "WorkerService",
    "check_key_present",
    "require",
]
