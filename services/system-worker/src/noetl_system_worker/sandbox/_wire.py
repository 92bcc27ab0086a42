"""Frames between the worker, the zygote and a sandboxed child: msgspec msgpack, never pickle.

A hostile child may write anything on its socket, so every frame is length-prefixed, its
length checked against a cap before it is read, and decoded into typed structs. A
``pyarrow.Table`` travels as an Arrow IPC stream in a msgpack extension; any other value
msgpack cannot carry becomes its ``str`` (as in events).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec

#: msgpack extension code of a pyarrow Table, carried as Arrow IPC stream bytes.
ARROW_EXT = 1
#: Big-endian length prefix of every frame on a child's socket.
HEADER = struct.Struct("!I")
#: Largest control message (worker <-> zygote); they are all small.
CONTROL_MAX_BYTES = 64 * 1024


class SandboxLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What the zygote enforces on every child (``WORKER_PYTHON_*``, ``WORKER_SANDBOX_*``)."""

    cpu_seconds: int = 600
    memory_bytes: int = 2 * 1024**3
    max_open_files: int = 256
    file_max_bytes: int = 256 * 1024**2
    max_processes: int = 256
    output_max_bytes: int = 16 * 1024**2
    #: bytes of output (stdout, stderr, logging) one task keeps (``WORKER_STEP_LOG_MAX_BYTES``)
    log_max_bytes: int = 64 * 1024
    uid: int = 61000
    gid: int = 61000
    preload: tuple[str, ...] = ()


class Setup(msgspec.Struct, frozen=True, kw_only=True):
    """The first control message: the limits and where children keep their files."""

    limits: SandboxLimits
    temp_root: str
    #: test hooks: leave a layer off to check what the others still hold
    landlock: bool = True
    drop_uid: bool = True


# -- control messages (SOCK_SEQPACKET, one message per packet) ----------------------------------
class Spawn(msgspec.Struct, frozen=True, tag="spawn"):
    """Worker → zygote: fork a child on the socket passed with this message (SCM_RIGHTS)."""

    id: int


class Kill(msgspec.Struct, frozen=True, tag="kill"):
    """Worker → zygote: SIGKILL a child and everything it started."""

    pid: int


class Ready(msgspec.Struct, frozen=True, tag="ready"):
    """Zygote → worker, once: its pid and which isolation layers hold on this host."""

    pid: int
    layers: dict[str, str]


class Spawned(msgspec.Struct, frozen=True, tag="spawned"):
    """Zygote → worker: the child of ``Spawn(id)`` runs as ``pid`` (or could not be forked)."""

    id: int
    pid: int = 0
    error: str = ""


class Exited(msgspec.Struct, frozen=True, tag="exited"):
    """Zygote → worker: a child was reaped; ``status`` as ``os.wait4`` gives it."""

    pid: int
    status: int
    cpu_seconds: float


ToZygote = Spawn | Kill
FromZygote = Ready | Spawned | Exited


# -- task frames (SOCK_STREAM, length-prefixed) -------------------------------------------------
class Task(msgspec.Struct, frozen=True):
    """Worker → child: a task to run (a child serves the tasks of one playbook, one at a time)."""

    code: str
    inputs: dict[str, Any]
    libs: dict[str, str]


class LogLine(msgspec.Struct, frozen=True, array_like=True):
    """One line a task printed (``stdout``, ``stderr``) or logged (``log``, with its level);
    ``at`` is when it was completed, in seconds since the epoch."""

    stream: str
    at: float
    text: str
    level: str | None = None


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """Child → worker: the output, or the error, plus the task's bounded output lines and how
    many bytes of output were dropped past the bound. ``reusable`` False: the child exits
    after this reply (its CPU budget is spent, or the task hit it)."""

    ok: bool
    result: Any = None
    error_type: str = ""
    error_message: str = ""
    logs: list[LogLine] = []
    logs_dropped: int = 0
    reusable: bool = False


def _is_table(value: Any) -> bool:
    return type(value).__name__ == "Table" and type(value).__module__.startswith("pyarrow")


def enc_hook(value: Any) -> Any:
    """Tables as Arrow IPC; anything else msgpack cannot carry as its text."""
    if _is_table(value):
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_table(value)
        return msgspec.msgpack.Ext(ARROW_EXT, sink.getvalue().to_pybytes())
    return str(value)


def ext_hook(code: int, data: memoryview) -> Any:
    """A Table back from Arrow IPC, validated in full: the bytes may come from a hostile child."""
    if code != ARROW_EXT:
        raise ValueError(f"unknown msgpack extension {code}")
    import pyarrow as pa

    with pa.ipc.open_stream(pa.py_buffer(bytes(data))) as reader:
        table = reader.read_all()
    table.validate(full=True)
    return table


ENCODER = msgspec.msgpack.Encoder(enc_hook=enc_hook)
CONTROL_ENCODER = msgspec.msgpack.Encoder()
TO_ZYGOTE = msgspec.msgpack.Decoder(ToZygote)
FROM_ZYGOTE = msgspec.msgpack.Decoder(FromZygote)
SETUP = msgspec.msgpack.Decoder(Setup)
TASK = msgspec.msgpack.Decoder(Task, ext_hook=ext_hook)
REPLY = msgspec.msgpack.Decoder(Reply, ext_hook=ext_hook)


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return HEADER.pack(len(payload)) + payload


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from a blocking socket; EOFError when it closes first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the peer closed the socket")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, limit: int) -> bytes:
    """One length-prefixed frame of at most ``limit`` bytes from a blocking socket."""
    (size,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
    if size > limit:
        raise ValueError(f"frame of {size} bytes is over the limit of {limit}")
    return recv_exactly(sock, size)
