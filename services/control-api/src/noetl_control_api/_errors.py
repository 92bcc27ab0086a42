"""Domain errors of the control-api; the HTTP layer maps each to one ErrorBody."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every expected failure; carries the HTTP status and the short error code."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, detail: str, extra: dict[str, Any] | None = None, *, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.retry_after = retry_after  # seconds; sent as Retry-After when set


class ValidationFailed(DomainError):
    """The request is well-formed JSON but its content is not acceptable."""

    status_code = 400
    code = "validation_error"


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class StaleAttempt(DomainError):
    """An event from an attempt that no longer holds the command."""

    status_code = 409
    code = "stale_attempt"


class LeaseHeld(DomainError):
    """A claim on a command whose lease is still live: come back when it expires.

    Not 409: a redelivery meets a live lease when the holder died (its lease runs out)
    or lost NATS; answering "retry later" lets the redelivered message claim the command
    once the lease expires, instead of being dropped and losing the command.
    """

    status_code = 429
    code = "lease_held"


class InvalidPlaybook(DomainError):
    status_code = 422
    code = "invalid_playbook"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class Unauthenticated(DomainError):
    """No credential, or one that is unknown, expired or revoked."""

    status_code = 401
    code = "unauthenticated"


class TooManyStreams(DomainError):
    """A principal (or the process) holds as many open event streams as it may."""

    status_code = 429
    code = "too_many_streams"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class Unavailable(DomainError):
    status_code = 503
    code = "unavailable"


class Unprocessable(DomainError):
    """Well-formed and valid in shape, but naming something the target does not have (a
    rerun's ``from_step`` that is no step of the playbook)."""

    status_code = 422
    code = "unprocessable"
