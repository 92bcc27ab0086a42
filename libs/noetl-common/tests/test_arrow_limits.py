"""Arrow bombs: small IPC streams that stand for huge data are refused before they are
decoded or turned into rows; honest data of every layout passes and reads back unchanged."""

from __future__ import annotations

import struct

import pyarrow as pa
import pytest
from noetl_common.arrow_abi import ArrowAbiError, decode_batch, encode_batch, ipc_to_table
from noetl_common.arrow_limits import (
    ArrowLimitError,
    ArrowLimits,
    IpcFormatError,
    check_ipc,
    check_table,
    read_ipc,
)
from noetl_common.results import ARROW_MEDIA_TYPE, decode_result

MiB = 1024 * 1024
SMALL = ArrowLimits(max_rows=1_000_000, max_columns=100, max_decoded_bytes=MiB)


def ipc(table: pa.Table, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression) if compression else None
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def refused(data: bytes, limits: ArrowLimits = SMALL) -> ArrowLimitError:
    with pytest.raises(ArrowLimitError) as caught:
        read_ipc(data, limits)
    return caught.value


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_buffers_are_measured_from_their_headers_without_decompressing(codec: str) -> None:
    zeros = ipc(pa.table({"z": pa.array([0] * 1_000_000, pa.int64())}), codec)  # 8 MB of zeros

    error = refused(zeros)

    assert len(zeros) < MiB // 2  # small on the wire ...
    assert "decodes to" in str(error) and error.variable == "NOETL_ARROW_MAX_DECODED_BYTES"
    with pytest.raises(ArrowLimitError):
        check_ipc(zeros, SMALL)  # ... and refused from the metadata pass alone


def test_a_dictionary_column_counts_each_row_s_copy_of_its_value() -> None:
    one_value = pa.DictionaryArray.from_arrays(pa.array([0] * 20_000, pa.int32()), pa.array(["v" * 4096]))
    data = ipc(pa.table({"d": one_value}))

    error = refused(data)

    assert len(data) < 200_000 and "materialises to" in str(error)
    check_ipc(data, SMALL)  # its buffers are small: only the rows would be huge


def test_a_run_end_encoded_column_counts_every_row_it_covers() -> None:
    runs = ipc(pa.table({"r": pa.RunEndEncodedArray.from_arrays([100_000], ["r" * 1000])}))

    check_ipc(runs, SMALL)  # one run of one value: nothing to decode
    assert "materialises to" in str(refused(runs))  # a hundred thousand copies as rows


def test_a_null_column_of_huge_logical_length_is_refused_by_its_row_count() -> None:
    nothing = ipc(pa.table({"n": pa.nulls(2**31 - 1)}))  # no buffer at all

    error = refused(nothing, ArrowLimits())

    assert len(nothing) < 1000
    assert error.variable == "NOETL_ARROW_MAX_ROWS" and "over NOETL_ARROW_MAX_ROWS=1000000" in str(error)


def test_a_nested_child_of_huge_logical_length_is_refused_before_decoding() -> None:
    lists = pa.ListArray.from_arrays(pa.array([0, 2**31 - 2], pa.int32()), pa.nulls(2**31 - 2))

    error = refused(ipc(pa.table({"l": lists})), ArrowLimits())

    assert "decodes to" in str(error)


def test_overlapping_views_count_every_row_s_range() -> None:
    child = pa.array(range(50_000), pa.int64())
    views = pa.ListViewArray.from_arrays(
        pa.array([0] * 1000, pa.int32()), pa.array([50_000] * 1000, pa.int32()), child
    )
    # 500 views of the same 5000 bytes: (length, prefix, buffer 0, offset 0) each
    view = struct.pack("<i4sii", 5000, b"ssss", 0, 0)
    strings = pa.Array.from_buffers(
        pa.string_view(), 500, [None, pa.py_buffer(view * 500), pa.py_buffer(b"s" * 5000)]
    )

    assert "materialises to" in str(refused(ipc(pa.table({"lv": views}))))
    assert "materialises to" in str(refused(ipc(pa.table({"sv": strings}))))


