"""Validation of client-supplied ids before they reach a bigint column."""

from __future__ import annotations

from noetl_common import parse_id

from .._errors import ValidationFailed


def client_id(value: object, field: str) -> int:
    """An id from a path, query or body; a bad one is a 400 naming the field."""
    try:
        return parse_id(value)
    except ValueError:
        raise ValidationFailed(f"{field} must be a positive 63-bit integer id, got {value!r:.80}") from None


def optional_id(value: object, field: str) -> int | None:
    return None if value is None else client_id(value, field)
