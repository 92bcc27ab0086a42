"""Result-store references and the codec of stored results (architecture.md §5.6).

A step result too large for an event is stored with ``PUT /api/result/{execution_id}``
and the event carries a reference in its place::

    {"$ref": {"store": "noetl.result", "key": "...", "size": 123, "media_type": "..."}}

Tabular results (a non-empty list of flat dicts, or a ``pyarrow.Table``) are stored as an
Arrow IPC stream (:data:`ARROW_MEDIA_TYPE`) and decode back to a list of row dicts; any
other value is stored as JSON. pyarrow is imported only when Arrow is actually used, so
services that never touch tabular results do not need it (``noetl-common[arrow]``).
Arrow data is checked against :class:`~noetl_common.arrow_limits.ArrowLimits` before it is
decoded and again before it becomes rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from .arrow_limits import ArrowLimits

RESULT_STORE = "noetl.result"
JSON_MEDIA_TYPE = "application/json"
ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
OCTET_MEDIA_TYPE = "application/octet-stream"
#: Results above this many bytes of JSON go to the result store (the worker's default).
DEFAULT_RESULT_INLINE_MAX_BYTES = 100 * 1024

_SCALARS = (str, int, float, bool, type(None))


def result_ref(key: str, size: int, media_type: str) -> dict[str, Any]:
    """The reference an event carries in place of a stored result."""
    return {"$ref": {"store": RESULT_STORE, "key": key, "size": size, "media_type": media_type}}


def ref_key(value: Any) -> str | None:
    """The store key when ``value`` is a result-store reference, else None."""
    if not isinstance(value, dict) or set(value) != {"$ref"}:
        return None
    ref = value["$ref"]
    if not isinstance(ref, dict) or ref.get("store") != RESULT_STORE:
        return None
    key = ref.get("key")
    return key if isinstance(key, str) and key else None


def is_tabular(value: Any) -> bool:
    """A non-empty list of dicts whose values are all scalars (or a pyarrow Table)."""
    if type(value).__name__ == "Table" and type(value).__module__.startswith("pyarrow"):
        return True
    if not isinstance(value, list) or not value:
        return False
    return all(
        isinstance(row, dict)
        and all(isinstance(k, str) for k in row)
        and all(isinstance(v, _SCALARS) for v in row.values())
        for row in value
    )


def _to_arrow(value: Any) -> bytes:
    import pyarrow as pa

    table = value if isinstance(value, pa.Table) else pa.Table.from_pylist(value)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def encode_result(value: Any) -> tuple[bytes, str]:
    """Bytes and media type for storing ``value``: Arrow IPC when tabular, else JSON.

    A list of rows whose columns Arrow cannot type consistently (mixed types in one
    column) falls back to JSON rather than failing.
    """
    if is_tabular(value):
        try:
            return _to_arrow(value), ARROW_MEDIA_TYPE
        except Exception:  # pyarrow raises several types for un-typeable columns
            if not isinstance(value, list):
                raise
    return msgspec.json.encode(value, enc_hook=str), JSON_MEDIA_TYPE


def decode_result(data: bytes, media_type: str, limits: ArrowLimits | None = None) -> Any:
    """The value stored as ``data``: rows for Arrow, the document for JSON, else the bytes.

    Arrow data over ``limits`` (default: the settings' defaults) raises ``ArrowLimitError``
    before it is decoded or materialised; bytes that are no IPC stream raise ``IpcFormatError``.
    """
    base = media_type.split(";", 1)[0].strip().lower()
    if base == ARROW_MEDIA_TYPE:
        from .arrow_limits import ArrowLimits, read_ipc

        return read_ipc(data, limits or ArrowLimits()).to_pylist()
    if base == JSON_MEDIA_TYPE or base.endswith("+json"):
        return msgspec.json.decode(data)
    return data


__all__ = [
    "ARROW_MEDIA_TYPE",
    "DEFAULT_RESULT_INLINE_MAX_BYTES",
    "JSON_MEDIA_TYPE",
    "OCTET_MEDIA_TYPE",
    "RESULT_STORE",
    "decode_result",
    "encode_result",
    "is_tabular",
    "ref_key",
    "result_ref",
]