def test_deep_nesting_and_many_columns_are_refused_from_the_schema() -> None:
    deep = pa.int64()
    for _ in range(40):
        deep = pa.list_(deep)
    wide = pa.struct([pa.field(f"f{i}", pa.int8()) for i in range(200)])

    assert "deeper than 32" in str(refused(ipc(pa.table({"deep": pa.array([None], deep)}))))
    assert refused(ipc(pa.table({f"c{i}": [1] for i in range(101)}))).variable == "NOETL_ARROW_MAX_COLUMNS"
    assert refused(ipc(pa.table({"s": pa.array([None], wide)}))).variable == "NOETL_ARROW_MAX_COLUMNS"


def test_rows_add_up_across_batches() -> None:
    batch = pa.record_batch({"a": pa.array(range(600), pa.int32())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
        writer.write_batch(batch)

    error = refused(bytes(sink.getvalue().to_pybytes()), ArrowLimits(max_rows=1000))

    assert "1200 rows" in str(error)


def test_honest_data_of_every_layout_reads_back_unchanged() -> None:
    table = pa.table(
        {
            "i": [1, None, 3],
            "s": ["a", "bb", None],
            "l": [[1, 2], None, []],
            "st": [{"p": 1, "q": "x"}] * 3,
            "d": pa.array(["x", "y", "x"]).dictionary_encode(),
            "fsl": pa.array([[1, 2], None, [5, 6]], pa.list_(pa.int64(), 2)),
            "lv": pa.array([[1], [2, 3], []], pa.list_view(pa.int32())),
            "sv": pa.array(["a", None, "ccc"], pa.string_view()),
            "ree": pa.RunEndEncodedArray.from_arrays([2, 3], ["r", "s"]),
            "n": pa.nulls(3),
            "m": pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
        }
    )

    for codec in (None, "zstd"):
        back = read_ipc(ipc(table, codec), ArrowLimits())
        assert back.to_pylist() == table.to_pylist()
    check_table(table.slice(1), ArrowLimits())


def test_malformed_streams_are_format_errors_not_crashes() -> None:
    good = ipc(pa.table({"a": [1, 2, 3]}))
    # a record batch whose nodes vector claims ~2^31 entries
    forged = bytearray(good)
    position = forged.find(struct.pack("<q", 3), len(forged) // 2)  # the batch length field

    for bad in (b"", b"not arrow at all", good[: len(good) // 2]):
        with pytest.raises(IpcFormatError):
            read_ipc(bad, ArrowLimits())
    if position > 0:
        forged[position : position + 8] = struct.pack("<q", -5)
        with pytest.raises((IpcFormatError, ArrowLimitError)):
            read_ipc(bytes(forged), ArrowLimits())


def test_stored_results_and_the_wasm_abi_use_the_same_checks() -> None:
    one_value = pa.DictionaryArray.from_arrays(pa.array([0] * 20_000, pa.int32()), pa.array(["v" * 4096]))
    bomb = ipc(pa.table({"d": one_value}))
    wide = encode_batch(pa.table({"a": pa.array(range(10), pa.int64())}))
    header = bytearray(wide)
    struct.pack_into("<I", header, 12, 2_000_000)  # nrows

    with pytest.raises(ArrowLimitError):
        decode_result(bomb, ARROW_MEDIA_TYPE, SMALL)
    with pytest.raises(ArrowLimitError):
        ipc_to_table(bomb, SMALL)
    with pytest.raises(ArrowLimitError, match="NOETL_ARROW_MAX_ROWS"):
        decode_batch(bytes(header))
    with pytest.raises(ArrowAbiError):
        ipc_to_table(b"garbage")
    assert decode_result(ipc(pa.table({"a": [1]})), ARROW_MEDIA_TYPE) == [{"a": 1}]


def test_limits_are_read_from_the_environment() -> None:
    env = {
        "NOETL_ARROW_MAX_ROWS": "10",
        "NOETL_ARROW_MAX_COLUMNS": "2",
        "NOETL_ARROW_MAX_DECODED_BYTES": "4096",
    }

    assert ArrowLimits.from_env(env) == ArrowLimits(max_rows=10, max_columns=2, max_decoded_bytes=4096)
    assert ArrowLimits.from_env({}) == ArrowLimits(1_000_000, 1000, 256 * MiB)
