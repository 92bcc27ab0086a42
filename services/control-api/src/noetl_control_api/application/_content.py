"""What a registration's ``content`` holds: the playbook's YAML, or that YAML base64-encoded."""

from __future__ import annotations

import base64
import binascii
import re

# base64 of the standard alphabet, padded; YAML text never matches (a mapping needs ':' and
# whitespace), so a text that does is taken for base64 only when it decodes to UTF-8
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def playbook_text(content: str) -> str:
    """``content`` as YAML text: base64 (what the upstream CLI sends) decoded, text as is."""
    compact = re.sub(r"[\r\n]", "", content.strip())  # wrapped lines, as `base64` writes them
    if len(compact) % 4 or not _BASE64.fullmatch(compact):
        return content
    try:
        return base64.b64decode(compact, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return content
