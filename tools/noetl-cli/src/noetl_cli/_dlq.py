"""``noetl dlq list|replay``: inspect and re-drive ``NOETL_DLQ``.

The CLI reads and writes JetStream itself, with the NATS credentials of its environment
(``NATS_URL``, ``NATS_USER``, ``NATS_PASSWORD``), rather than through a control-api route: the
control-api owns Postgres and connects to nothing else, and the DLQ is a stream, whose
messages are NATS artefacts (subject, sequence, headers). docs/decisions.md says why.

What the services park there (docs/pipeline.md, docs/worker.md): the worker a command
notification on ``noetl.dlq.<its subject>`` (reasons ``undecodable``, ``max_deliver``,
``refused``), the projector an event on ``noetl.dlq.<its subject>`` (``undecodable``,
``rejected``, ``max_deliver``), the publisher an outbox row on ``noetl.dlq.outbox.<execution_id>``;
each with ``Noetl-Original-Subject`` and ``Noetl-Error``. Replaying publishes the body on its
original subject again (JetStream stores it in ``NOETL_COMMANDS`` or ``NOETL_EVENTS``) and
removes the message from the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from noetl_common import COMMAND_SUBJECT_PREFIX, DLQ_STREAM, DLQ_SUBJECT_PREFIX, EVENT_SUBJECT_PREFIX

from ._api import CliError
from ._output import add_output, wants_json

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
#: Where a replay may publish: the suite's command and event subjects, never the DLQ itself.
REPLAYABLE_PREFIXES = (f"{COMMAND_SUBJECT_PREFIX}.", f"{EVENT_SUBJECT_PREFIX}.")


@dataclass
class DeadLetter:
    """One message of NOETL_DLQ."""

    seq: int
    subject: str
    time: str | None
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def original_subject(self) -> str | None:
        return self.headers.get("Noetl-Original-Subject")

    @property
    def reason(self) -> str:
        """Why it was parked; the publisher's rows carry no reason: ``outbox``."""
        outbox = self.subject.startswith(f"{DLQ_SUBJECT_PREFIX}.outbox.")
        return self.headers.get("Noetl-Reason") or ("outbox" if outbox else "")

    @property
    def error(self) -> str:
        return self.headers.get("Noetl-Error", "")

    def refusal(self) -> str | None:
        """Why this message cannot be replayed, or None."""
        original = self.original_subject
        if not original:
            return "it names no original subject"
        if not original.startswith(REPLAYABLE_PREFIXES):
            return f"its original subject {original!r} is not a command or event subject"
        if "Noetl-Body" in self.headers:
            return f"its body was cut to fit ({self.headers['Noetl-Body']})"
        return None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any]
        try:
            body = {"body": json.loads(self.data)}
        except ValueError:
            body = {"body_base64": base64.b64encode(self.data).decode()}
        return {
            "seq": self.seq,
            "time": self.time,
            "subject": self.subject,
            "original_subject": self.original_subject,
            "reason": self.reason,
            "error": self.error,
            "headers": self.headers,
            **body,
        }


async def connect() -> NATS:
    """NATS with the environment's credentials; one line when it cannot be reached."""
    url = os.environ.get("NATS_URL") or DEFAULT_NATS_URL
    user, password = os.environ.get("NATS_USER") or None, os.environ.get("NATS_PASSWORD") or None
    async def quiet(_error: Exception) -> None:
        """nats-py prints each failed attempt's traceback otherwise; the one line below says it."""

    try:
        return await nats.connect(
            url.split(","),
            user=user,
            password=password,
            name="noetl-cli",
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=1,  # each server twice, then give up (0 would retry for ever)
            reconnect_time_wait=0.2,
            error_cb=quiet,
        )
    except Exception as exc:
        raise CliError(f"cannot reach NATS at {url}: {exc or type(exc).__name__}") from None


