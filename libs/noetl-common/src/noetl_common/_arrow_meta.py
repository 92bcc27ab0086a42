"""Arrow IPC message headers, read from their flatbuffers without touching any body.

pyarrow's Python API hands out a message's raw metadata (``Message.metadata``) but no
parsed view of it, and decoding a record batch is exactly what must not happen before
its size is known: a compressed buffer inflates only when decoded. So the few fields the
size checks need are read here with the ``flatbuffers`` library's ``Table`` accessor,
following ``Message.fbs`` of the Arrow format (field ``i`` of a table sits at vtable
offset ``4 + 2 * i``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pyarrow as pa
from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

# Message: version, header_type, header, bodyLength
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 6, 8
# MessageHeader union members
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
# RecordBatch: length, nodes, buffers, compression
_BATCH_LENGTH, _BATCH_NODES, _BATCH_BUFFERS, _BATCH_COMPRESSION = 4, 6, 8, 10
# DictionaryBatch: id, data
_DICTIONARY_ID, _DICTIONARY_DATA = 4, 6
_STRUCT_SIZE = 16  # FieldNode {length, null_count} and Buffer {offset, length}: two int64
_LENGTH_PREFIX = 8  # a compressed buffer starts with its uncompressed length (int64, -1: not compressed)


class IpcFormatError(ValueError):
    """The bytes are not a well-formed Arrow IPC message."""


@dataclass(frozen=True)
class BatchHeader:
    """What a record or dictionary batch will cost to decode, read from its header alone."""

    dictionary: bool
    length: int  #: logical rows of the batch (of the dictionary, for a dictionary batch)
    values: int  #: logical values of every node, nested children included
    decoded_bytes: int  #: its buffers' bytes once decompressed
    compressed: bool


def batch_header(message: pa.ipc.Message) -> BatchHeader | None:
    """The header of a record or dictionary batch message; None for any other message."""
    try:
        return _read(bytes(message.metadata), message.body)
    except (struct.error, IndexError, OverflowError) as exc:
        raise IpcFormatError(f"malformed Arrow IPC message header: {exc}") from None


def _read(metadata: bytes, body: pa.Buffer | None) -> BatchHeader | None:
    buf = bytearray(metadata)
    message = Table(buf, encode.Get(packer.uoffset, buf, 0))
    kind = _scalar(message, _MESSAGE_HEADER_TYPE, number_types.Uint8Flags, 0)
    if kind not in (_RECORD_BATCH, _DICTIONARY_BATCH):
        return None
    header = _table(message, _MESSAGE_HEADER)
    if header is None:
        raise IpcFormatError("a batch message without its header")
    batch = header if kind == _RECORD_BATCH else _table(header, _DICTIONARY_DATA)
    if batch is None:
        raise IpcFormatError("a dictionary batch without its data")
    length = _scalar(batch, _BATCH_LENGTH, number_types.Int64Flags, 0)
    nodes = _structs(batch, _BATCH_NODES, len(buf))
    buffers = _structs(batch, _BATCH_BUFFERS, len(buf))
    compressed = batch.Offset(_BATCH_COMPRESSION) != 0
    if length < 0 or any(node[0] < 0 for node in nodes):
        raise IpcFormatError("negative length in a batch header")
    return BatchHeader(
        dictionary=kind == _DICTIONARY_BATCH,
        length=length,
        values=sum(node[0] for node in nodes),
        decoded_bytes=_decoded_bytes(buffers, body, compressed),
        compressed=compressed,
    )


def _decoded_bytes(buffers: list[tuple[int, int]], body: pa.Buffer | None, compressed: bool) -> int:
    """The bytes of ``buffers`` once decompressed: a compressed buffer's own length prefix
    says how large it becomes; nothing is decompressed to learn it."""
    size = 0 if body is None else body.size
    view = memoryview(body) if body is not None else memoryview(b"")
    total = 0
    for offset, length in buffers:
        if offset < 0 or length < 0 or offset + length > size:
            raise IpcFormatError(f"buffer [{offset}, {offset + length}) lies outside the {size}-byte body")
        if not compressed or length == 0:
            total += length
            continue
        if length < _LENGTH_PREFIX:
            raise IpcFormatError("a compressed buffer shorter than its length prefix")
        (raw,) = struct.unpack_from("<q", view, offset)
        if raw < -1:
            raise IpcFormatError(f"a compressed buffer declares {raw} bytes")
        total += length - _LENGTH_PREFIX if raw == -1 else raw
    return total


def _scalar(table: Table, field: int, flags: type, default: int) -> int:
    offset = table.Offset(field)
    return int(table.Get(flags, table.Pos + offset)) if offset else default


def _table(table: Table, field: int) -> Table | None:
    offset = table.Offset(field)
    if not offset:
        return None
    return Table(table.Bytes, table.Indirect(table.Pos + offset))


def _structs(table: Table, field: int, size: int) -> list[tuple[int, int]]:
    """A vector of two-int64 structs; its declared length is checked against the metadata
    size first, so a forged length cannot make this loop run long."""
    offset = table.Offset(field)
    if not offset:
        return []
    count = table.VectorLen(offset)
    start = table.Vector(offset)
    if count < 0 or start + count * _STRUCT_SIZE > size:
        raise IpcFormatError(f"a vector of {count} entries runs past the {size}-byte header")
    return [struct.unpack_from("<qq", table.Bytes, start + i * _STRUCT_SIZE) for i in range(count)]
