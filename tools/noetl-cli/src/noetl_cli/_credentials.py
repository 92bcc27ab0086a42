"""Where the CLI finds its token: ``NOETL_API_TOKEN``, else the credentials file.

The file, ``$XDG_CONFIG_HOME/noetl/credentials.json`` (``~/.config/noetl/...``), maps a
control-api base URL to the token to send it: ``{"servers": {"http://127.0.0.1:8082":
{"token": "noetl_..."}}}``. It is written with mode 0600 (atomically, so a reader never sees
half a file) by ``make up`` for the admin token it creates, and by ``noetl login``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TOKEN_VARIABLE = "NOETL_API_TOKEN"


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "noetl" / "credentials.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def stored_token(server: str, path: Path | None = None) -> str | None:
    """The token stored for ``server`` in the credentials file, if any."""
    servers = _read(path or credentials_path()).get("servers")
    entry = servers.get(server.rstrip("/")) if isinstance(servers, dict) else None
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def token_for(server: str) -> str | None:
    """``NOETL_API_TOKEN`` when set, else the token stored for ``server``."""
    return os.environ.get(TOKEN_VARIABLE) or stored_token(server)


def store_token(server: str, token: str, path: Path | None = None) -> Path:
    """Remember ``token`` for ``server`` (mode 0600); returns the file written."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = _read(path)
    found = data.get("servers")
    servers: dict[str, Any] = found if isinstance(found, dict) else {}
    servers[server.rstrip("/")] = {"token": token}
    data["servers"] = servers
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