async def read(
    js: JetStreamContext,
    *,
    subject: str | None = None,
    reason: str | None = None,
    seqs: list[int] | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Messages of NOETL_DLQ in sequence order: the ``seqs`` named, else every one whose DLQ
    subject matches ``subject`` (a NATS filter) and whose reason is ``reason``."""
    if seqs:
        found: list[DeadLetter] = []
        for seq in seqs:
            try:
                found.append(_letter(await js.get_msg(DLQ_STREAM, seq=seq)))
            except NotFoundError:
                raise CliError(f"NOETL_DLQ has no message {seq}") from None
        return found
    letters: list[DeadLetter] = []
    seq = 1
    while limit is None or len(letters) < limit:
        try:
            raw = await js.get_msg(DLQ_STREAM, seq=seq, subject=subject or f"{DLQ_SUBJECT_PREFIX}.>", next=True)
        except NotFoundError:
            break
        letter = _letter(raw)
        seq = letter.seq + 1
        if reason is None or letter.reason == reason:
            letters.append(letter)
    return letters


def _letter(raw: Any) -> DeadLetter:
    return DeadLetter(
        seq=int(raw.seq),
        subject=str(raw.subject),
        time=raw.time.isoformat() if raw.time is not None else None,
        data=raw.data or b"",
        headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
    )


async def replay(js: JetStreamContext, letter: DeadLetter, *, keep: bool = False) -> str:
    """Publish ``letter``'s body on its original subject again; remove it from the DLQ unless
    ``keep``. Returns the stream that stored it."""
    refusal = letter.refusal()
    if refusal is not None:
        raise CliError(f"message {letter.seq} is not replayed: {refusal}")
    assert letter.original_subject is not None
    headers = {k: v for k, v in letter.headers.items() if not k.startswith(("Noetl-", "Nats-"))}
    # a replay run twice within the duplicate window is stored once
    headers["Nats-Msg-Id"] = f"replay:{DLQ_STREAM}:{letter.seq}"
    headers["Noetl-Replayed-From"] = f"{DLQ_STREAM}:{letter.seq}"
    ack = await js.publish(letter.original_subject, letter.data, headers=headers)
    if not keep:
        await js.delete_msg(DLQ_STREAM, letter.seq)
    return str(ack.stream)


# -- the commands ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    async def run() -> list[DeadLetter]:
        nc = await connect()
        try:
            return await read(nc.jetstream(), subject=args.subject, reason=args.reason, limit=args.limit)
        finally:
            await nc.close()

    letters = asyncio.run(run())
    if wants_json(args):
        for letter in letters:
            print(json.dumps(letter.as_json(), separators=(",", ":")))
        return 0
    rows = [
        [str(d.seq), d.time or "", d.reason, d.original_subject or d.subject, " ".join(d.error.split())[:100]]
        for d in letters
    ]
    header = ["SEQ", "TIME", "REASON", "ORIGINAL_SUBJECT", "ERROR"]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    if bool(args.seqs) == bool(args.all):
        print("error: name the messages (SEQ ...) or --all", file=sys.stderr)
        return 2

    async def run() -> int:
        nc = await connect()
        failed = 0
        try:
            js = nc.jetstream()
            letters = await read(js, subject=args.subject, reason=args.reason, seqs=args.seqs or None)
            for letter in letters:
                try:
                    stream = await replay(js, letter, keep=args.keep)
                except CliError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                kept = " (kept in NOETL_DLQ)" if args.keep else ""
                print(f"replayed {letter.seq} to {letter.original_subject} ({stream}){kept}")
        finally:
            await nc.close()
        return 1 if failed else 0

    return asyncio.run(run())


def add_dlq_commands(sub: Any) -> None:
    """``noetl dlq list|replay`` (NATS credentials from NATS_URL, NATS_USER, NATS_PASSWORD)."""
    dlq = sub.add_parser("dlq", help="inspect and re-drive NOETL_DLQ (straight on NATS: NATS_URL, NATS_USER, NATS_PASSWORD)")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    subject_help = (
        "a NATS filter on the DLQ subject: noetl.dlq.noetl.events.> (projector), "
        "noetl.dlq.noetl.commands.> (workers), noetl.dlq.outbox.> (publisher)"
    )
    listing = dlq_sub.add_parser("list", help="the parked messages, oldest first")
    listing.add_argument("--subject", help=subject_help)
    listing.add_argument("--reason", help="only this reason (undecodable, max_deliver, refused, rejected, outbox)")
    listing.add_argument("--limit", type=int, help="at most this many")
    add_output(listing)  # -o json: one JSON object per line, headers and body included
    listing.set_defaults(func=cmd_list, nats=True)
    again = dlq_sub.add_parser("replay", help="publish messages on their original subject again and remove them")
    again.add_argument("seqs", nargs="*", type=int, metavar="SEQ", help="the messages (their DLQ sequence)")
    again.add_argument("--all", action="store_true", help="every message the filters select")
    again.add_argument("--subject", help=subject_help)
    again.add_argument("--reason", help="only this reason")
    again.add_argument("--keep", action="store_true", help="leave the replayed messages in NOETL_DLQ")
    again.set_defaults(func=cmd_replay, nats=True)
