"""The ``nats`` tool: publish one message, optionally through JetStream.

Config: ``subject``; the payload from ``data`` / ``payload`` / ``message`` (a mapping or
list is sent as JSON, anything else as UTF-8 text; none → the task's inputs as JSON);
``headers``; ``jetstream: true`` to publish with a JetStream ack (``stream`` pins the
expected stream, ``msg_id`` sets ``Nats-Msg-Id`` for dedup); ``timeout`` (5 s).
The server: ``auth: <credential>`` with ``{url, user?, password?, token?}``, else the
worker's own ``NATS_URL`` (with its ``NATS_USER`` / ``NATS_PASSWORD``). A task cannot name
a server or credentials itself (``url``, ``servers``, ``user``, ``password``, ``token`` ...
are refused): beside ``auth:`` they would redirect the credential, without it they would
take the worker's own NATS credentials to a server of the task's choosing.

Subjects under ``noetl.`` and ``$`` (the suite's command, event and dead-letter streams,
JetStream's API) are refused, and so is a ``stream`` naming one of the suite's streams: a
playbook must not forge commands or events. JetStream publishing uses the default API
prefix and domain only; the task cannot choose another.

Result ``{subject, published: true, size}`` plus ``{stream, seq, duplicate}`` with JetStream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import nats
from noetl_common import COMMANDS_STREAM, DLQ_STREAM, EVENTS_STREAM

from .._runtime import auth_name, runtime

RESERVED_PREFIXES = ("noetl.", "$")
#: The suite's own streams; a JetStream publish may not name them as its ``stream``.
RESERVED_STREAMS = frozenset({COMMANDS_STREAM, EVENTS_STREAM, DLQ_STREAM})
#: Fields that would name a server or credentials from the task itself.
SERVER_FIELDS = ("url", "nats_url", "servers", "server", "user", "password", "token", "creds", "nkey")


def _payload(config: Mapping[str, Any], args: Mapping[str, Any]) -> bytes:
    for key in ("data", "payload", "message"):
        if key in config and config[key] is not None:
            value = config[key]
            break
    else:
        value = dict(args)
    if isinstance(value, bytes):
        return value
    if isinstance(value, Mapping | list | int | float | bool):
        return json.dumps(value, default=str).encode()
    return str(value).encode()


async def run_nats(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Publish the message; see the module docstring."""
    subject = config.get("subject")
    if not isinstance(subject, str) or not subject.strip() or any(c in subject for c in " \t\r\n*>"):
        raise ValueError("nats tool: 'subject' must be a concrete subject (no spaces or wildcards)")
    if subject.startswith(RESERVED_PREFIXES) or subject == "noetl":
        raise PermissionError(f"nats tool: subject {subject!r} is reserved for the suite")
    stream = config.get("stream")
    if stream is not None and str(stream).upper() in RESERVED_STREAMS:
        raise PermissionError(f"nats tool: stream {stream!r} is reserved for the suite")
    name = auth_name(config.get("auth"))
    given = [key for key in SERVER_FIELDS if config.get(key) not in (None, "", [])]
    if given:
        source = f"credential {name!r}" if name else "auth: <credential> (else the worker's NATS_URL)"
        raise PermissionError(
            f"nats tool: {given[0]!r} cannot be set in the task; the server and its credentials"
            f" come from {source} only"
        )
    rt = runtime()
    options: dict[str, Any] = {}
    if name:
        data = (await rt.credential(name))["data"]
        url = data.get("url") or data.get("nats_url") or data.get("servers")
        for key in ("user", "password", "token"):
            if data.get(key):
                options[key] = str(data[key])
    else:
        url = rt.nats_url
        if rt.nats_user and rt.nats_password:
            options.update(user=rt.nats_user, password=rt.nats_password)
    if not url:
        raise ValueError("nats tool: no server; set auth: <credential with url> or the worker's NATS_URL")
    body = _payload(config, args)
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()} or None
    timeout = float(config.get("timeout") or 5.0)
    nc = await nats.connect(
        url, connect_timeout=timeout, max_reconnect_attempts=0, allow_reconnect=False, **options
    )
    try:
        result: dict[str, Any] = {"subject": subject, "published": True, "size": len(body)}
        if config.get("jetstream"):
            js = nc.jetstream()
            if config.get("msg_id"):
                headers = {**(headers or {}), "Nats-Msg-Id": str(config["msg_id"])}
            ack = await js.publish(subject, body, timeout=timeout, stream=stream, headers=headers)
            result.update(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))
        else:
            await nc.publish(subject, body, headers=headers)
            await nc.flush(timeout=max(1, int(timeout)))
        return result
    finally:
        await nc.close()


def nats_helper(result: Any) -> dict[str, Any]:
    """``outcome.nats``: ``subject``, ``published``, and with JetStream ``stream``, ``seq``, ``duplicate``."""
    found = result if isinstance(result, Mapping) else {}
    keys = ("subject", "published", "stream", "seq", "duplicate")
    return {k: found.get(k) for k in keys} | {"published": bool(found.get("published"))}
