"""Wire shapes shared by every service (msgspec structs; JSON on the wire).

Ids are JSON integers; inputs also accept decimal strings (``parse_id``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

JSON = dict[str, Any]

#: Longest name on the wire: event types, step names (the DSL refuses longer ones), worker ids.
MAX_NAME_CHARS = 200
#: Longest catalog path (the catalog refuses longer ones).
MAX_PATH_CHARS = 512
#: Most keys an event's ``meta`` may have (its JSON size is bounded by the control-api).
MAX_META_KEYS = 64
#: Most events in one ``POST /api/events`` batch.
MAX_BATCH_EVENTS = 1000
#: Most output lines of one command attempt, and the longest line (the worker keeps fewer).
MAX_STEP_LOG_LINES = 10_000
MAX_LOG_LINE_CHARS = 16 * 1024 * 1024

Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_CHARS)]
_Short = Annotated[str, msgspec.Meta(max_length=64)]
_Path = Annotated[str, msgspec.Meta(max_length=MAX_PATH_CHARS)]
_Meta = Annotated[JSON, msgspec.Meta(max_length=MAX_META_KEYS)]


class Event(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One execution event: posted by workers, written by control-api, carried on
    NOETL_EVENTS and projected into ``noetl.event``. Its names are bounded on the wire
    (decoding refuses longer ones); ``context`` and ``meta`` by the control-api's byte limits."""

    execution_id: int
    event_type: Name
    event_id: int | None = None
    step: Name | None = None
    status: _Short | None = None
    created_at: _Short | None = None  # RFC 3339, UTC
    context: JSON | None = None
    worker_id: Name | None = None
    meta: _Meta | None = None  # {attempt, command_id, ...}
    parent_execution_id: int | None = None
    catalog_path: _Path | None = None


class EagerRequest(msgspec.Struct, kw_only=True):
    """Eager dispatch: the posting worker (of ``pool``) takes commands its batch causes, at
    most ``slots`` (one per command the batch finishes, so each freed slot can get one)."""

    worker_id: str
    pool: str
    slots: int = 1


class StepLogLine(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One line a step's task printed (``stdout``, ``stderr``) or logged (``log``, with its
    level), already scrubbed by the worker; ``at`` RFC 3339, UTC."""

    stream: Literal["stdout", "stderr", "log"]
    at: _Short
    text: Annotated[str, msgspec.Meta(max_length=MAX_LOG_LINE_CHARS)]
    level: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    #: this line is the marker of output dropped past the worker's bound
    truncated: bool = False


class StepLogs(msgspec.Struct, kw_only=True):
    """The output of one command attempt, sent beside its terminal events."""

    command_id: int
    lines: Annotated[list[StepLogLine], msgspec.Meta(max_length=MAX_STEP_LOG_LINES)]


class EventBatch(msgspec.Struct, omit_defaults=True, kw_only=True):
    events: Annotated[list[Event], msgspec.Meta(max_length=MAX_BATCH_EVENTS)]
    eager: EagerRequest | None = None
    #: step logs of the commands whose terminal events the batch carries
    logs: Annotated[list[StepLogs], msgspec.Meta(max_length=MAX_BATCH_EVENTS)] | None = None


class EventsReply(msgspec.Struct, kw_only=True):
    accepted: int
    duplicates: int = 0
    #: commands claimed for the worker in the batch's transaction (eager dispatch); absent
    #: from the reply when there are none
    commands: list[ClaimReply] | msgspec.UnsetType = msgspec.UNSET


class CommandNotification(msgspec.Struct, kw_only=True):
    """The message on NOETL_COMMANDS; ``event_id`` is the command.issued id and claim key."""

    execution_id: int
    event_id: int
    command_id: int
    step: str
    server_url: str
    execution_pool: str


class Rule(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One task rule, already normalised from `eval` or `spec.policy.rules`.

    ``when`` None means the rule always matches (an `else` rule). ``set`` keys are
    scoped names such as ``ctx.total`` or ``iter.page``.
    """

    do: str = "continue"  # continue | retry | jump | break | fail
    when: str | None = None
    attempts: int | None = None
    backoff: str | None = None  # none | fixed | linear | exponential
    delay: float | None = None
    to: str | None = None
    set: JSON | None = None


