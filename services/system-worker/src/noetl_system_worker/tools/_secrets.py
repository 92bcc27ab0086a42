"""The ``secrets`` tool: read a named secret into the step result.

Config, one of:
* ``name`` / ``key`` (``provider: keychain``, the default): a keychain entry — an
  environment variable listed in the worker's ``NOETL_KEYCHAIN_ENV_VARS`` when set there,
  else the entry of the playbook's root ``keychain:`` block (an ``oauth2`` token fetched
  when needed), else the control-api's entry (the execution's wins over a global one);
* ``env`` (or ``provider: env`` with ``name``): an allow-listed environment variable;
* ``credential`` (or ``provider: credential``, or ``auth:``): a credential's data.

Result ``{name, provider, value}``. Every value read is remembered by the command's
runtime: later tasks of the same pipeline see it, but the worker redacts it from every
event it sends, so the clear value never reaches the control-api or the event log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._runtime import auth_name, runtime
from ._keychain import keychain_values


async def run_secrets(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Resolve one secret; see the module docstring."""
    rt = runtime()
    provider = str(config.get("provider") or "").lower()
    credential = config.get("credential") or (auth_name(config.get("auth")) if provider != "env" else None)
    name = config.get("name") or config.get("key") or config.get("env") or credential
    if not isinstance(name, str) or not name:
        raise ValueError("secrets tool: set 'name' (keychain), 'env' or 'credential'")
    if provider == "credential" or (credential and not provider):
        found = await rt.credential(name)
        rt.remember(found["data"])
        return {
            "name": name,
            "provider": "credential",
            "credential_type": found["credential_type"],
            "value": found["data"],
        }
    if provider == "env" or (config.get("env") and not provider):
        return {"name": name, "provider": "env", "value": rt.env_var(name)}
    if provider not in ("", "keychain"):
        raise ValueError(f"secrets tool: unknown provider {provider!r} (keychain, env, credential)")
    value = rt.listed_env(name)
    if value is None:
        value = (await keychain_values(rt, [name]))[name]
    return {"name": name, "provider": "keychain", "value": value}


def secrets_helper(result: Any) -> dict[str, Any]:
    """``outcome.secrets``: ``name``, ``provider`` and ``found`` — never the value."""
    found = result if isinstance(result, Mapping) else {}
    return {"name": found.get("name"), "provider": found.get("provider"), "found": "value" in found}
