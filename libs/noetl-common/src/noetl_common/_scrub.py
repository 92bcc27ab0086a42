"""Redaction of secrets in anything that leaves a process (ARCHITECTURE §10)."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

# ``pass`` must end the word or continue as password/passwd/passphrase: ``test_passed`` and
# ``passenger`` are not secrets (upstream fixtures return ``test_passed: true``).
_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?s?(?![a-z])|secret|token|api[_-]?key|apikey|private[_-]?key|credential|"
    r"authorization|auth[_-]?header|cookie|session[_-]?key|client[_-]?secret|dsn|"
    r"connection[_-]?string|access[_-]?key)",
    re.IGNORECASE,
)
# Keys that merely mention a secret-ish word but carry no secret.
_SAFE_KEYS = frozenset(
    {"token_type", "tokens", "max_tokens", "secret_name", "credential_name", "auth", "credential_type"}
)

_SECRET_VALUE = re.compile(
    r"(?:\b(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})"  # JWT
    r"|(?:-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$))"
    r"|(?:\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,})"  # Stripe-style
    r"|(?:\bsk-[A-Za-z0-9_-]{20,})"  # OpenAI-style
    r"|(?:\bgh[pousr]_[A-Za-z0-9]{20,})"  # GitHub
    r"|(?:\bgithub_pat_[A-Za-z0-9_]{20,})"
    r"|(?:\bxox[abposr]-[A-Za-z0-9-]{10,})"  # Slack
    r"|(?:\bAKIA[0-9A-Z]{16}\b)"  # AWS access key id
    r"|(?:\bAIza[0-9A-Za-z_-]{35})"  # Google API key
    r"|(?:\bglpat-[A-Za-z0-9_-]{20,})"  # GitLab
    r"|(?:(?<=://)[^/\s:@]+:[^/\s@]+(?=@))",  # user:password@ in URLs
)


def is_sensitive_key(key: str) -> bool:
    return key.lower() not in _SAFE_KEYS and bool(_SENSITIVE_KEY.search(key))


def scrub_text(text: str) -> str:
    """Redact secret-looking substrings of a string, whatever its key."""
    return _SECRET_VALUE.sub(REDACTED, text)


def scrub(value: Any, _depth: int = 0) -> Any:
    """Return a copy of ``value`` with sensitive keys and secret-looking strings redacted."""
    if _depth > 64:
        return REDACTED
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_sensitive_key(key) and item not in (None, "", {}, []):
                out[key] = REDACTED
            else:
                out[key] = scrub(item, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [scrub(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
