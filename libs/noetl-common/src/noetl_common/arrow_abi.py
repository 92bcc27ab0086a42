"""The Arrow-over-WASM ABI, host side (architecture.md §8, docs/wasm.md).

Tabular data crosses the host/guest boundary in one of two encodings:

* ``arrow-ipc``: the Arrow IPC *stream* bytes as they are. A guest that only moves data
  (echo, materialiser) never parses them, so they come back byte-identical.
* ``arrow-batch`` ("NAB1"): the host decodes the IPC stream and hands the guest the
  record batch's raw Arrow buffers (validity bitmap + values of each fixed-width column)
  behind a small header, so a C guest computes over Arrow memory without a flatbuffers
  parser. The guest answers in the same layout and the host wraps the buffers back into
  Arrow arrays and an IPC stream. Layout, all little-endian, offsets from the batch start::

      header (24 bytes): magic "NAB1", version u32 = 1, ncols u32, nrows u32,
                         params_off u32, params_len u32        (params: UTF-8 JSON or empty)
      ncols x column (32 bytes): type u32, flags u32 (bit 0: has validity), name_off u32,
                         name_len u32, validity_off u32, values_off u32, values_len u32,
                         null_count u32
      then names, params and buffers, each buffer 8-byte aligned

  Types: 1 int64, 2 float64, 3 int32, 4 float32 (Arrow's own little-endian layouts).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa

from .arrow_limits import ArrowLimitError, ArrowLimits, IpcFormatError, read_ipc

MAGIC = b"NAB1"
VERSION = 1
HEADER = struct.Struct("<4sIIIII")
COLUMN = struct.Struct("<IIIIIIII")
HAS_VALIDITY = 1

#: ABI type code <-> Arrow type of the fixed-width columns the batch encoding carries.
TYPE_CODES: dict[int, pa.DataType] = {1: pa.int64(), 2: pa.float64(), 3: pa.int32(), 4: pa.float32()}
_CODE_OF = {str(t): code for code, t in TYPE_CODES.items()}


class ArrowAbiError(ValueError):
    """Bytes that are not a valid batch of this ABI, or a column type it does not carry."""


def _align(n: int) -> int:
    return (n + 7) & ~7


def table_to_ipc(table: pa.Table) -> bytes:
    """An Arrow IPC stream of ``table``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def ipc_to_table(data: bytes, limits: ArrowLimits | None = None) -> pa.Table:
    """Read an Arrow IPC stream within ``limits`` (default: the settings' defaults);
    ArrowAbiError when it is not one, ArrowLimitError when it is over a limit."""
    try:
        return read_ipc(data, limits or ArrowLimits())
    except IpcFormatError as exc:
        raise ArrowAbiError(str(exc)) from None


def table_from_json(value: Any) -> pa.Table:
    """A table from JSON-shaped input: ``{column: [values]}`` or ``[{column: value}, ...]``."""
    if isinstance(value, Mapping):
        return pa.table({str(k): v for k, v in value.items()})
    if isinstance(value, list):
        return pa.Table.from_pylist(value)
    raise ArrowAbiError("tabular input must be {column: [values]} or a list of rows")


@dataclass(frozen=True)
class BatchEncoding:
    """The ``arrow-batch`` layout of a table, not yet written anywhere.

    ``write_to(address)`` writes the ``nbytes`` bytes at a raw address (the WASM host
    passes the guest's linear memory): the header once, then every column buffer straight
    from pyarrow's memory — one copy of the data, none through Python bytes.
    """

    nbytes: int
    head: bytes
    #: (offset in the batch, pyarrow buffer, start in that buffer, length)
    spans: tuple[tuple[int, pa.Buffer, int, int], ...]

    def write_to(self, address: int) -> None:
        """Write the batch at ``address`` (``nbytes`` writable bytes; alignment gaps zeroed)."""
        ctypes.memmove(address, self.head, len(self.head))
        cursor = len(self.head)
        for off, buffer, start, length in self.spans:
            if off > cursor:
                ctypes.memset(address + cursor, 0, off - cursor)
            ctypes.memmove(address + off, buffer.address + start, length)
            cursor = off + length
        if self.nbytes > cursor:
            ctypes.memset(address + cursor, 0, self.nbytes - cursor)

    def __bytes__(self) -> bytes:
        out = ctypes.create_string_buffer(self.nbytes)
        self.write_to(ctypes.addressof(out))
        return out.raw


def encode_batch(table: pa.Table, params: Mapping[str, Any] | None = None) -> bytes:
    """The ``arrow-batch`` bytes of ``table`` (combined to one chunk) with ``params`` as JSON."""
    return bytes(batch_encoding(table, params))


