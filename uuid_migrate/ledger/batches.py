"""The batches table: planning batches, and every move of a batch with what it stamps.

pending -> running (attempts, start, worker) -> succeeded (rows, finish) in the same
transaction as the batch's data, or -> pending again with the error (a retry), -> failed with
its error record, or -> split into two new batches. A trigger logs every move (`transitions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2.extras import execute_values

from uuid_migrate.ledger import error_records
from uuid_migrate.ledger.states import FENCED_RUN_STATES, BatchStatus
from uuid_migrate.plan.ranges import KeyRange, lower_half

_WHERE_BATCH = "WHERE run_id = %s AND stage = %s AND batch_no = %s"


@dataclass(frozen=True)
class Batch:
    """One batch as the ledger holds it."""

    run_id: str
    stage: str
    batch_no: int
    lower: str | None
    upper: str | None
    status: str
    attempts: int = 0

    @property
    def key_range(self) -> KeyRange:
        return KeyRange(self.lower, self.upper)

    def ids(self) -> tuple[str, str, int]:
        return self.run_id, self.stage, self.batch_no


def clear_stage(cur: Any, run_id: str, stage: str) -> None:
    """A stage whose planning was cut short is planned again from scratch."""
    cur.execute(
        "DELETE FROM uuid_migration.batches WHERE run_id = %s AND stage = %s", (run_id, stage)
    )


def add_batches(
    cur: Any, run_id: str, stage: str, first_no: int, ranges: list[tuple[KeyRange, int]]
) -> None:
    """Insert batches numbered from `first_no`, each a range with its row count at planning."""
    rows = [
        (run_id, stage, first_no + i, r.lower, r.upper, planned)
        for i, (r, planned) in enumerate(ranges)
    ]
    execute_values(
        cur,
        "INSERT INTO uuid_migration.batches "
        "(run_id, stage, batch_no, lower_bound, upper_bound, planned_rows) VALUES %s",
        rows,
        page_size=1000,
    )


def between(cur: Any, run_id: str, stage: str, first: int, end: int) -> list[Batch]:
    """Batches numbered first <= n < end that are not yet succeeded."""
    cur.execute(
        "SELECT batch_no, lower_bound, upper_bound, status, attempts FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND batch_no >= %s AND batch_no < %s "
        "AND status <> 'succeeded' ORDER BY batch_no",
        (run_id, stage, first, end),
    )
    return [Batch(run_id, stage, *row) for row in cur.fetchall()]


def lock(cur: Any, run_id: str, stage: str, batch_no: int, before: str = "") -> Batch | None:
    """The batch, row-locked until the transaction ends: two deliveries of it serialise here.
    `before`: statements (SET LOCAL ...) sent in the same round trip, ahead of the lock."""
    found = lock_with_planned_rows(cur, run_id, stage, batch_no, before)
    return found[0] if found else None


def planned_rows(cur: Any, run_id: str, stage: str, batch_no: int) -> int:
    """The rows the batch held when it was planned (0 if it is not known), unlocked."""
    cur.execute(
        f"SELECT planned_rows FROM uuid_migration.batches {_WHERE_BATCH}", (run_id, stage, batch_no)
    )
    row = cur.fetchone()
    return int(row[0]) if row else 0


def lock_with_planned_rows(
    cur: Any, run_id: str, stage: str, batch_no: int, before: str = ""
) -> tuple[Batch, int] | None:
    """`lock`, and the rows the batch held when it was planned."""
    cur.execute(
        before + "SELECT lower_bound, upper_bound, status, attempts, planned_rows "
        f"FROM uuid_migration.batches {_WHERE_BATCH} FOR UPDATE",
        (run_id, stage, batch_no),
    )
    row = cur.fetchone()
    return (Batch(run_id, stage, batch_no, *row[:4]), int(row[4])) if row else None


#: The run's fence and the batch's lock, one round trip. The run's row FOR KEY SHARE first
#: (as `runs.run_is_fenced`: a rollback's FOR UPDATE waits for this transaction), then the
#: batch FOR UPDATE with the run's status read by that later statement, so after the fence.
_FENCED_LOCK = (
    "SELECT 1 FROM uuid_migration.runs WHERE run_id = %(run)s FOR KEY SHARE; "
    "SELECT b.lower_bound, b.upper_bound, b.status, b.attempts, b.planned_rows, "
    "(SELECT r.status FROM uuid_migration.runs AS r WHERE r.run_id = %(run)s) "
    "FROM uuid_migration.batches AS b "
    "WHERE b.run_id = %(run)s AND b.stage = %(stage)s AND b.batch_no = %(no)s FOR UPDATE OF b"
)


def lock_unless_fenced(
    cur: Any, batch: Batch, before: str = "", params: dict[str, Any] | None = None
) -> tuple[Batch, int] | None:
    """`lock_with_planned_rows` behind the run's fence; None when the run is gone or being
    rolled back, or the batch is not there. `before` (with `params`): statements sent ahead."""
    cur.execute(
        before + _FENCED_LOCK,
        {**(params or {}), "run": batch.run_id, "stage": batch.stage, "no": batch.batch_no},
    )
    row = cur.fetchone()
    if row is None or row[5] is None or row[5] in FENCED_RUN_STATES:
        return None
    return Batch(batch.run_id, batch.stage, batch.batch_no, *row[:4]), int(row[4])


def start_attempt(cur: Any, batch: Batch, worker: str) -> Batch:
    """pending | failed | running (a redelivery) -> running: one more attempt, stamped."""
    cur.execute(
        "UPDATE uuid_migration.batches SET status = 'running', attempts = attempts + 1, "
        f"started_at = now(), finished_at = NULL, worker = %s {_WHERE_BATCH} "
        "RETURNING lower_bound, upper_bound, status, attempts",
        (worker, *batch.ids()),
    )
    return Batch(batch.run_id, batch.stage, batch.batch_no, *cur.fetchone())


def succeed(cur: Any, batch: Batch, rows: int, before: str = "") -> None:
    """running -> succeeded, in the batch's own transaction. clock_timestamp(): now() is the
    transaction's start, before the batch's work. `before`: statements sent ahead of it."""
    cur.execute(
        before + "UPDATE uuid_migration.batches SET status = 'succeeded', rows = %s, "
        f"finished_at = clock_timestamp(), last_error = NULL {_WHERE_BATCH}",
        (rows, *batch.ids()),
    )


def back_to_pending(cur: Any, batch: Batch, message: str) -> None:
    """running -> pending with the error, so the ledger and transition log show every try."""
    cur.execute(
        f"UPDATE uuid_migration.batches SET status = 'pending', last_error = %s {_WHERE_BATCH} "
        "AND status = 'running'",
        (message, *batch.ids()),
    )


#: A batch may fail from any state that still holds work.
_UNSETTLED = (BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.FAILED)


def fail(
    cur: Any, batch: Batch, table: str, message: str, leaving: tuple[str, ...] = _UNSETTLED
) -> bool:
    """-> failed (until `retry`), with its error record: the one path by which a batch fails,
    whoever decides it (its worker, or the reconciler giving up on a `running` one)."""
    cur.execute(
        "UPDATE uuid_migration.batches SET status = 'failed', finished_at = now(), "
        f"last_error = %s {_WHERE_BATCH} AND status = ANY(%s) RETURNING 1",
        (message, *batch.ids(), list(leaving)),
    )
    if cur.fetchone() is None:
        return False
    context = {"batch": batch.batch_no, "stage": batch.stage, "range": batch.key_range.label()}
    error_records.record(cur, batch.run_id, table, batch.lower, message, context)
    return True


def split(cur: Any, batch: Batch, median: str, rows: int, reason: str) -> list[int]:
    """running -> split, and its two halves as new pending batches, numbered above the rest."""
    # The stage row lock hands out numbers above every existing batch, one splitter at a time.
    cur.execute(
        "SELECT 1 FROM uuid_migration.stages WHERE run_id = %s AND stage = %s FOR UPDATE",
        (batch.run_id, batch.stage),
    )
    cur.execute(
        "SELECT max(batch_no) + 1, (SELECT coalesce(root_no, batch_no) FROM "
        f"uuid_migration.batches {_WHERE_BATCH}) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s",
        (*batch.ids(), batch.run_id, batch.stage),
    )
    first, root = cur.fetchone()
    halves = [
        (first, batch.lower, median, lower_half(rows)),
        (first + 1, median, batch.upper, rows - lower_half(rows)),
    ]
    for number, lower, upper, planned in halves:
        cur.execute(
            "INSERT INTO uuid_migration.batches (run_id, stage, batch_no, lower_bound, "
            "upper_bound, planned_rows, parent_no, root_no, last_error) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*batch.ids()[:2], number, lower, upper, planned, batch.batch_no, root,
             f"half of batch {batch.batch_no}"),
        )  # fmt: skip
    numbers = [first, first + 1]
    cur.execute(
        "UPDATE uuid_migration.batches SET status = 'split', finished_at = now(), "
        f"last_error = %s {_WHERE_BATCH}",
        (f"{reason}; split at {median!r} into {numbers[0]} and {numbers[1]}", *batch.ids()),
    )
    return numbers


def halves_of(cur: Any, batch: Batch) -> list[int]:
    """The halves a split batch was cut into."""
    cur.execute(
        "SELECT batch_no FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "AND parent_no = %s ORDER BY batch_no",
        (batch.run_id, batch.stage, batch.batch_no),
    )
    return [row[0] for row in cur.fetchall()]


def requeue(cur: Any, batch: Batch, reason: str) -> None:
    """failed | running (stale) -> pending, to be sent again."""
    cur.execute(
        f"UPDATE uuid_migration.batches SET status = 'pending', last_error = %s {_WHERE_BATCH} "
        "AND status = %s",
        (reason, *batch.ids(), batch.status),
    )


_CANDIDATES = """
SELECT b.stage, b.batch_no, b.lower_bound, b.upper_bound, b.status, b.attempts,
       b.status = 'running' AND b.started_at < now() - make_interval(secs => %(stale)s)
