"""Bounds on Arrow data, checked before it is decoded or turned into Python rows.

An Arrow IPC stream of a few kilobytes can stand for gigabytes: compressed buffers
(LZ4/ZSTD inflate a thousandfold), dictionary-encoded or run-end-encoded columns whose
rows repeat one huge value, null-type columns of any logical length (no buffer at all),
views that point at the same bytes again and again, deep nesting and many-column
schemas. The checks run in two passes, each refusing with :class:`ArrowLimitError`
(whose message names the setting) before anything big is allocated:

1. :func:`check_ipc`, before decoding: the stream is walked message by message
   (``pyarrow.ipc.MessageReader`` slices messages, it decodes nothing) and each batch
   header is read from its flatbuffer (:mod:`._arrow_meta`): rows, the logical length of
   every node, and what its buffers weigh once decompressed (a compressed buffer carries
   its uncompressed length in front). The schema gives the columns and the nesting.
2. :func:`check_table`, after decoding and before materialising: what the rows will weigh
   as Python values, measured per value from the decoded arrays with ``pyarrow.compute``
   (a dictionary value counted once per row that uses it, a run once per row it covers).

Decoded size, as counted against ``NOETL_ARROW_MAX_DECODED_BYTES``: the buffers once
decompressed, plus :data:`VALUE_SLOT_BYTES` per logical value (the least a value costs
once materialised, whatever its encoding); after decoding, the materialised size of the
rows. :func:`read_ipc` does both passes and the decode in between.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ._arrow_meta import IpcFormatError, batch_header
from ._config import env_int

MiB = 1024 * 1024
#: Bytes every logical value costs at least once materialised (a reference in a Python row).
VALUE_SLOT_BYTES = 8
#: Deepest nesting of types accepted (a list of structs of lists ... counts each level).
MAX_NESTING_DEPTH = 32

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MAX_COLUMNS = 1_000
DEFAULT_MAX_DECODED_BYTES = 256 * MiB
ROWS_VARIABLE = "NOETL_ARROW_MAX_ROWS"
COLUMNS_VARIABLE = "NOETL_ARROW_MAX_COLUMNS"
DECODED_VARIABLE = "NOETL_ARROW_MAX_DECODED_BYTES"


class ArrowLimitError(ValueError):
    """Arrow data over a limit; ``variable`` names the setting that bounds it."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True, slots=True)