def batch_encoding(table: pa.Table, params: Mapping[str, Any] | None = None) -> BatchEncoding:
    """The ``arrow-batch`` layout of ``table`` (combined to one chunk) with ``params`` as JSON."""
    batch = table.combine_chunks()
    ncols, nrows = batch.num_columns, batch.num_rows
    params_bytes = msgspec.json.encode(dict(params)) if params else b""
    names = [name.encode() for name in batch.column_names]
    cursor = HEADER.size + COLUMN.size * ncols
    name_offs = []
    for name in names:
        name_offs.append(cursor)
        cursor += len(name)
    params_off = cursor
    head_size = cursor + len(params_bytes)
    cursor = _align(head_size)
    descriptors: list[bytes] = []
    spans: list[tuple[int, pa.Buffer, int, int]] = []
    for i, column in enumerate(batch.columns):
        array = column.chunk(0) if column.num_chunks else pa.array([], type=column.type)
        code = _CODE_OF.get(str(array.type))
        if code is None:
            raise ArrowAbiError(
                f"column {batch.column_names[i]!r} has type {array.type}; the batch ABI carries "
                "int64, float64, int32 and float32 (use arrow-ipc for other types)"
            )
        width = array.type.bit_width // 8
        flags, validity_off = 0, 0
        if array.null_count and array.offset % 8:
            # Re-base a sliced bitmap: a copy of the array starts at bit 0.
            array = pa.concat_arrays([array])
        validity, values = array.buffers()
        assert values is not None
        if validity is not None and array.null_count:
            flags |= HAS_VALIDITY
            validity_off = cursor
            length = (nrows + 7) // 8
            spans.append((cursor, validity, array.offset // 8, length))
            cursor = _align(cursor + length)
        values_off = cursor
        spans.append((cursor, values, array.offset * width, nrows * width))
        cursor = _align(cursor + nrows * width)
        descriptors.append(
            COLUMN.pack(
                code,
                flags,
                name_offs[i],
                len(names[i]),
                validity_off,
                values_off,
                nrows * width,
                array.null_count,
            )
        )
    head = bytearray(head_size)
    HEADER.pack_into(
        head, 0, MAGIC, VERSION, ncols, nrows, params_off if params_bytes else 0, len(params_bytes)
    )
    for i, descriptor in enumerate(descriptors):
        head[HEADER.size + i * COLUMN.size : HEADER.size + (i + 1) * COLUMN.size] = descriptor
    for off, name in zip(name_offs, names, strict=True):
        head[off : off + len(name)] = name
    head[params_off : params_off + len(params_bytes)] = params_bytes
    return BatchEncoding(cursor, bytes(head), tuple(spans))


@dataclass(frozen=True)
class DecodedBatch:
    """A batch read back from guest bytes: the table and the params it carried."""

    table: pa.Table
    params: dict[str, Any]


def decode_batch(data: bytes, limits: ArrowLimits | None = None) -> DecodedBatch:
    """Read ``arrow-batch`` bytes into an Arrow table; ArrowAbiError on any inconsistency,
    ArrowLimitError when its header declares more rows or columns than ``limits`` allow."""
    if len(data) < HEADER.size:
        raise ArrowAbiError("batch shorter than its header")
    magic, version, ncols, nrows, params_off, params_len = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise ArrowAbiError(f"not a NAB1 v{VERSION} batch (magic {magic!r}, version {version})")
    limits = limits or ArrowLimits()
    if ncols > limits.max_columns or nrows > limits.max_rows:
        raise ArrowLimitError(
            f"the batch declares {nrows} rows of {ncols} columns, over NOETL_ARROW_MAX_ROWS="
            f"{limits.max_rows} or NOETL_ARROW_MAX_COLUMNS={limits.max_columns}"
        )
    if HEADER.size + ncols * COLUMN.size > len(data):
        raise ArrowAbiError(f"batch declares {ncols} columns but is only {len(data)} bytes")
    buffer = pa.py_buffer(data)

    def span(off: int, length: int, what: str) -> pa.Buffer:
        if off + length > len(data):
            raise ArrowAbiError(f"{what} [{off}, {off + length}) is outside the {len(data)}-byte batch")
        return buffer.slice(off, length)

    params: dict[str, Any] = {}
    if params_len:
        raw = span(params_off, params_len, "params").to_pybytes()
        try:
            decoded = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ArrowAbiError(f"batch params are not JSON: {exc}") from None
        params = decoded if isinstance(decoded, dict) else {"value": decoded}
    names: list[str] = []
    arrays: list[pa.Array] = []
    for i in range(ncols):
        code, flags, name_off, name_len, validity_off, values_off, values_len, null_count = (
            COLUMN.unpack_from(data, HEADER.size + i * COLUMN.size)
        )
        arrow_type = TYPE_CODES.get(code)
        if arrow_type is None:
            raise ArrowAbiError(f"column {i} has unknown type code {code}")
        width = arrow_type.bit_width // 8
        if values_len != nrows * width:
            raise ArrowAbiError(f"column {i}: {values_len} value bytes for {nrows} rows of {arrow_type}")
        name = span(name_off, name_len, f"column {i} name").to_pybytes().decode("utf-8", "replace")
        validity = None
        if flags & HAS_VALIDITY:
            validity = span(validity_off, (nrows + 7) // 8, f"column {i} validity")
        values = span(values_off, values_len, f"column {i} values")
        names.append(name)
        arrays.append(
            pa.Array.from_buffers(
                arrow_type, nrows, [validity, values], null_count=null_count if validity else 0
            )
        )
    return DecodedBatch(pa.Table.from_arrays(arrays, names=names), params)
