"""Splitting a batch that timed out: the seed's "reduce BATCH_SIZE", made automatic.

The range is cut at its median key, found by walking the key in index order (never by
arithmetic on ids). The parent is marked `split` and the two halves become new batches with
new numbers, in one transaction, so the ledger always shows the whole lineage.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate import ledger
from uuid_migrate.batch_sql import qualified, range_condition
from uuid_migrate.plan import Plan
from uuid_migrate.ranges import KeyRange
from uuid_migrate.stages import Stage

_T = sql.Identifier("t")


def rows_in_range(cur: Any, plan: Plan, table: str, key_range: KeyRange) -> int:
    key = plan.table(table).key
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(
            qualified(plan, table), range_condition(_T, key, key_range)
        )
    )
    return int(cur.fetchone()[0])


def median_key(cur: Any, plan: Plan, table: str, key_range: KeyRange, rows: int) -> str | None:
    """The key with `rows // 2` keys of the range at or below it, in the key's own order."""
    if rows < 2:
        return None
    key = sql.Identifier(plan.table(table).key)
    cur.execute(
        sql.SQL("SELECT t.{k}::text FROM {t} AS t WHERE {r} ORDER BY t.{k} OFFSET %s LIMIT 1").format(
            k=key, t=qualified(plan, table), r=range_condition(_T, plan.table(table).key, key_range)
        ),
        (rows // 2 - 1,),
    )
    row = cur.fetchone()
    return row[0] if row else None


def split_batch(
    conn: Any, plan: Plan, stage: Stage, batch: ledger.Batch, min_rows: int, reason: str
) -> list[int] | None:
    """Cut the batch in two and return the halves' numbers; None when it is too small to cut.

    Two deliveries of one batch may both time out: the parent's row lock makes the second
    find it already split (it then gets the existing halves back).
    """
    with conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = 0")  # counting must not time out in turn
        cur.execute(
            "SELECT status FROM uuid_migration.batches "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s FOR UPDATE",
            (batch.run_id, batch.stage, batch.batch_no),
        )
        row = cur.fetchone()
        if row is None or ledger.run_is_fenced(cur, batch.run_id):
            conn.rollback()  # rolled back meanwhile: nothing left to split
            return []
        status = row[0]
        if status in ledger.SETTLED:
            conn.commit()
            return children(conn, batch) if status == ledger.SPLIT else []
        rows = rows_in_range(cur, plan, stage.table, batch.key_range)
        median = median_key(cur, plan, stage.table, batch.key_range, rows)
        if rows <= min_rows or median is None or median == batch.upper:
            conn.rollback()
            return None
        numbers = _add_halves(cur, batch, median, rows)
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'split', finished_at = now(), "
            "last_error = %s WHERE run_id = %s AND stage = %s AND batch_no = %s",
            (f"{reason}; split at {median!r} into {numbers[0]} and {numbers[1]}",
             batch.run_id, batch.stage, batch.batch_no),
        )
    conn.commit()
    return numbers


def _add_halves(cur: Any, batch: ledger.Batch, median: str, rows: int) -> list[int]:
    # The stage row lock hands out numbers above every existing batch, one splitter at a time.
    cur.execute(
        "SELECT 1 FROM uuid_migration.stages WHERE run_id = %s AND stage = %s FOR UPDATE",
        (batch.run_id, batch.stage),
    )
    cur.execute(
        "SELECT max(batch_no) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s",
        (batch.run_id, batch.stage),
    )
    first = cur.fetchone()[0] + 1
    cur.execute(
        "SELECT coalesce(root_no, batch_no) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND batch_no = %s",
        (batch.run_id, batch.stage, batch.batch_no),
    )
    root = cur.fetchone()[0]
    halves = [(first, batch.lower, median, rows // 2), (first + 1, median, batch.upper, rows - rows // 2)]
    for number, lower, upper, planned in halves:
        cur.execute(
            "INSERT INTO uuid_migration.batches (run_id, stage, batch_no, lower_bound, "
            "upper_bound, planned_rows, parent_no, root_no, last_error) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (batch.run_id, batch.stage, number, lower, upper, planned, batch.batch_no, root,
             f"half of batch {batch.batch_no}"),
        )
    return [first, first + 1]


def children(conn: Any, batch: ledger.Batch) -> list[int]:
    """The halves a split batch was cut into."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT batch_no FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
            "AND parent_no = %s ORDER BY batch_no",
            (batch.run_id, batch.stage, batch.batch_no),
        )
        found = [row[0] for row in cur.fetchall()]
    conn.commit()
    return found
