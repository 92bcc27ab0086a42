"""The ``postgres`` tool (psycopg, async).

Config: ``auth: <credential>`` (data ``{db_host, db_port, db_user, db_password, db_name}``,
also ``host/port/user/password/dbname|database``, ``sslmode``, or one ``dsn``), then
``query`` or ``command`` — one statement, or several separated by ``;`` (run in one
transaction) — and optional ``params`` (a mapping for ``%(name)s`` or a list for ``%s``;
with params only one statement is allowed). ``autocommit: true`` for statements that
cannot run inside a transaction; ``timeout`` bounds the connect (seconds, 30).

With ``auth:``, the credential alone says where and as whom to connect: a connection field
in the task beside it (``host``, ``port``, ``user``, ``password``, ``dbname``, ``dsn``,
``sslmode``, a ``connection`` mapping ...) is refused, so a playbook cannot send a
credential's password to a server of its choosing. Without ``auth:`` the task's own
fields (or its ``connection`` mapping) are the connection.

Result ``{rows, columns, row_count, command}`` of the last statement that returned rows
(``row_count`` is the total of affected rows when none did), plus ``statements`` — one
such entry per statement — when there was more than one. Values are JSON-friendly
(numeric → int/float, timestamps → ISO 8601, uuid → str, bytea → base64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from .._runtime import auth_name, runtime
from ._values import json_value

_KEYS = {
    "host": ("db_host", "host", "hostname"),
    "port": ("db_port", "port"),
    "user": ("db_user", "user", "username"),
    "password": ("db_password", "password"),
    "dbname": ("db_name", "dbname", "database", "db"),
    "sslmode": ("sslmode", "db_sslmode"),
}
_DSN_KEYS = ("dsn", "connection_string", "url")
#: Every task field :func:`conninfo` would read, and the ``connection`` mapping that holds them.
CONNECTION_FIELDS = (*_DSN_KEYS, *(alias for aliases in _KEYS.values() for alias in aliases), "connection")


def conninfo(*sources: Mapping[str, Any]) -> str:
    """A libpq conninfo from credential data and task config (later sources win)."""
    dsn = ""
    params: dict[str, Any] = {}
    for source in sources:
        for key in _DSN_KEYS:
            if isinstance(source.get(key), str) and source[key]:
                dsn = source[key]
        for name, aliases in _KEYS.items():
            for alias in aliases:
                if source.get(alias) not in (None, ""):
                    params[name] = str(source[alias])
                    break
    if not dsn and "host" not in params and "dbname" not in params:
        raise ValueError("postgres tool: no connection; set auth: <credential> (db_host, db_name, ...)")
    return make_conninfo(dsn, **params)


def _sql(config: Mapping[str, Any]) -> str:
    for key in ("command", "query", "sql"):
        value = config.get(key)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError("postgres tool: set 'query' or 'command'")


async def execute(dsn: str, sql: str, params: Any, *, autocommit: bool, timeout: float) -> dict[str, Any]:
    """Run ``sql`` (one or more statements) and describe every statement's result."""
    statements: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=autocommit, connect_timeout=max(1, int(timeout))
    ) as conn:
        async with conn.cursor() as cur:
            await cur.execute(sql, params or None)
            while True:
                entry: dict[str, Any] = {"command": cur.statusmessage}
                if cur.description is not None:
                    columns = [c.name for c in cur.description]
                    rows = [
                        dict(zip(columns, (json_value(v) for v in row), strict=True))
                        for row in await cur.fetchall()
                    ]
                    entry.update(columns=columns, rows=rows, row_count=len(rows))
                else:
                    entry["row_count"] = max(cur.rowcount, 0)
                statements.append(entry)
                if not cur.nextset():
                    break
    with_rows = [s for s in statements if "rows" in s]
    if with_rows:
        last = with_rows[-1]
        result = {"rows": last["rows"], "columns": last["columns"], "row_count": last["row_count"]}
    else:
        result = {"rows": [], "columns": [], "row_count": sum(s["row_count"] for s in statements)}
    result["command"] = statements[-1]["command"] if statements else None
    if len(statements) > 1:
        result["statements"] = statements
    return result


async def run_postgres(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Run the task's SQL against the credential's database."""
    sql = _sql(config)
    name = auth_name(config.get("auth"))
    if name:
        given = [key for key in CONNECTION_FIELDS if config.get(key) not in (None, "", {})]
        if given:
            raise PermissionError(
                f"postgres tool: {given[0]!r} cannot be set beside auth: {name!r}; the credential"
                " alone says where and as whom to connect (remove the field, or use another credential)"
            )
        source: Mapping[str, Any] = (await runtime().credential(name))["data"]
    else:
        connection = config.get("connection")
        source = connection if isinstance(connection, Mapping) else config
    params = config.get("params")
    if params is not None and not isinstance(params, Mapping | list):
        raise ValueError("postgres tool: 'params' must be a mapping or a list")
    return await execute(
        conninfo(source),
        sql,
        params,
        autocommit=bool(config.get("autocommit", False)),
        timeout=float(config.get("timeout") or 30),
    )


def postgres_helper(result: Any) -> dict[str, Any]:
    """``outcome.postgres``: ``row_count``, ``rows``, ``columns``, ``command``."""
    if not isinstance(result, Mapping):
        return {"row_count": None, "rows": [], "columns": [], "command": None}
    return {k: result.get(k) for k in ("row_count", "rows", "columns", "command")}
