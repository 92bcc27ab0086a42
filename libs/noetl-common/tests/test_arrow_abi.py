"""The Arrow-over-WASM batch encoding (NAB1), host side."""

from __future__ import annotations

import pyarrow as pa
import pytest
from noetl_common.arrow_abi import (
    ArrowAbiError,
    batch_encoding,
    decode_batch,
    encode_batch,
    ipc_to_table,
    table_to_ipc,
)


def test_batch_round_trip_keeps_values_nulls_and_params() -> None:
    table = pa.table(
        {
            "i64": pa.array([1, None, 3, 4, None], pa.int64()),
            "f64": pa.array([0.5, 1.5, None, 3.5, 4.5], pa.float64()),
            "i32": pa.array([7, 8, 9, 10, 11], pa.int32()),
            "f32": pa.array([None, 1.0, 2.0, 3.0, 4.0], pa.float32()),
        }
    )
    for sliced in (table, table.slice(1), table.slice(3, 2)):
        decoded = decode_batch(encode_batch(sliced, {"threshold": 2}))
        assert decoded.table.equals(sliced.combine_chunks())
        assert decoded.params == {"threshold": 2}


def test_chunked_columns_are_combined() -> None:
    table = pa.concat_tables([pa.table({"a": [1, 2]}), pa.table({"a": [3]})])
    assert decode_batch(encode_batch(table)).table.column("a").to_pylist() == [1, 2, 3]


def test_unsupported_type_and_bad_bytes_are_refused() -> None:
    with pytest.raises(ArrowAbiError, match="use arrow-ipc"):
        encode_batch(pa.table({"s": ["x"]}))
    with pytest.raises(ArrowAbiError, match="not a NAB1"):
        decode_batch(b"XXXX" + bytes(20))
    good = encode_batch(pa.table({"a": [1, 2, 3]}))
    with pytest.raises(ArrowAbiError, match="outside"):
        decode_batch(good[:-8])
    with pytest.raises(ArrowAbiError, match="not an Arrow IPC stream"):
        ipc_to_table(b"nope")


def test_ipc_round_trip() -> None:
    table = pa.table({"a": [1, 2], "b": ["x", None]})
    assert ipc_to_table(table_to_ipc(table)).equals(table)


def test_slices_at_a_byte_boundary_keep_their_own_null_bitmap() -> None:
    # an offset that is a multiple of 8 starts the bitmap at byte offset // 8, not at byte 0
    values = pa.array([None if i % 3 == 0 else i for i in range(100)], pa.int64())
    for offset in (8, 16, 64):
        sliced = pa.table({"a": values}).slice(offset, 20)
        assert decode_batch(encode_batch(sliced)).table.equals(sliced.combine_chunks())


def test_batch_encoding_writes_the_same_bytes_at_an_address() -> None:
    import ctypes

    table = pa.table({"a": pa.array([1, None, 3], pa.int64()), "b": pa.array([0.5, 1.5, 2.5])}).slice(1)
    layout = batch_encoding(table, {"k": "v"})
    target = ctypes.create_string_buffer(b"\xff" * (layout.nbytes + 4))
    layout.write_to(ctypes.addressof(target))
    # every byte of the batch is written (alignment gaps as zeros), nothing past it
    assert target.raw[: layout.nbytes] == encode_batch(table, {"k": "v"}) == bytes(layout)
    assert target.raw[layout.nbytes : layout.nbytes + 4] == b"\xff" * 4
