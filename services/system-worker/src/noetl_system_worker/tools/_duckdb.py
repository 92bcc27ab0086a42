"""The ``duckdb`` tool: in-process DuckDB, in memory unless ``database`` names a file.

Config: ``database`` (``:memory:`` by default; a file path gets its parent directory
created — never for ``:memory:``, the upstream bug that made ``os.makedirs('')`` fail),
``query`` / ``command`` (several statements allowed), ``params`` (one statement only),
``read_only``. The result is the last statement's rows as a list of dicts (``[]`` when it
returned none), as upstream fixtures expect. The call runs in a thread.

The SQL reaches no file, URL or extension besides the database itself: DuckDB's external
access is off and its configuration locked before the task's SQL runs, so neither
``read_text('/proc/self/environ')`` (the worker's environment, with its tokens) nor
``read_csv('http://169.254.169.254/...')`` (past the http tool's egress policy) nor
``INSTALL``/``LOAD`` works. Folders in the worker's ``WORKER_DUCKDB_ALLOWED_DIRECTORIES``
are the exception: their files may be read and written.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import duckdb

from .._runtime import runtime
from ._values import json_value

MEMORY = ":memory:"


def _database(config: Mapping[str, Any]) -> str:
    database = config.get("database") or config.get("db_path") or config.get("path") or MEMORY
    database = str(database).strip() or MEMORY
    if database == MEMORY or database.startswith(":memory:"):
        return database
    folder = os.path.dirname(database)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return database


def _confine(con: duckdb.DuckDBPyConnection, directories: tuple[str, ...]) -> None:
    """Close the SQL's way out of the database; settable only once the database is open."""
    if directories:
        listed = ", ".join("'" + os.path.join(d, "").replace("'", "''") + "'" for d in directories)
        con.execute(f"SET allowed_directories = [{listed}]")
    con.execute("SET enable_external_access = false")
    # locked: the task's own SQL cannot SET it back
    con.execute("SET lock_configuration = true")


def query(
    database: str,
    sql: str,
    params: Any = None,
    *,
    read_only: bool = False,
    directories: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Run ``sql`` (confined to ``database`` and ``directories``); the last statement's rows (blocking)."""
    kwargs: dict[str, Any] = {}
    if read_only and not database.startswith(MEMORY):
        kwargs["read_only"] = True
    con = duckdb.connect(database, **kwargs)
    try:
        _confine(con, directories)
        cur = con.execute(sql, params) if params else con.execute(sql)
        if cur.description is None:
            return []
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, (json_value(v) for v in row), strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


async def run_duckdb(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """Run the task's SQL in DuckDB."""
    sql = next(
        (
            config[k]
            for k in ("query", "command", "sql")
            if isinstance(config.get(k), str) and config[k].strip()
        ),
        None,
    )
    if sql is None:
        raise ValueError("duckdb tool: set 'query' or 'command'")
    params = config.get("params")
    if params is not None and not isinstance(params, Mapping | list):
        raise ValueError("duckdb tool: 'params' must be a mapping or a list")
    database = _database(config)
    return await asyncio.to_thread(
        query,
        database,
        sql,
        params,
        read_only=bool(config.get("read_only")),
        directories=runtime().duckdb_directories,
    )


def duckdb_helper(result: Any) -> dict[str, Any]:
    """``outcome.duckdb``: ``row_count`` and ``columns`` of the rows returned."""
    rows = result if isinstance(result, list) else []
    columns = list(rows[0]) if rows and isinstance(rows[0], Mapping) else []
    return {"row_count": len(rows), "columns": columns, "rows": rows}
