"""The key in the middle of each batch as the planner walked it (`batch_middles`).

A batch of the default size expected to run past its target is cut in two before it runs
(`execution.batch_cutting`). Found at run time, its median costs a walk over the range; by
then the batches have written around it, its pages are no longer all-visible, and the walk
reads the heap, one page per row where keys are in no physical order: 0.1 to 0.3 s a cut on
the migration guide's schema at 1,000,000 users, with both workers cutting at once. The
planner's walk passes that key anyway, so it is kept here and a cut costs one lookup.

Only planned batches closed above have one: not a half (cut again, it walks), not the last
batch (open above, where new rows arrive), not a table cut by blocks (its middle block is
arithmetic).
"""

from __future__ import annotations

from typing import Any

from psycopg2.extras import execute_values

from uuid_migrate.ledger.batches import Batch


def add(cur: Any, run_id: str, stage: str, first_no: int, middles: list[str | None]) -> None:
    """The middles of batches numbered from `first_no`, in order (None: the batch has none)."""
    rows = [
        (run_id, stage, first_no + i, middle)
        for i, middle in enumerate(middles)
        if middle is not None
    ]
    execute_values(
        cur,
        "INSERT INTO uuid_migration.batch_middles (run_id, stage, batch_no, middle_bound) "
        "VALUES %s",
        rows,
        page_size=1000,
    )


def clear_stage(cur: Any, run_id: str, stage: str) -> None:
    """With the stage's batches, when its planning was cut short and starts again."""
    cur.execute(
        "DELETE FROM uuid_migration.batch_middles WHERE run_id = %s AND stage = %s",
        (run_id, stage),
    )


def middle_of(cur: Any, batch: Batch) -> str | None:
    """The batch's planned middle key, or None. A ledger made by an older version's producer
    after this worker began lacks the table: its runs have no middles."""
    cur.execute("SELECT to_regclass('uuid_migration.batch_middles') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute(
        "SELECT middle_bound FROM uuid_migration.batch_middles "
        "WHERE run_id = %s AND stage = %s AND batch_no = %s",
        batch.ids(),
    )
    row = cur.fetchone()
    return row[0] if row else None