FROM uuid_migration.batches b JOIN uuid_migration.stages s USING (run_id, stage)
WHERE b.run_id = %(run)s AND b.status IN ('failed', 'running', 'pending')
  AND (b.batch_no < s.dispatched_upto OR b.root_no IS NOT NULL)
  AND (%(table)s::text IS NULL OR b.stage = %(table)s OR s.table_name = %(table)s)
  AND (%(batch)s::int IS NULL OR b.batch_no = %(batch)s)
ORDER BY s.position, b.batch_no
"""


def sent_and_unfinished(
    cur: Any, run_id: str, stale_after_s: float, table: str | None, batch_no: int | None
) -> list[tuple[Batch, bool]]:
    """Sent batches (or halves of sent ones) not finished, each with whether it is `running`
    since longer than `stale_after_s`; optionally of one table (or stage) or one batch."""
    params = {"run": run_id, "stale": stale_after_s, "table": table, "batch": batch_no}
    cur.execute(_CANDIDATES, params)
    return [
        (Batch(run_id, stage, no, lower, upper, status, attempts), bool(old))
        for stage, no, lower, upper, status, attempts, old in cur.fetchall()
    ]


def open_sent(cur: Any, run_id: str, stage: str) -> int:
    """Batches already sent (or halves of sent ones) that are still pending or running."""
    cur.execute(
        "SELECT count(*) FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "USING (run_id, stage) WHERE b.run_id = %s AND b.stage = %s "
        "AND b.status IN ('pending', 'running') "
        "AND (b.batch_no < s.dispatched_upto OR b.root_no IS NOT NULL)",
        (run_id, stage),
    )
    return int(cur.fetchone()[0])


def finished(cur: Any, run_id: str, stage: str) -> list[tuple[int, int, int, bool]]:
    """(batch_no, planned rows, rows changed, failed?) of each succeeded or failed batch."""
    cur.execute(
        "SELECT batch_no, planned_rows, coalesce(rows, 0), status = 'failed' "
        "FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "AND status IN ('succeeded', 'failed')",
        (run_id, stage),
    )
    return [tuple(row) for row in cur.fetchall()]

