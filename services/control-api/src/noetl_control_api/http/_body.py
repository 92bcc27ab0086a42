"""Decoding of bodies the handlers read themselves (union bodies, YAML uploads)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from .._errors import ValidationFailed

T = TypeVar("T")


def decode_json(body: bytes, kind: type[T]) -> T:
    """Decode JSON into ``kind``; ids given as strings are accepted (strict=False)."""
    return convert(decode_typed(body, object), kind)


class BodyShape(msgspec.Struct):
    """Which of ``POST /api/events``'s bodies came: an ``EventBatch`` has ``events`` and no
    ``event_type`` (the values are skipped, not built; an empty ``Raw`` is an absent key)."""

    events: msgspec.Raw = msgspec.Raw(b"")
    event_type: msgspec.Raw = msgspec.Raw(b"")


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode_typed(body: bytes, kind: type[T]) -> T:
    """Decode JSON straight into ``kind`` (no builtins first: ``Raw`` fields stay text); ids
    given as strings are accepted (strict=False)."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind, strict=False)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ValidationFailed("malformed JSON: nested too deeply") from None


def convert(raw: Any, kind: type[T]) -> T:
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(f"invalid body: {exc}") from None
    except RecursionError:
        raise ValidationFailed("invalid body: nested too deeply") from None
