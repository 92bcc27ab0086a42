"""Redaction of secrets in anything that leaves a process (architecture.md §10)."""

from __future__ import annotations

import functools
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
    # this suite's API tokens: noetl_ + 43 url-safe characters, one of them upper case or a
    # digit (which a metric or consumer name of the same length never has)
    r"|(?:\bnoetl_(?=[A-Za-z0-9_-]{0,42}[A-Z0-9])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-]))"
    r"|(?:(?<=://)[^/\s:@]+:[^/\s@]+(?=@))",  # user:password@ in URLs
)


# Every alternative of _SECRET_VALUE contains one of these literals (the URL form needs "://"
# and "@"). Substring tests run in C; the regex tries all its alternatives at every position,
# ~20 µs for 100 characters. So only strings holding a marker pay for the regex.
_MARKERS = (
    "Bearer",
    "Basic",
    "eyJ",
    "PRIVATE KEY",
    "_live_",
    "_test_",
    "sk-",
    "gh",
    "github_pat_",
    "xox",
    "AKIA",
    "AIza",
    "glpat-",
    "noetl_",
)
_SHORTEST_SECRET = 7  # "://a:b@"
_LEAVES = frozenset({int, float, bool, type(None)})


def _sensitive(key: str) -> bool:
    return key.lower() not in _SAFE_KEYS and bool(_SENSITIVE_KEY.search(key))


# keys repeat across events; only short ones are remembered, so the cache stays small
_sensitive_cached = functools.lru_cache(maxsize=4096)(_sensitive)


def is_sensitive_key(key: str) -> bool:
    """True when a value under ``key`` is redacted whole."""
    return _sensitive_cached(key) if len(key) <= 64 else _sensitive(key)


def _may_hold_secret(text: str) -> bool:
    if len(text) < _SHORTEST_SECRET:
        return False
    for marker in _MARKERS:
        if marker in text:
            return True
    return "://" in text and "@" in text


def scrub_text(text: str) -> str:
    """Redact secret-looking substrings of a string, whatever its key."""
    if not _may_hold_secret(text):
        return text
    return _SECRET_VALUE.sub(REDACTED, text)


def scrub(value: Any, _depth: int = 0) -> Any:
    """Return a copy of ``value`` with sensitive keys and secret-looking strings redacted."""
    kind = type(value)
    if kind is str:
        return scrub_text(value)
    if kind in _LEAVES:
        return value
    if _depth > 64:
        return REDACTED
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if type(key) is str and is_sensitive_key(key) and item not in (None, "", {}, []):
                out[key] = REDACTED
            else:
                out[key] = scrub(item, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [scrub(item, _depth + 1) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value
