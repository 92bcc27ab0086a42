"""The root ``keychain:`` block: named secrets a playbook's tasks read as ``{{ keychain.<name> }}``.

Upstream's shape: a list of entries, each ``name`` and ``kind`` (or ``type``) plus the fields
of its kind. Kinds taken here:

* ``static``: ``map`` of field → value (templates over ``workload``);
* ``bearer``: ``token`` → ``{access_token, token_type: Bearer}``;
* ``credential`` (``credential_ref``): a stored credential's data, named by ``ref`` /
  ``credential`` / ``auth`` (the entry's own name when none is given);
* ``oauth2``: a client-credentials token from ``endpoint`` (``token_url``), with the client
  id and secret of the credential named by ``credential`` / ``auth`` and the form fields of
  ``data``; renewed shortly before it expires.

Every entry is resolved for one execution and kept with it (upstream's ``scope`` is taken and
has no other effect). Only definitions live here: values are resolved for the worker at claim
time by the control-api (docs/security.md).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
from noetl_common.templating import TemplateError, check_syntax, has_template

from ._errors import PlaybookError

KeychainKind = Literal["static", "bearer", "credential", "oauth2"]

#: Entries in one block, fields of a ``map`` / ``data`` / ``headers``: far above real use.
MAX_ENTRIES = 50
MAX_FIELDS = 50
#: ``keychain.<name>`` must read as an attribute (``-`` only through ``keychain['a-b']``).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
#: Upstream's ``scope`` values; all mean "this execution" here.
SCOPES = frozenset({"global", "local", "catalog", "shared", "execution"})
#: Upstream kinds that need a cloud SDK or a secret manager; refused by name at register.
UNSUPPORTED_KINDS = frozenset(
    {"secret_manager", "google_id_token", "google_oauth", "google_service_account", "google"}
)
_KIND_ALIASES = {"credential_ref": "credential"}
_COMMON_KEYS = frozenset({"name", "kind", "type", "scope", "ttl_seconds", "auto_renew", "description"})
#: Keys each kind accepts besides the common ones (an unknown key is a register-time error).
KIND_KEYS: dict[str, frozenset[str]] = {
    "static": frozenset({"map"}),
    "bearer": frozenset({"token"}),
    "credential": frozenset({"ref", "credential", "auth"}),
    "oauth2": frozenset(
        {"endpoint", "token_url", "method", "headers", "data", "credential", "auth", "client_auth", "token_field"}
    ),
}
MAX_TTL_SECONDS = 10 * 365 * 86400.0


class KeychainEntry(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One validated entry of the root ``keychain:`` block (definitions only, no values)."""

    name: str
    kind: KeychainKind
    #: lifetime of the resolved value; for ``oauth2`` it caps the token's ``expires_in``
    ttl_seconds: float | None = None
    description: str | None = None
    #: ``static``: field → value or template
    map: dict[str, Any] = msgspec.field(default_factory=dict)
    #: ``bearer``: the token or a template
    token: str | None = None
    #: ``credential`` and ``oauth2``: the stored credential it reads
    credential: str | None = None
    #: ``oauth2``: the token URL (or the credential's ``token_url``), request method, extra
    #: headers and form fields, how the client authenticates, the field holding the token
    endpoint: str | None = None
    method: str = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    client_auth: Literal["body", "basic"] = "body"
    token_field: str = "access_token"


