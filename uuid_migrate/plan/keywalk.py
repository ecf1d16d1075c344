"""Walking a table's key in index order: batch bounds at planning, a median when splitting.

One walk serves both: the n-th key inside a key range, in the key column's own order and
collation (the one the batches compare with), in constant memory, never arithmetic on ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified
from uuid_migrate.plan.ranges import KeyRange, ranges_from_bounds

#: Alias of the walked table in every statement here.
_T = sql.Identifier("t")


def range_condition(alias: sql.Composable, key: str, key_range: KeyRange) -> sql.Composed:
    """`lower < key <= upper`, leaving out a missing bound so the index scan stays open-ended."""
    column = sql.SQL("{}.{}").format(alias, sql.Identifier(key))
    parts = []
    if key_range.lower is not None:
        parts.append(sql.SQL("{} > {}").format(column, sql.Literal(key_range.lower)))
    if key_range.upper is not None:
        parts.append(sql.SQL("{} <= {}").format(column, sql.Literal(key_range.upper)))
    if not parts:
        return sql.Composed([sql.SQL("true")])
    return sql.Composed([sql.SQL(" AND ").join(parts)])


def nth_key(
    cur: Any, schema: str, table: str, key: str, key_range: KeyRange, n: int
) -> str | None:
    """The `n`-th key (1-based) inside the range, as text; None when fewer keys are in it."""
    query = sql.SQL(
        "SELECT t.{k}::text FROM {t} AS t WHERE {r} ORDER BY t.{k} OFFSET %s LIMIT 1"
    ).format(k=sql.Identifier(key), t=qualified(schema, table), r=range_condition(_T, key, key_range))
    cur.execute(query, (n - 1,))
    row = cur.fetchone()
    return row[0] if row else None


def rows_in(
    cur: Any, schema: str, table: str, key: str, key_range: KeyRange, cap: int | None = None
) -> int:
    """How many keys the range holds, counting at most `cap` (all without one)."""
    limit = sql.SQL("LIMIT {}").format(sql.Literal(cap)) if cap is not None else sql.SQL("")
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} AS t WHERE {r} {l}) AS s").format(
        t=qualified(schema, table), r=range_condition(_T, key, key_range), l=limit
    )
    cur.execute(query)
    return int(cur.fetchone()[0])


def walk_ranges(
    cur: Any, schema: str, table: str, key: str, size: int
) -> Iterator[tuple[KeyRange, int]]:
    """Each range of the table with the rows it held when planned; the last is open above."""

    def bounds() -> Iterator[str]:
        after: str | None = None
        while (bound := nth_key(cur, schema, table, key, KeyRange(after, None), size)) is not None:
            yield bound
            after = bound

    for key_range in ranges_from_bounds(bounds()):
        if key_range.upper is not None:
            yield key_range, size
        else:
            yield key_range, rows_in(cur, schema, table, key, key_range, size)


def median(
    cur: Any, schema: str, table: str, key: str, key_range: KeyRange, rows: int
) -> str | None:
    """The key with `rows // 2` keys of the range at or below it; None below two rows."""
    if rows < 2:
        return None
    return nth_key(cur, schema, table, key, key_range, rows // 2)