class ArrowLimits:
    """The three bounds; the defaults are those of the settings."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_columns: int = DEFAULT_MAX_COLUMNS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ArrowLimits:
        """``NOETL_ARROW_MAX_ROWS``, ``NOETL_ARROW_MAX_COLUMNS``, ``NOETL_ARROW_MAX_DECODED_BYTES``."""
        return cls(
            max_rows=env_int(ROWS_VARIABLE, DEFAULT_MAX_ROWS, minimum=1, env=env),
            max_columns=env_int(COLUMNS_VARIABLE, DEFAULT_MAX_COLUMNS, minimum=1, env=env),
            max_decoded_bytes=env_int(DECODED_VARIABLE, DEFAULT_MAX_DECODED_BYTES, minimum=1024, env=env),
        )


def check_ipc(data: bytes | pa.Buffer, limits: ArrowLimits) -> pa.Schema:
    """Check an Arrow IPC stream from its metadata alone; returns its schema.

    Raises :class:`ArrowLimitError` over a limit, :class:`IpcFormatError` when the bytes
    are not an IPC stream.
    """
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(data))
    schema: pa.Schema | None = None
    rows = values = decoded = 0
    for message in _messages(reader):
        if message.type == "schema":
            if schema is not None:
                raise IpcFormatError("an Arrow IPC stream with a second schema")
            schema = _read_schema(message)
            _check_schema(schema, limits)
            continue
        header = batch_header(message)
        if header is None:
            raise IpcFormatError(f"unexpected {message.type} message in an Arrow IPC stream")
        if schema is None:
            raise IpcFormatError("a batch before the schema of an Arrow IPC stream")
        if not header.dictionary:
            rows += header.length
            _check_rows(rows, limits)
        values += header.values
        decoded += header.decoded_bytes
        _check_decoded(decoded + VALUE_SLOT_BYTES * values, limits, "decodes to")
    if schema is None:
        raise IpcFormatError("an Arrow IPC stream without a schema")
    return schema


def check_table(table: pa.Table | pa.RecordBatch, limits: ArrowLimits) -> None:
    """Check decoded Arrow data before it is materialised (``to_pylist``, JSON)."""
    _check_schema(table.schema, limits)
    _check_rows(table.num_rows, limits)
    columns = [
        list(column.chunks) if isinstance(column, pa.ChunkedArray) else [column] for column in table.columns
    ]
    # first the logical values (free to count), so measuring them cannot itself allocate a bomb
    values = sum(_values(chunk) for chunks in columns for chunk in chunks)
    _check_decoded(VALUE_SLOT_BYTES * values, limits, "materialises to")
    size = 0
    for chunks in columns:
        for chunk in chunks:
            size += _total(chunk)
            _check_decoded(size, limits, "materialises to")


def read_ipc(data: bytes | pa.Buffer, limits: ArrowLimits) -> pa.Table:
    """Check, decode and check again: a table whose rows are safe to materialise."""
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    check_ipc(buffer, limits)
    try:
        with pa.ipc.open_stream(buffer) as reader:
            table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise IpcFormatError(f"not an Arrow IPC stream: {exc}") from None
    check_table(table, limits)
    return table


# -- pass 1: metadata ----------------------------------------------------------------------


def _messages(reader: pa.ipc.MessageReader) -> Iterator[pa.ipc.Message]:
    while True:
        try:
            yield reader.read_next_message()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            raise IpcFormatError(f"not an Arrow IPC stream: {exc}") from None


def _read_schema(message: pa.ipc.Message) -> pa.Schema:
    try:
        return pa.ipc.read_schema(message)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IpcFormatError(f"not an Arrow IPC schema: {exc}") from None


def _check_schema(schema: pa.Schema, limits: ArrowLimits) -> None:
    fields = 0
    stack: list[tuple[pa.DataType, int]] = [(field.type, 1) for field in schema]
    while stack:
        kind, depth = stack.pop()
        fields += 1
        if fields > limits.max_columns:
            raise ArrowLimitError(
                f"Arrow data has more than {limits.max_columns} columns (nested fields included),"
                f" over {COLUMNS_VARIABLE}={limits.max_columns}",
                COLUMNS_VARIABLE,
            )
        if depth > MAX_NESTING_DEPTH:
            raise ArrowLimitError(f"Arrow data nests types deeper than {MAX_NESTING_DEPTH} levels")
        stack.extend((child, depth + 1) for child in _child_types(kind))


def _child_types(kind: pa.DataType) -> list[pa.DataType]:
    if isinstance(kind, pa.ExtensionType):
        return [kind.storage_type]
    if isinstance(kind, pa.DictionaryType):
        return [kind.value_type]
    if isinstance(kind, pa.RunEndEncodedType):
        return [kind.value_type]
    if isinstance(kind, pa.MapType):
        return [kind.key_type, kind.item_type]
    if isinstance(kind, pa.StructType | pa.UnionType):
        return [kind.field(i).type for i in range(kind.num_fields)]
    value_type = getattr(kind, "value_type", None)  # the list kinds
    return [value_type] if isinstance(value_type, pa.DataType) else []


def _check_rows(rows: int, limits: ArrowLimits) -> None:
    if rows > limits.max_rows:
        raise ArrowLimitError(
            f"Arrow data has {rows} rows or more, over {ROWS_VARIABLE}={limits.max_rows}", ROWS_VARIABLE
        )


def _check_decoded(size: int, limits: ArrowLimits, what: str) -> None:
    if size > limits.max_decoded_bytes:
        raise ArrowLimitError(
            f"Arrow data {what} {size} bytes or more, over {DECODED_VARIABLE}={limits.max_decoded_bytes}",
            DECODED_VARIABLE,
        )


# -- pass 2: decoded arrays ----------------------------------------------------------------


def _values(array: pa.Array) -> int:
    """Logical values of ``array`` and of every array below it (dictionaries included)."""
    if isinstance(array, pa.ExtensionArray):
        return _values(array.storage)
    if isinstance(array, pa.DictionaryArray):
        return len(array) + _values(array.dictionary)
    if isinstance(array, pa.RunEndEncodedArray):
        return len(array) + _values(array.values)
    if isinstance(array, pa.StructArray):
        return len(array) + sum(_values(array.field(i)) for i in range(array.type.num_fields))
    if isinstance(array, pa.UnionArray):
        return len(array) + sum(_values(array.field(i)) for i in range(array.type.num_fields))
    children = getattr(array, "values", None)  # the list kinds and maps
    if isinstance(children, pa.Array):
        return len(array) + _values(children)
    return len(array)


def _total(array: pa.Array) -> int:
    sizes = _sizes(array)
    total: Any = pc.sum(sizes).as_py()
    return int(total or 0)


def _sizes(array: pa.Array) -> pa.Array:
    """Bytes each value of ``array`` takes once materialised (int64, one per value)."""
    kind = array.type
    if isinstance(array, pa.ExtensionArray):
        return _sizes(array.storage)
    if isinstance(array, pa.DictionaryArray):
        # each row materialises its own copy of the value its index points at
        return pc.fill_null(pc.take(_sizes(array.dictionary), array.indices), VALUE_SLOT_BYTES)
    if isinstance(array, pa.RunEndEncodedArray):
        runs = pa.RunEndEncodedArray.from_arrays(array.run_ends, _sizes(array.values))
        return pc.run_end_decode(runs).slice(array.offset, len(array))
    if pa.types.is_null(kind):
        return _constant(VALUE_SLOT_BYTES, len(array))
    if pa.types.is_binary_view(kind) or pa.types.is_string_view(kind):
        return pc.add(_view_lengths(array), VALUE_SLOT_BYTES)
    if (
        pa.types.is_binary(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_large_string(kind)
    ):
        lengths = pc.fill_null(pc.cast(pc.binary_length(array), pa.int64()), 0)
        return pc.add(lengths, VALUE_SLOT_BYTES)
    if isinstance(array, pa.StructArray):
        total = _constant(VALUE_SLOT_BYTES, len(array))
        for i in range(kind.num_fields):
            total = pc.add(total, _sizes(array.field(i)))
        return total
    if isinstance(array, pa.FixedSizeListArray):
        # ``values`` is the whole child: row i of a sliced array starts at (offset + i) * size
        width = kind.list_size
        ends = pc.add(pc.cumulative_sum(_constant(width, len(array))), array.offset * width)
        return _ranges(array, _sizes(array.values), pc.subtract(ends, width), ends)
    if isinstance(array, pa.ListArray | pa.LargeListArray | pa.MapArray):
        offsets = pc.cast(array.offsets, pa.int64())
        starts, ends = offsets.slice(0, len(array)), offsets.slice(1, len(array))
        return _ranges(array, _sizes(array.values), starts, ends)
    if isinstance(array, pa.ListViewArray | pa.LargeListViewArray):
        # views may overlap: every row materialises its own range, however often it repeats
        starts = pc.cast(array.offsets, pa.int64())
        return _ranges(array, _sizes(array.values), starts, pc.add(starts, pc.cast(array.sizes, pa.int64())))
    width = getattr(kind, "bit_width", 0) if not pa.types.is_union(kind) else 0
    if width:
        return _constant(VALUE_SLOT_BYTES + max(1, width // 8), len(array))
    raise ArrowLimitError(f"Arrow columns of type {kind} are not accepted")


def _ranges(array: pa.Array, child: pa.Array, starts: pa.Array, ends: pa.Array) -> pa.Array:
    """Per row, the sum of ``child`` over [start, end): one cumulative sum, two takes.
    A null row materialises nothing below it."""
    prefix = pa.concat_arrays([pa.array([0], pa.int64()), pc.cumulative_sum(child)]) if len(child) else None
    if prefix is None:
        inner = _constant(0, len(array))
    else:
        inner = pc.subtract(pc.take(prefix, ends), pc.take(prefix, starts))
    if array.null_count:
        inner = pc.if_else(array.is_valid(), inner, 0)
    return pc.add(inner, VALUE_SLOT_BYTES)


def _view_lengths(array: pa.Array) -> pa.Array:
    """The lengths of a binary or string view array, read from its 16-byte views (an int32
    length first): views may point at the same bytes many times, and a cast would copy them."""
    count = array.offset + len(array)
    ints = pa.Array.from_buffers(pa.int32(), 4 * count, [None, array.buffers()[1]])
    lengths = pc.list_element(pa.FixedSizeListArray.from_arrays(ints, 4), 0).slice(array.offset, len(array))
    lengths = pc.cast(lengths, pa.int64())
    return pc.if_else(array.is_valid(), lengths, 0) if array.null_count else lengths


def _constant(value: int, length: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.int64()), length)


__all__ = [
    "COLUMNS_VARIABLE",
    "DECODED_VARIABLE",
    "MAX_NESTING_DEPTH",
    "ROWS_VARIABLE",
    "VALUE_SLOT_BYTES",
    "ArrowLimitError",
    "ArrowLimits",
    "IpcFormatError",
    "check_ipc",
    "check_table",
    "read_ipc",
]
