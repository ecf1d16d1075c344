"""Splitting a batch that timed out, or one cut before it runs: a smaller batch size where it
is needed, automatically.

The range is cut at its median key: for a cut before it runs, the one the planner's walk
found in its middle (`ledger.batch_middles`); otherwise found by walking the key in index
order (never by arithmetic on ids). The parent is marked `split` and the two halves become
new batches with new numbers, in one transaction, so the ledger always shows the whole
lineage.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.ledger import batch_middles, batches, runs
from uuid_migrate.ledger.batches import Batch
from uuid_migrate.ledger.states import SETTLED_BATCH_STATES, BatchStatus
from uuid_migrate.plan import keywalk
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage


def split_batch(
    conn: Any, plan: Plan, stage: Stage, batch: Batch, min_rows: int, reason: str,
    rows: int | None = None,
) -> list[int] | None:  # fmt: skip
    """Cut the batch in two and return the halves' numbers; None when it is too small to cut.

    `rows`: what the batch is taken to hold (a cut before it runs gives its planned rows);
    it is then cut at the key the planner found in its middle, if any. Otherwise the range is
    counted (always for the last batch, open above, where new rows arrive) and walked to its
    median: once the batches have written around it, most of its rows are read from the heap
    (their pages are no longer all-visible), in a table whose keys are in no physical order
    one page per row.

    Two deliveries of one batch may both time out: the parent's row lock makes the second
    find it already split (it then gets the existing halves back).
    """
    with conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = 0")  # the walks must not time out in turn
        current = batches.lock(cur, *batch.ids())
        if current is None or runs.run_is_fenced(cur, batch.run_id):
            conn.rollback()  # rolled back meanwhile: nothing left to split
            return []
        if current.status in SETTLED_BATCH_STATES:
            halves = batches.halves_of(cur, batch) if current.status == BatchStatus.SPLIT else []
            conn.commit()
            return halves
        where = (*plan.where(stage.table), cut_of(plan.table(stage.table)), batch.key_range)
        if rows is None or batch.upper is None:  # a timeout's split, or the last batch
            rows = keywalk.rows_in(cur, *where)
            median = keywalk.median(cur, *where, rows)
        elif (median := batch_middles.middle_of(cur, batch)) is None:
            median = keywalk.median(cur, *where, rows)
        if rows <= min_rows or median is None or median == batch.upper:
            conn.rollback()
            return None
        numbers = batches.split(cur, batch, median, rows, reason)
    conn.commit()
    return numbers


def children(conn: Any, batch: Batch) -> list[int]:
    """The halves a split batch was cut into."""
    with conn.cursor() as cur:
        found = batches.halves_of(cur, batch)
    conn.commit()
    return found
