"""Use cases of the control-api: each service owns its transactions and calls the store
and the pure orchestrator; the HTTP layer only parses, calls one of these and replies.

This module is the layer's whole public face: the services, the bodies they take and
return, and the few checks the HTTP layer shares with them.
"""

from .._options import OidcSettings, RetentionPolicy
from ._catalog import CatalogService
from ._claims import ClaimService
from ._compat import CompatService
from ._compat_views import (
    CatalogEntries,
    CatalogListRequest,
    ExecutionEntry,
    ExecutionStatus,
    KeychainCatalogList,
    RegisterBatchReply,
    RegisterBatchRequest,
    RerunRequest,
    WorkerPools,
)
from ._credentials import CredentialIn, CredentialList, CredentialService, CredentialView
from ._deadletter import CommandFailReply, CommandFailRequest, DeadLetterService
from ._executions import ExecutionService
from ._ids import client_id, optional_id
from ._ingest import EventIngest
from ._keychain import KeychainIn, KeychainList, KeychainService, KeychainView
from ._keychain_block import KeychainTokenIn, PlaybookKeychain
from ._nodes import NodeLease
from ._oidc import OidcVerifier
from ._outbox import OutboxService
from ._playbooks import PlaybookCache
from ._plugins import ObjectReply, PluginList, PluginService, PublishReply, decode_publish
from ._policy import ACTIONS, GRANTS, HUMAN_ROLES, Policy, Principal, RoleTable, require
from ._projection import ProjectionService
from ._recorder import Recorder
from ._replay import ReplayReply
from ._rerun import RerunReply, RerunService
from ._results import ResultService
from ._secrets import ResolveRequest, SecretBox, check_key_present
from ._step_logs import LogPage, StepLogService
from ._stream import EventStreamService
from ._stream_limits import StreamLimits
from ._summary import SummaryService
from ._summary_views import ExecutionSummary
from ._sweeper import Sweeper, SweepReport
from ._tokens import TokenCreate, TokenCreated, TokenList, TokenService, TokenView
from ._views import (
    CancelReply,
    CancelRequest,
    CatalogList,
    CommandView,
    ExecuteReply,
    ExecuteRequest,
    ExecutionList,
    ExecutionView,
    PurgeReply,
    PurgeRequest,
    RegisterReply,
    RegisterRequest,
    ResourceReply,
    ResourceRequest,
    WorkerRef,
)
from ._workers import WorkerRegisterReply, WorkerService

__all__ = [
    "ACTIONS",
    "GRANTS",
    "HUMAN_ROLES",
    "CancelReply",
    "CancelRequest",
    "CatalogEntries",
    "CatalogList",
    "CatalogListRequest",
    "CatalogService",
    "ClaimService",
    "CommandFailReply",
    "CommandFailRequest",
    "CommandView",
    "CompatService",
    "CredentialIn",
    "CredentialList",
    "CredentialService",
    "CredentialView",
    "DeadLetterService",
    "EventIngest",
    "EventStreamService",
    "ExecuteReply",
    "ExecuteRequest",
    "ExecutionEntry",
    "ExecutionList",
    "ExecutionService",
    "ExecutionStatus",
    "ExecutionSummary",
    "ExecutionView",
    "KeychainCatalogList",
    "KeychainIn",
    "KeychainList",
    "KeychainService",
    "KeychainTokenIn",
    "KeychainView",
    "LogPage",
    "NodeLease",
    "ObjectReply",
    "OidcSettings",
    "OidcVerifier",
    "OutboxService",
    "PlaybookCache",
    "PlaybookKeychain",
    "PluginList",
    "PluginService",
    "Policy",
    "Principal",
    "ProjectionService",
    "PublishReply",
    "PurgeReply",
    "PurgeRequest",
    "Recorder",
    "RegisterBatchReply",
    "RegisterBatchRequest",
    "RegisterReply",
    "RegisterRequest",
    "ReplayReply",
    "RerunReply",
    "RerunRequest",
    "RerunService",
    "ResolveRequest",
    "ResourceReply",
    "ResourceRequest",
    "ResultService",
    "RetentionPolicy",
    "RoleTable",
    "SecretBox",
    "StepLogService",
    "StreamLimits",
    "SummaryService",
    "SweepReport",
    "Sweeper",
    "TokenCreate",
    "TokenCreated",
    "TokenList",
    "TokenService",
    "TokenView",
    "WorkerPools",
    "WorkerRef",
    "WorkerRegisterReply",
    "WorkerService",
    "check_key_present",
    "client_id",
    "decode_publish",
    "optional_id",
    "require",
]