class TaskSpec(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One task of a step's tool pipeline. ``config`` is the tool's own keys."""

    name: str
    kind: str
    config: JSON = msgspec.field(default_factory=dict)
    rules: list[Rule] = msgspec.field(default_factory=list)


class CommandSpec(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What a worker needs to run one step run: the pipeline and its template context."""

    tasks: list[TaskSpec]
    args: JSON = msgspec.field(default_factory=dict)
    context: JSON = msgspec.field(default_factory=dict)
    timeout_seconds: float | None = None


class ClaimRequest(msgspec.Struct, kw_only=True):
    worker_id: str


class ClaimReply(msgspec.Struct, kw_only=True):
    execution_id: int
    event_id: int
    command_id: int
    step: str
    attempt: int
    lease_seconds: float
    pool: str
    tool_kind: str
    command: CommandSpec
    catalog_path: str | None = None


class OutboxRow(msgspec.Struct, kw_only=True):
    outbox_id: int
    event_id: int
    execution_id: int
    subject: str
    #: the message body; the control-api passes the JSON text it stored as ``Raw`` (never
    #: parsed on its way from the outbox to the reply), a reader gets it decoded
    payload: JSON | msgspec.Raw
    attempts: int = 0


class OutboxClaimRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    limit: int = 100
    wait_ms: int = 0
    #: rows the publisher published since its last claim: marked before the claim looks, so a
    #: steady flow needs no mark-published call of its own
    published: list[int] = msgspec.field(default_factory=list)


class OutboxClaimReply(msgspec.Struct, kw_only=True):
    rows: list[OutboxRow]
    claimed: int
    #: how many of ``published`` changed; UNSET from a control-api that does not mark on claim
    marked: int | msgspec.UnsetType = msgspec.UNSET


class MarkPublishedRequest(msgspec.Struct, kw_only=True):
    outbox_ids: list[int]


class MarkPublishedReply(msgspec.Struct, kw_only=True):
    marked: int


class MarkFailedRequest(msgspec.Struct, kw_only=True):
    outbox_id: int
    error: str
    attempts: int
    max_delay_seconds: float = 60.0


class MarkFailedReply(msgspec.Struct, kw_only=True):
    marked: int
    available_at_in: float


class MarkDeadRequest(msgspec.Struct, kw_only=True):
    """A row that will never be published (``POST /api/internal/outbox/mark-dead``)."""

    outbox_id: int
    error: str


class MarkDeadReply(msgspec.Struct, kw_only=True):
    """``marked``: the row became FAILED; ``execution_failed``: its execution was failed
    by this call (False when it had ended already)."""

    marked: int
    execution_failed: bool


class LimitsReply(msgspec.Struct, kw_only=True):
    """``GET /api/internal/limits``: the NATS max payload the control-api was configured
    for, the largest outbox payload it writes (that minus a margin for headers), and the
    number of event shards it spreads event subjects over (``NOETL_EVENT_SHARD_COUNT``; None
    from a control-api that does not say)."""

    nats_max_payload: int
    max_event_bytes: int
    event_shard_count: int | None = None


class PendingCountReply(msgspec.Struct, kw_only=True):
    pending: int


class ProjectRequest(msgspec.Struct, kw_only=True):
    events: list[Event]


#: an absent or null document of a :class:`ProjectedEvent`
NULL_DOCUMENT = msgspec.Raw(b"null")


class ProjectedEvent(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An :class:`Event` as the projection reads it (the body of ``ProjectRequest`` on the
    control-api's side): ``context`` and ``meta`` stay the JSON text they came as, checked
    for syntax by the decoder and written to the event log without being built into objects
    and encoded again."""

    execution_id: int
    event_type: Name
    event_id: int | None = None
    step: Name | None = None
    status: _Short | None = None
    created_at: _Short | None = None
    context: msgspec.Raw = NULL_DOCUMENT
    worker_id: Name | None = None
    meta: msgspec.Raw = NULL_DOCUMENT
    parent_execution_id: int | None = None
    catalog_path: _Path | None = None


class ProjectBody(msgspec.Struct, kw_only=True):
    events: list[ProjectedEvent]


class ProjectReply(msgspec.Struct, kw_only=True):
    projected: int
    duplicates: int


class WorkerRegistration(msgspec.Struct, omit_defaults=True, kw_only=True):
    worker_id: str
    pool: str
    capacity: int = 1
    hostname: str | None = None
    version: str | None = None
    meta: JSON | None = None


class WorkerHeartbeat(msgspec.Struct, omit_defaults=True, kw_only=True):
    worker_id: str
    pool: str | None = None
    in_flight: int = 0


class ErrorBody(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The one error shape of every HTTP API in the suite."""

    status_code: int
    error: str  # short machine-readable code, e.g. "not_found", "invalid_playbook"
    detail: str
    extra: JSON | None = None


def outbox_delay_seconds(attempts: int, max_delay_seconds: float) -> float:
    """Backoff of a failed outbox row: min(max_delay, 2 ** min(8, max(0, attempts - 1)))."""
    return float(min(max_delay_seconds, 2 ** min(8, max(0, attempts - 1))))
