"""Pages that stop at a byte budget as well as at a row count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def budgeted(query: str, order: str) -> str:
    """``query`` — one page (``... ORDER BY order LIMIT n``) whose last column is
    ``page_size``, the bytes a row weighs — cut where the running total of ``page_size``
    reaches the budget (one more ``%s`` parameter, after the query's own). The first row
    always stays, so a reader paging on makes progress. Two columns are added at the end:
    the running total and ``page_rows``, the rows of the page before the cut."""
    return (
        "SELECT * FROM (SELECT p.*, sum(p.page_size) OVER (ORDER BY"
        f" {order} ROWS UNBOUNDED PRECEDING) AS page_running, count(*) OVER () AS page_rows"
        f" FROM ({query}) p) b WHERE page_running - page_size < %s ORDER BY {order}"
    )


def was_cut(rows: Sequence[Any]) -> bool:
    """Whether :func:`budgeted` left rows of the page out (more may follow at once)."""
    return bool(rows) and int(rows[0][-1]) > len(rows)
