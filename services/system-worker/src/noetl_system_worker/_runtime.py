"""What a tool may reach besides its config and inputs: credentials, keychain, NATS settings,
the http tool's egress policy and the folders the duckdb tool may read.

The worker sets one :class:`ToolRuntime` per claimed command (a context variable, so the
tool signature stays ``(config, args, ctx)``). Credentials and keychain entries are
resolved through the control-api's internal routes only when a task asks for them, right
before it runs, and are cached for the rest of the command. Every secret value resolved
is remembered so the worker can redact it from the command's events
(:meth:`ToolRuntime.redact`): a secret may flow between the tasks of one pipeline, but it
never leaves the worker in clear.
"""

from __future__ import annotations

import contextvars
import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from noetl_common import REDACTED, scrub, scrub_text

from ._egress import EgressPolicy
from ._step_logs import StepLog

#: Secret strings shorter than this are not redacted by value (they would match everywhere).
MIN_REDACT_LENGTH = 4

#: The suite's own secrets: a playbook never reads them from the worker's environment.
SUITE_SECRET_VARIABLES = (
    "NOETL_*TOKEN*",
    "NOETL_CREDENTIALS_KEY",
    "NOETL_DATABASE_URL",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
)


def is_suite_secret(name: str) -> bool:
    """Whether the environment variable ``name`` holds one of the suite's own secrets."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, pattern) for pattern in SUITE_SECRET_VARIABLES)


class SecretSource(Protocol):
    """The control-api calls the runtime makes (``ControlPlaneClient`` implements them)."""

    async def resolve_credentials(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """``{name: {name, credential_type, data}}``; raises ``ApiError`` 404 for unknown names."""
        ...

    async def resolve_keychain(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """``{name: value}``; the execution's entry wins over a global one."""
        ...

    async def keychain_entries(
        self,
        names: list[str],
        execution_id: int | None,
        *,
        event_id: int | None = None,
        worker_id: str | None = None,
    ) -> dict[str, Any]:
        """``{values, fetch?, sensitive_only?}``: ``fetch`` holds the token requests of the
        playbook's ``oauth2`` entries that need a new token."""
        ...

    async def store_keychain_token(
        self, name: str, value: dict[str, Any], *, event_id: int | None, worker_id: str | None
    ) -> dict[str, Any]:
        """Keep a fetched ``oauth2`` token with the execution."""
        ...


class CredentialError(LookupError):
    """A task named a credential or secret that cannot be resolved here."""