def keychain_block(raw: Any) -> list[KeychainEntry]:
    """Parse and validate the root ``keychain:`` value; raise :class:`PlaybookError`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise PlaybookError("keychain must be a list of entries {name, kind, ...}", field="keychain")
    if len(raw) > MAX_ENTRIES:
        raise PlaybookError(f"keychain holds {len(raw)} entries, more than {MAX_ENTRIES}", field="keychain")
    entries: list[KeychainEntry] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        entry = _entry(item, f"keychain[{index}]")
        if entry.name in seen:
            raise PlaybookError(f"duplicate keychain entry {entry.name!r}", field=f"keychain[{index}].name")
        seen.add(entry.name)
        entries.append(entry)
    return entries


def _entry(item: Any, where: str) -> KeychainEntry:
    if not isinstance(item, dict):
        raise PlaybookError("a keychain entry must be a mapping {name, kind, ...}", field=where)
    name = item.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise PlaybookError(
            "a keychain entry needs a name of letters, digits, _ and - (starting with a letter or _),"
            f" at most 100 characters; got {str(name)[:60]!r}",
            field=f"{where}.name",
        )
    where = f"keychain.{name}"
    raw_kind = item.get("kind", item.get("type"))
    kind = _KIND_ALIASES.get(str(raw_kind), str(raw_kind))
    if kind in UNSUPPORTED_KINDS:
        raise PlaybookError(
            f"keychain kind {kind!r} is not supported here (static, bearer, credential, oauth2);"
            " store the secret as a credential and use kind: credential",
            field=f"{where}.kind",
        )
    if kind not in KIND_KEYS:
        raise PlaybookError(
            f"keychain kind must be one of static, bearer, credential, oauth2; got {raw_kind!r}",
            field=f"{where}.kind",
        )
    unknown = sorted(str(k) for k in item if k not in _COMMON_KEYS and k not in KIND_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_COMMON_KEYS | KIND_KEYS[kind]))
        raise PlaybookError(
            f"unknown key(s) {', '.join(unknown)} in a {kind} keychain entry (allowed: {allowed})",
            field=f"{where}.{unknown[0]}",
        )
    scope = item.get("scope")
    if scope is not None and scope not in SCOPES:
        raise PlaybookError(f"scope must be one of {', '.join(sorted(SCOPES))}", field=f"{where}.scope")
    if not isinstance(item.get("auto_renew", False), bool):
        raise PlaybookError("auto_renew must be true or false", field=f"{where}.auto_renew")
    fields: dict[str, Any] = {"name": name, "kind": kind}
    fields["ttl_seconds"] = _ttl(item.get("ttl_seconds"), where)
    description = item.get("description")
    if description is not None:
        fields["description"] = _text(description, f"{where}.description", 1000)
    fields.update(_KIND_PARSERS[kind](item, where))
    _check_templates(fields, where)
    return msgspec.convert(fields, KeychainEntry)


def _ttl(raw: Any, where: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw <= MAX_TTL_SECONDS:
        raise PlaybookError("ttl_seconds must be a positive number of seconds, at most ten years", field=f"{where}.ttl_seconds")
    return float(raw)


def _text(raw: Any, field: str, limit: int = 2048) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > limit:
        raise PlaybookError(f"must be a non-empty string of at most {limit} characters", field=field)
    return raw


def _fields(raw: Any, field: str, *, strings: bool = False) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_FIELDS:
        raise PlaybookError(f"must be a mapping of at most {MAX_FIELDS} fields", field=field)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if strings:
            value = _text(str(value) if isinstance(value, (int, float)) else value, f"{field}.{key}")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise PlaybookError("values must be strings, numbers or booleans", field=f"{field}.{key}")
        out[str(key)] = value
    return out


def _static(item: dict[str, Any], where: str) -> dict[str, Any]:
    values = _fields(item.get("map"), f"{where}.map")
    if not values:
        raise PlaybookError("a static keychain entry needs a non-empty map of fields", field=f"{where}.map")
    return {"map": values}


def _bearer(item: dict[str, Any], where: str) -> dict[str, Any]:
    return {"token": _text(item.get("token"), f"{where}.token")}


def _credential_name(item: dict[str, Any], where: str, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = item.get(key)
        if isinstance(value, dict):  # ``auth: {credential: name}`` as a task's auth: takes it
            value = value.get("credential") or value.get("key") or value.get("name")
        if value is not None:
            return _text(value, f"{where}.{key}", 200)
    return None


def _credential(item: dict[str, Any], where: str) -> dict[str, Any]:
    # upstream reads ``ref or credential or name``: the entry's name is the default
    return {"credential": _credential_name(item, where, ("ref", "credential", "auth")) or item["name"]}


def _oauth2(item: dict[str, Any], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    credential = _credential_name(item, where, ("credential", "auth"))
    endpoint = item.get("endpoint", item.get("token_url"))
    if endpoint is not None:
        fields["endpoint"] = _text(endpoint, f"{where}.endpoint")
        if not has_template(endpoint) and not re.match(r"https?://[^/\s]+", endpoint):
            raise PlaybookError("endpoint must be an http(s) URL", field=f"{where}.endpoint")
    if credential is None and endpoint is None:
        raise PlaybookError(
            "an oauth2 keychain entry needs a credential (client_id, client_secret, token_url?) or an endpoint",
            field=f"{where}.credential",
        )
    if credential is not None:
        fields["credential"] = credential
    method = str(item.get("method") or "POST").upper()
    if method not in ("POST", "GET"):
        raise PlaybookError("method must be POST or GET", field=f"{where}.method")
    fields["method"] = method
    fields["headers"] = _fields(item.get("headers"), f"{where}.headers", strings=True)
    fields["data"] = _fields(item.get("data"), f"{where}.data")
    client_auth = item.get("client_auth", "body")
    if client_auth not in ("body", "basic"):
        raise PlaybookError("client_auth must be body or basic", field=f"{where}.client_auth")
    fields["client_auth"] = client_auth
    fields["token_field"] = _text(item.get("token_field", "access_token"), f"{where}.token_field", 100)
    return fields


_KIND_PARSERS = {"static": _static, "bearer": _bearer, "credential": _credential, "oauth2": _oauth2}


def _check_templates(value: Any, where: str) -> None:
    """Templates in an entry are checked for syntax at register, rendered at resolve."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_templates(item, f"{where}.{key}")
    elif isinstance(value, str) and has_template(value):
        try:
            check_syntax(value)
        except TemplateError as exc:
            raise PlaybookError(f"template syntax error: {exc.message}", field=where) from None
