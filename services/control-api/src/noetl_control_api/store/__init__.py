"""Postgres adapters: every SQL statement of the control-api lives in this package."""

from . import _catalog as catalog
from . import _commands as commands
from . import _events as events
from . import _executions as executions
from . import _nodes as nodes
from . import _outbox as outbox
from . import _plugins as plugins
from . import _results as results
from . import _retention as retention
from . import _secrets as secrets
from . import _step_logs as step_logs
from . import _summary as summary
from . import _sweeps as sweeps
from . import _tokens as tokens
from . import _workers as workers
from ._catalog import CatalogEntry
from ._commands import CommandRow, NewCommand
from ._db import configure_json, create_pool
from ._executions import ExecutionRow
from ._migrate import apply_migrations, load_migrations
from ._notifier import (
    EVENT_CHANNEL,
    EXECUTION_DONE_CHANNEL,
    OUTBOX_CHANNEL,
    WAKE_ALL,
    KeyedNotifier,
    OutboxNotifier,
)
from ._outbox import OutboxInsert
from ._plugins import PluginRow
from ._secrets import CredentialRow, KeychainRow
from ._step_logs import LogInsert
from ._time import iso
from ._tokens import TokenRow
from ._workers import WorkerRow

__all__ = [
    "EVENT_CHANNEL",
    "EXECUTION_DONE_CHANNEL",
    "OUTBOX_CHANNEL",
    "WAKE_ALL",
    "CatalogEntry",
    "CommandRow",
    "CredentialRow",
    "ExecutionRow",
    "KeychainRow",
    "KeyedNotifier",
    "LogInsert",
    "NewCommand",
    "OutboxInsert",
    "OutboxNotifier",
    "PluginRow",
    "TokenRow",
    "WorkerRow",
    "apply_migrations",
    "catalog",
    "commands",
    "configure_json",
    "create_pool",
    "events",
    "executions",
    "iso",
    "load_migrations",
    "nodes",
    "outbox",
    "plugins",
    "results",
    "retention",
    "secrets",
    "step_logs",
    "summary",
    "sweeps",
    "tokens",
    "workers",
]
