"""Walking a table's primary key in index order to find batch bounds, in constant memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg2 import sql

from uuid_migrate.ranges import KeyRange, ranges_from_bounds


def _table(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def next_bound(
    cur: Any, schema: str, table: str, key: str, after: str | None, size: int
) -> str | None:
    """The `size`-th key after `after` (from the start when None); None when fewer remain.

    Ordering and `>` both use the key column's own collation, the one the batches compare with.
    """
    where = (
        sql.SQL("WHERE {} > %s").format(sql.Identifier(key)) if after is not None else sql.SQL("")
    )
    query = sql.SQL("SELECT {k}::text FROM {t} {w} ORDER BY {k} OFFSET %s LIMIT 1").format(
        k=sql.Identifier(key), t=_table(schema, table), w=where
    )
    params = ([after] if after is not None else []) + [size - 1]
    cur.execute(query, params)
    row = cur.fetchone()
    return row[0] if row else None


def rows_after(cur: Any, schema: str, table: str, key: str, after: str | None, cap: int) -> int:
    """How many keys follow `after`, counting at most `cap`."""
    where = (
        sql.SQL("WHERE {} > %s").format(sql.Identifier(key)) if after is not None else sql.SQL("")
    )
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} {w} LIMIT %s) AS s").format(
        t=_table(schema, table), w=where
    )
    cur.execute(query, ([after] if after is not None else []) + [cap])
    return int(cur.fetchone()[0])


def walk_ranges(
    cur: Any, schema: str, table: str, key: str, size: int
) -> Iterator[tuple[KeyRange, int]]:
    """Each range of the table with the rows it held when planned; the last is open above."""

    def bounds() -> Iterator[str]:
        after: str | None = None
        while (bound := next_bound(cur, schema, table, key, after, size)) is not None:
            yield bound
            after = bound

    for key_range in ranges_from_bounds(bounds()):
        if key_range.upper is not None:
            yield key_range, size
        else:
            yield key_range, rows_after(cur, schema, table, key, key_range.lower, size)
