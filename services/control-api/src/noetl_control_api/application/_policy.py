"""Who may do what: principals, actions and the one policy decision point.

Every route names an *action*; the HTTP layer asks the policy before the handler runs, and a
use case whose catalog path is known only once the body is parsed (register, execute,
cancel) asks again with that path. Nothing else decides. :class:`RoleTable` is the built-in
policy; a system plug-in can replace it behind :class:`Policy` (architecture.md §8: auth and
RBAC belong to the system plug-in ring). The table is documented in docs/security.md.
"""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

from .._errors import Forbidden

HUMAN_ROLES: tuple[str, ...] = ("viewer", "operator", "developer", "admin")
SERVICE_ROLES: tuple[str, ...] = ("worker", "publisher", "projector")
ROLES: tuple[str, ...] = HUMAN_ROLES + SERVICE_ROLES
POOLS: tuple[str, ...] = ("shared", "python", "system")
SYSTEM_PREFIX = "system/"

#: Every action a route or use case may ask about.
ACTIONS: frozenset[str] = frozenset(
    {
        "auth.whoami",
        "catalog.read",
        "catalog.register",
        "execution.read",
        "execution.start",
        "execution.start_child",
        "execution.cancel",
        "event.read",
        "event.post",
        "event.project",
        "command.read",
        "command.claim",
        "command.fail",
        "worker.presence",
        "worker.read",
        "credential.read",
        "credential.write",
        "keychain.read",
        "keychain.write",
        "secret.resolve",
        "result.read",
        "result.write",
        "plugin.read",
        "plugin.publish",
        "object.read",
        "object.write",
        "outbox.claim",
        "outbox.mark",
        "outbox.read",
        "cleanup.purge",
        "token.manage",
    }
)

_READ = frozenset(
    {"auth.whoami", "catalog.read", "execution.read", "event.read", "command.read", "result.read", "plugin.read"}
)
#: ``ui.view``: the run inspector's pages, for people only (service tokens stay out of browsers)
_VIEWER = _READ | {"outbox.read", "worker.read", "ui.view"}
_OPERATOR = _VIEWER | {"execution.start", "execution.cancel"}
_DEVELOPER = _OPERATOR | {"catalog.register", "credential.read", "credential.write", "keychain.read", "keychain.write"}
_ADMIN = _DEVELOPER | {"plugin.publish", "token.manage", "cleanup.purge", "command.fail", "object.read"}
_WORKER = _READ | {
    "event.post",
    "command.claim",
    "command.fail",
    "worker.presence",
    "secret.resolve",
    "result.write",
    "object.read",
    "object.write",
    "execution.start_child",
    "cleanup.purge",
}

#: role → the actions it may take (before the path rule of :meth:`RoleTable.allows`).
GRANTS: dict[str, frozenset[str]] = {
    "viewer": _VIEWER,
    "operator": _OPERATOR,
    "developer": _DEVELOPER,
    "admin": _ADMIN,
    "worker": _WORKER,
    "publisher": frozenset({"auth.whoami", "outbox.claim", "outbox.mark", "outbox.read"}),
    "projector": frozenset({"auth.whoami", "event.project"}),
}

#: Actions a worker may take only when it serves the system pool.
_SYSTEM_POOL_ONLY = frozenset({"cleanup.purge"})
#: Actions that change something on a catalog path: on a system/ path, only admins (and the
#: system pool, for work it runs) may take them. Reads of system/ playbooks stay open.
_WRITES_ON_PATH = frozenset(
    {"catalog.register", "execution.start", "execution.start_child", "execution.cancel"}
)


class Principal(msgspec.Struct, kw_only=True, frozen=True):
    """An authenticated caller: a token's name and role (and pool, for a worker token)."""

    name: str
    role: str
    pool: str | None = None
    source: Literal["token", "config", "oidc"] = "token"
    token_id: int | None = None

    @property
    def is_worker(self) -> bool:
        return self.role == "worker"

    def describe(self) -> str:
        pool = f" of pool {self.pool}" if self.pool else ""
        return f"{self.name!r} (role {self.role}{pool})"


class Policy(Protocol):
    """The policy decision point: may ``principal`` take ``action`` (on catalog ``path``)?"""

    def allows(self, principal: Principal, action: str, path: str | None = None) -> bool:
        """True when allowed; must be pure and fast (it runs on every request)."""
        ...


class RoleTable:
    """The built-in policy: :data:`GRANTS`, plus the ``system/`` namespace rule."""

    def allows(self, principal: Principal, action: str, path: str | None = None) -> bool:
        granted = GRANTS.get(principal.role, frozenset())
        if action not in granted:
            return False
        if principal.is_worker and action in _SYSTEM_POOL_ONLY and principal.pool != "system":
            return False
        if path is not None and action in _WRITES_ON_PATH and is_system_path(path):
            return principal.role == "admin" or (principal.is_worker and principal.pool == "system")
        return True


def is_system_path(path: str) -> bool:
    """Whether a catalog path is in the ``system/`` namespace (any spelling of the prefix)."""
    return path.strip().lstrip("/").lower().startswith(SYSTEM_PREFIX)


def require(policy: Policy, principal: Principal, action: str, path: str | None = None) -> None:
    """Raise 403 naming the principal, the action and the path unless the policy allows it."""
    if not policy.allows(principal, action, path):
        where = f" on {path!r}" if path is not None else ""
        raise Forbidden(
            f"{principal.describe()} may not {action}{where}",
            {"action": action, "role": principal.role, **({"path": path} if path is not None else {})},
        )
