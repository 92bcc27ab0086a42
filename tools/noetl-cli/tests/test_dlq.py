"""``noetl dlq list|replay`` against a real nats-server, with messages parked as the services park them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from noetl_cli.__main__ import main
from noetl_common import COMMANDS_STREAM, DLQ_STREAM, EVENTS_STREAM, dlq_subject, ensure_streams
from noetl_dev import free_port

COMMAND_SUBJECT = "noetl.commands.shared.7"
EVENT_SUBJECT = "noetl.events.default.default.8.0"
COMMAND = {"execution_id": 7, "event_id": 70, "command_id": 71, "step": "a", "server_url": "http://x", "execution_pool": "shared"}
EVENT = {"execution_id": 8, "event_id": 80, "event_type": "step.enter", "step": "b"}


async def _park(nats_url: str) -> None:
    """One message as each service parks it: the worker, the projector, the publisher."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await js.publish(
            dlq_subject(COMMAND_SUBJECT),
            json.dumps(COMMAND).encode(),
            headers={
                "Noetl-Original-Subject": COMMAND_SUBJECT,
                "Noetl-Reason": "max_deliver",
                "Noetl-Error": "command notification delivered 10 times (max_deliver 10)",
                "Nats-Msg-Id": "NOETL_COMMANDS:3",
            },
        )
        await js.publish(
            dlq_subject(EVENT_SUBJECT),
            json.dumps(EVENT).encode(),
            headers={
                "Noetl-Original-Subject": EVENT_SUBJECT,
                "Noetl-Reason": "max_deliver",
                "Noetl-Error": "max_deliver (100) reached: HTTP 503: the database is unavailable",
                "Noetl-Stream-Seq": "5",
                "Nats-Msg-Id": "NOETL_EVENTS:5",
            },
        )
        await js.publish(
            "noetl.dlq.outbox.9",
            b'{"execution_id": 9, "event_id": 90, "ev',
            headers={
                "Noetl-Original-Subject": "noetl.events.default.default.9.0",
                "Noetl-Outbox-Id": "12",
                "Noetl-Event-Id": "90",
                "Noetl-Execution-Id": "9",
                "Noetl-Error": "the row is larger than the server's max_payload",
                "Noetl-Body": "truncated, 2000000 bytes in all",
                "Nats-Msg-Id": "outbox-12",
            },
        )
    finally:
        await nc.close()


async def _stream(nats_url: str, stream: str) -> list[tuple[str, Any, dict[str, str]]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        found = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else []:
            msg = await js.get_msg(stream, seq)
            found.append((str(msg.subject), json.loads(msg.data or b"null"), dict(msg.headers or {})))
        return found
    finally:
        await nc.close()


@pytest.fixture
def parked(nats_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NATS_URL", nats_url)
    asyncio.run(_park(nats_url))
    return nats_url


def test_list_shows_what_each_service_parked(parked: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SEQ", "TIME", "REASON", "ORIGINAL_SUBJECT", "ERROR"]
    assert [line.split()[:4:2] for line in lines[1:]] == [["1", "max_deliver"], ["2", "max_deliver"], ["3", "outbox"]]
    assert COMMAND_SUBJECT in lines[1] and EVENT_SUBJECT in lines[2] and "max_payload" in lines[3]

    assert main(["dlq", "list", "--json", "--subject", "noetl.dlq.noetl.events.>"]) == 0
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert only["seq"] == 2 and only["body"] == EVENT and only["original_subject"] == EVENT_SUBJECT
    assert only["headers"]["Noetl-Stream-Seq"] == "5" and only["time"]

    assert main(["dlq", "list", "-o", "json", "--reason", "outbox"]) == 0
    (cut,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert cut["seq"] == 3 and "body_base64" in cut  # not JSON: the body was cut


def test_replay_publishes_on_the_original_subject_and_removes_the_message(
    parked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "replay", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"replayed 2 to {EVENT_SUBJECT} ({EVENTS_STREAM})"
    ((subject, body, headers),) = asyncio.run(_stream(parked, EVENTS_STREAM))
    assert (subject, body) == (EVENT_SUBJECT, EVENT)
    assert headers["Noetl-Replayed-From"] == "NOETL_DLQ:2" and "Noetl-Reason" not in headers
    assert [seq for seq, *_ in _seqs(parked)] == [1, 3]

    # the command notification goes back to its pool; a truncated row is refused and kept
    assert main(["dlq", "replay", "--all"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == f"replayed 1 to {COMMAND_SUBJECT} ({COMMANDS_STREAM})"
    assert captured.err.strip() == (
        "error: message 3 is not replayed: its body was cut to fit (truncated, 2000000 bytes in all)"
    )
    ((subject, body, _),) = asyncio.run(_stream(parked, COMMANDS_STREAM))
    assert (subject, body) == (COMMAND_SUBJECT, COMMAND)
    assert [seq for seq, *_ in _seqs(parked)] == [3]


def test_replay_with_keep_leaves_the_message_and_a_second_replay_is_stored_once(
    parked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "replay", "--keep", "--reason", "max_deliver", "--subject", "noetl.dlq.noetl.events.>", "--all"]) == 0
    assert main(["dlq", "replay", "--keep", "2"]) == 0
    assert capsys.readouterr().out.count("(kept in NOETL_DLQ)") == 2
    assert len(asyncio.run(_stream(parked, EVENTS_STREAM))) == 1  # deduplicated by its replay Msg-Id
    assert [seq for seq, *_ in _seqs(parked)] == [1, 2, 3]


def test_usage_and_unreachable_nats(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay"]) == 2
    assert "name the messages (SEQ ...) or --all" in capsys.readouterr().err
    monkeypatch.setenv("NATS_URL", f"nats://127.0.0.1:{free_port()}")
    assert main(["dlq", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach NATS at nats://127.0.0.1:") and err.count("\n") == 1


def test_an_unknown_sequence_is_one_line(parked: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "replay", "99"]) == 1
    assert capsys.readouterr().err == "error: NOETL_DLQ has no message 99\n"


def _seqs(nats_url: str) -> list[tuple[int, str]]:
    return [(seq, subject) for seq, subject in asyncio.run(_dlq(nats_url))]


async def _dlq(nats_url: str) -> list[tuple[int, str]]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(DLQ_STREAM)).state
        found = []
        for seq in range(state.first_seq, state.last_seq + 1) if state.messages else []:
            try:
                msg = await js.get_msg(DLQ_STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue  # deleted
            found.append((int(msg.seq or 0), str(msg.subject)))
        return found
    finally:
        await nc.close()
