"""The stored-result codec and references (architecture.md §5.6)."""

from __future__ import annotations

import pyarrow as pa
from noetl_common.results import (
    ARROW_MEDIA_TYPE,
    JSON_MEDIA_TYPE,
    decode_result,
    encode_result,
    is_tabular,
    ref_key,
    result_ref,
)


def test_flat_rows_and_tables_are_tabular_other_values_are_not() -> None:
    assert is_tabular([{"a": 1, "b": "x"}, {"a": 2, "b": None}])
    assert is_tabular(pa.table({"a": [1]}))
    assert not is_tabular([])
    assert not is_tabular([{"a": {"nested": 1}}])
    assert not is_tabular([{"a": 1}, 2])
    assert not is_tabular({"rows": [{"a": 1}]})


def test_rows_round_trip_through_arrow() -> None:
    rows = [{"id": i, "name": f"n{i}", "score": i / 2, "ok": i % 2 == 0, "gap": None} for i in range(5)]

    data, media = encode_result(rows)

    assert media == ARROW_MEDIA_TYPE and data[:4] != b'[{"i'
    assert decode_result(data, media) == rows


def test_a_column_arrow_cannot_type_falls_back_to_json() -> None:
    rows = [{"v": 1}, {"v": "text"}]

    data, media = encode_result(rows)

    assert media == JSON_MEDIA_TYPE and decode_result(data, media) == rows


def test_documents_are_json_and_unknown_media_is_bytes() -> None:
    data, media = encode_result({"a": [1, 2]})
    assert media == JSON_MEDIA_TYPE and decode_result(data, "application/json; charset=utf-8") == {
        "a": [1, 2]
    }
    assert decode_result(b"\x00\x01", "application/octet-stream") == b"\x00\x01"


def test_references_are_recognised_only_in_their_exact_shape() -> None:
    ref = result_ref("1/abc", 10, JSON_MEDIA_TYPE)
    assert ref == {
        "$ref": {"store": "noetl.result", "key": "1/abc", "size": 10, "media_type": JSON_MEDIA_TYPE}
    }
    assert ref_key(ref) == "1/abc"
    assert ref_key({"$ref": {"store": "elsewhere", "key": "k"}}) is None
    assert ref_key({"$ref": ref["$ref"], "other": 1}) is None
    assert ref_key({"$ref": {"store": "noetl.result", "key": ""}}) is None
    assert ref_key("1/abc") is None
