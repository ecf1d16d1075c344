"""Walking a table's key in index order: batch bounds at planning, a median when splitting.

One walk serves both: the n-th key inside a key range, in the key's own order and collation
(the one the batches compare with), in constant memory, never arithmetic on ids. The key is
one column or several (`cuts.Cut`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.cuts import Cut
from uuid_migrate.plan.ranges import KeyRange, lower_half, ranges_from_bounds

#: Alias of the walked table in every statement here.
_T = sql.Identifier("t")


def nth_key(
    cur: Any, schema: str, table: str, cut: Cut, key_range: KeyRange, n: int
) -> str | None:
    """The `n`-th key (1-based) inside the range, as a bound; None when fewer are in it."""
    query = sql.SQL("SELECT {id} FROM {t} AS t WHERE {r} ORDER BY {o} OFFSET %s LIMIT 1").format(
        id=cut.row_id(_T),
        t=qualified(schema, table),
        r=cut.condition(_T, key_range),
        o=cut.order_by(_T),
    )
    cur.execute(query, (n - 1,))
    row = cur.fetchone()
    return row[0] if row else None


def rows_in(
    cur: Any, schema: str, table: str, cut: Cut, key_range: KeyRange, cap: int | None = None
) -> int:
    """How many keys the range holds, counting at most `cap` (all without one)."""
    limit = sql.SQL("LIMIT {}").format(sql.Literal(cap)) if cap is not None else sql.SQL("")
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {t} AS t WHERE {r} {l}) AS s").format(
        t=qualified(schema, table), r=cut.condition(_T, key_range), l=limit
    )
    cur.execute(query)
    return int(cur.fetchone()[0])


def walk_ranges(
    cur: Any, schema: str, table: str, cut: Cut, size: int
) -> Iterator[tuple[KeyRange, int, str | None]]:
    """Each range of the table with the rows it held when planned and the key in its middle
    (None for the last, open above, and for blocks); the last is open above.

    The walk stops in the middle of each range on its way: a batch cut before it runs is cut
    there, without walking its range again at run time, when most of its rows are no longer
    on all-visible pages and the walk reads them from the heap.
    """
    if cut.blocks:
        for key_range, rows in _block_ranges(cur, schema, table, cut, size):
            yield key_range, rows, None
        return
    half = lower_half(size)
    lower: str | None = None
    while True:
        middle = nth_key(cur, schema, table, cut, KeyRange(lower, None), half) if half else None
        if half and middle is None:
            break
        start = middle if half else lower
        upper = nth_key(cur, schema, table, cut, KeyRange(start, None), size - half)
        if upper is None:
            break
        yield KeyRange(lower, upper), size, middle
        lower = upper
    last = KeyRange(lower, None)
    yield last, rows_in(cur, schema, table, cut, last, size), None


def median(
    cur: Any, schema: str, table: str, cut: Cut, key_range: KeyRange, rows: int
) -> str | None:
    """The key with `rows // 2` keys of the range at or below it (for blocks: the middle
    block); None below two rows or a single block."""
    if rows < 2:
        return None
    if cut.blocks:
        low = int(key_range.lower or 0)
        high = int(key_range.upper) if key_range.upper is not None else block_count(cur, schema, table)
        middle = (low + high) // 2
        return str(middle) if low < middle < high else None
    return nth_key(cur, schema, table, cut, key_range, lower_half(rows))


def block_count(cur: Any, schema: str, table: str) -> int:
    """The table's blocks now (its size over the block size)."""
    cur.execute(
        "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
        (regclass_text(schema, table),),
    )
    return int(cur.fetchone()[0])


def _block_ranges(
    cur: Any, schema: str, table: str, cut: Cut, size: int
) -> Iterator[tuple[KeyRange, int]]:
    """Ranges of about `size` rows by block, from the table's rows per block; each with its
    rows counted (a TID range scan); the last is open above, for blocks added later."""
    blocks = block_count(cur, schema, table)
    rows = rows_in(cur, schema, table, cut, KeyRange(None, None))
    step = max(1, (size * blocks) // rows) if rows else max(blocks, 1)
    bounds = [str(b) for b in range(step, blocks, step)]
    for key_range in ranges_from_bounds(bounds):
        yield key_range, rows_in(cur, schema, table, cut, key_range)
