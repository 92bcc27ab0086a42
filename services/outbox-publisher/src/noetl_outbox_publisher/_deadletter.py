"""Rows that cannot be published: what is too large for NATS, and their copy in ``NOETL_DLQ``.

A row is never retried forever. A payload over the server's ``max_payload`` cannot succeed
on any retry (nats-py refuses it with ``MaxPayloadError``, and one over the limit by its
headers alone would make the server drop the connection, so the size is checked here
first); any other failure is retried until ``PUBLISHER_MAX_ATTEMPTS``. Either way the row
is then copied to ``noetl.dlq.outbox.<execution_id>`` — the original subject, ids and
error in headers, the body cut to what fits — and marked dead through the control-api.
"""

from __future__ import annotations

import nats.errors
from noetl_common import OutboxRow, outbox_dlq_subject

#: Bytes NATS adds to a message's headers besides the headers themselves ("NATS/1.0\r\n", "\r\n").
_HEADER_FRAME = 12
#: Longest error text carried in a header.
_MAX_ERROR_CHARS = 1000


class PayloadOverMax(nats.errors.MaxPayloadError):
    """A message too large for the server, found before it is sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__()
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"the message is {self.size} bytes with its headers, over the NATS server's max_payload {self.limit}"


def message_bytes(data: bytes, headers: dict[str, str]) -> int:
    """What a message weighs against ``max_payload``: body and headers."""
    return len(data) + _HEADER_FRAME + sum(len(k) + len(v) + 4 for k, v in headers.items())


def is_permanent(error: BaseException | None) -> bool:
    """A failure no retry can cure."""
    return isinstance(error, nats.errors.MaxPayloadError)


def _header_value(text: str) -> str:
    # a header value is one line of text
    return " ".join(text.split())[:_MAX_ERROR_CHARS]


def dead_letter_message(
    row: OutboxRow, data: bytes, error: str, max_payload: int
) -> tuple[str, bytes, dict[str, str]]:
    """Subject, body and headers of a row's copy in NOETL_DLQ; the body is cut to fit."""
    headers = {
        # a row dead-lettered twice (its mark-dead lost) is stored once
        "Nats-Msg-Id": f"outbox-{row.outbox_id}",
        "Noetl-Original-Subject": row.subject,
        "Noetl-Outbox-Id": str(row.outbox_id),
        "Noetl-Event-Id": str(row.event_id),
        "Noetl-Execution-Id": str(row.execution_id),
        "Noetl-Error": _header_value(error),
    }
    if message_bytes(data, headers) > max_payload:
        headers["Noetl-Body"] = f"truncated, {len(data)} bytes in all"
        room = max(0, max_payload - message_bytes(b"", headers) - 64)
        data = data[:room]
    return outbox_dlq_subject(row.execution_id), data, headers