def auth_name(auth: Any) -> str | None:
    """The credential an ``auth:`` value names: a string, or ``{credential|key|name: ...}``.

    ``auth: {}`` and other mappings without a name are tolerated (conformance C7).
    """
    if isinstance(auth, str):
        return auth.strip() or None
    if isinstance(auth, Mapping):
        for key in ("credential", "key", "name"):
            value = auth.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _secret_strings(value: Any, *, sensitive_only: bool) -> Iterable[str]:
    """The string leaves of ``value``; with ``sensitive_only``, only under sensitive keys."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            hidden = isinstance(key, str) and scrub({key: "x"})[key] == REDACTED
            if hidden and isinstance(item, str | int | float) and not isinstance(item, bool):
                yield str(item)
            else:
                yield from _secret_strings(item, sensitive_only=sensitive_only)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_strings(item, sensitive_only=sensitive_only)
    elif isinstance(value, str) and not sensitive_only:
        yield value


@dataclass
class ToolRuntime:
    """Per-command services for tools; ``api`` None means nothing can be resolved remotely."""

    api: SecretSource | None = None
    execution_id: int | None = None
    #: the claim key and worker of the command this runtime serves: the API resolves secrets
    #: only for a command whose lease the asking worker holds
    event_id: int | None = None
    worker_id: str | None = None
    #: the catalog path of the command's playbook (python tasks of one playbook share a sandbox child)
    catalog_path: str | None = None
    keychain_env_vars: tuple[str, ...] = ()
    nats_url: str | None = None
    nats_user: str | None = None
    nats_password: str | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    duckdb_directories: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    secrets: set[str] = field(default_factory=set)
    #: what the command's python tasks print and log (step logs)
    step_log: StepLog = field(default_factory=StepLog)
    #: keychain values read by this command's templates (``{{ keychain.<name> }}``)
    keychain_values: dict[str, Any] = field(default_factory=dict)
    _credentials: dict[str, dict[str, Any]] = field(default_factory=dict)

    def remember(self, value: Any, *, sensitive_only: bool = False) -> None:
        """Mark the string leaves of ``value`` as secrets to redact from events."""
        for text in _secret_strings(value, sensitive_only=sensitive_only):
            if len(text) >= MIN_REDACT_LENGTH:
                self.secrets.add(text)

    async def credential(self, name: str) -> dict[str, Any]:
        """``{name, credential_type, data}`` of a named credential, resolved once per command."""
        cached = self._credentials.get(name)
        if cached is not None:
            return cached
        if self.api is None:
            raise CredentialError(f"credential {name!r}: this worker has no control-api to resolve it")
        try:
            found = await self.api.resolve_credentials(
                [name], self.execution_id, event_id=self.event_id, worker_id=self.worker_id
            )
        except Exception as exc:
            raise CredentialError(f"credential {name!r} cannot be resolved: {exc}") from None
        entry = found.get(name)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("data"), Mapping):
            raise CredentialError(f"credential {name!r} not found")
        resolved = {
            "name": name,
            "credential_type": str(entry.get("credential_type") or "generic"),
            "data": dict(entry["data"]),
        }
        # only the sensitive fields: redacting a host name or port everywhere would garble results
        self.remember(resolved["data"], sensitive_only=True)
        self._credentials[name] = resolved
        return resolved

    def listed_env(self, name: str) -> str | None:
        """An environment variable ``NOETL_KEYCHAIN_ENV_VARS`` lists (a keychain name is read
        from there first); None when it is not listed or not set."""
        if not self._readable(name) or name not in self.env:
            return None
        value = self.env[name]
        self.remember(value)
        return value

    def env_var(self, name: str) -> str:
        """An environment variable, only when ``NOETL_KEYCHAIN_ENV_VARS`` allows it."""
        if is_suite_secret(name):
            raise CredentialError(f"environment variable {name!r} is one of the worker's own secrets")
        if not self._readable(name):
            raise CredentialError(
                f"environment variable {name!r} is not in NOETL_KEYCHAIN_ENV_VARS on this worker"
            )
        if name not in self.env:
            raise CredentialError(f"environment variable {name!r} is not set on this worker")
        value = self.env[name]
        self.remember(value)
        return value

    def _readable(self, name: str) -> bool:
        # listed, and never a suite secret: the config refuses those at start, this holds
        # for a runtime built any other way too
        return name in self.keychain_env_vars and not is_suite_secret(name)

    def scrub_text(self, text: str) -> str:
        """``text`` with every remembered secret and every secret-looking substring redacted."""
        redacted: str = self.redact(text)
        return scrub_text(redacted)

    def redact(self, value: Any) -> Any:
        """``value`` with every remembered secret replaced by ``[REDACTED]`` (strings, keys kept)."""
        if not self.secrets:
            return value
        ordered = sorted(self.secrets, key=len, reverse=True)

        def walk(item: Any) -> Any:
            if isinstance(item, str):
                for secret in ordered:
                    if secret in item:
                        item = item.replace(secret, REDACTED)
                return item
            if isinstance(item, Mapping):
                return {k: walk(v) for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [walk(v) for v in item]
            return item

        return walk(value)


#: Set by the worker around each claimed command's pipeline.
current_runtime: contextvars.ContextVar[ToolRuntime | None] = contextvars.ContextVar(
    "noetl_tool_runtime", default=None
)


def runtime() -> ToolRuntime:
    """The current command's runtime; outside a command, one that cannot resolve anything."""
    found = current_runtime.get()
    if found is None:
        found = ToolRuntime()
        current_runtime.set(found)
    return found
