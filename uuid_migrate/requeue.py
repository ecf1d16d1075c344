"""Choosing batches to send again: failed ones, stale ones (their worker stopped beating),
and, when nothing can still be carrying them, pending ones whose messages were lost.

The chosen batches go back to `pending` (logged as transitions), their stages and the run go
back to `running`, and they are sent as chords whose callback continues the stage, so a
completed table still starts its dependents and, at the end, validation.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate import heartbeat, ledger
from uuid_migrate.advance import Next
from uuid_migrate.errors import RunStateError
from uuid_migrate.flow import Page
from uuid_migrate.ranges import KeyRange

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


def retriable(
    cur: Any,
    redis_conn: Any,
    run_id: str,
    stale_after_s: float,
    *,
    table: str | None = None,
    batch_no: int | None = None,
    lost_pending: bool = False,
) -> list[ledger.Batch]:
    """Failed batches, stale running ones, and (with `lost_pending`) sent pending ones."""
    params = {"run": run_id, "stale": stale_after_s, "table": table, "batch": batch_no}
    cur.execute(_CANDIDATES, params)
    rows = cur.fetchall()
    old_running = [(r[0], r[1]) for r in rows if r[6]]
    beating = heartbeat.alive(redis_conn, run_id, old_running) if old_running else set()
    chosen = []
    for stage, no, lower, upper, status, attempts, old in rows:
        stale = old and (stage, no) not in beating
        if status == ledger.FAILED or stale or (status == ledger.PENDING and lost_pending):
            chosen.append(ledger.Batch(run_id, stage, no, lower, upper, status, attempts))
    return chosen


def reopen(cur: Any, run_id: str, batches: list[ledger.Batch], stale_after_s: float) -> Next:
    """Put the batches back to pending, reopen their stages and the run; the chords to send."""
    for b in batches:
        if b.status == ledger.PENDING:
            continue
        reason = (
            "requeued after failure"
            if b.status == ledger.FAILED
            else f"stale: no heartbeat for {stale_after_s:g} s"
        )
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'pending', last_error = %s "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s AND status = %s",
            (reason, run_id, b.stage, b.batch_no, b.status),
        )
    stages = list(dict.fromkeys(b.stage for b in batches))
    cur.execute(
        "UPDATE uuid_migration.stages SET status = 'running', finished_at = NULL "
        "WHERE run_id = %s AND stage = ANY(%s) AND status = 'failed'",
        (run_id, stages),
    )
    cur.execute(
        "UPDATE uuid_migration.runs SET status = 'running', message = NULL, finished_at = NULL "
        "WHERE run_id = %s AND status = 'failed'",
        (run_id,),
    )
    pages = [
        Page(run_id, stage, 0, tuple(b for b in batches if b.stage == stage)) for stage in stages
    ]
    return Next(retries=pages)


def retry(
    conn: Any,
    redis_conn: Any,
    run_id: str | None,
    stale_after_s: float,
    *,
    table: str | None = None,
    batch_no: int | None = None,
) -> tuple[str, Next, list[ledger.Batch]]:
    """`uuid-migrate retry`: re-send the failed and stale batches of the run (the latest one)."""
    with conn.cursor() as cur:
        run = ledger.get_run(cur, run_id) if run_id else ledger.latest_run(cur)
        if run is None:
            raise RunStateError("no migration run recorded in this database")
        if run["status"] not in (ledger.RUNNING, ledger.FAILED):
            raise RunStateError(f"run {run['run_id']} is {run['status']}: nothing to retry")
        ledger.lock_run(cur, run["run_id"])
        stopped = run["status"] == ledger.FAILED  # nothing is carrying its pending batches
        chosen = retriable(
            cur,
            redis_conn,
            run["run_id"],
            stale_after_s,
            table=table,
            batch_no=batch_no,
            lost_pending=stopped,
        )
        nxt = reopen(cur, run["run_id"], chosen, stale_after_s)
        if stopped and not chosen and table is None and batch_no is None:
            cur.execute(  # e.g. stopped by the breaker between pages: the reconciler goes on
                "UPDATE uuid_migration.runs SET status = 'running', message = NULL, "
                "finished_at = NULL WHERE run_id = %s AND status = 'failed' AND EXISTS ("
                "SELECT 1 FROM uuid_migration.stages WHERE run_id = %s AND status = 'running')",
                (run["run_id"], run["run_id"]),
            )
    conn.commit()
    return run["run_id"], nxt, chosen


def failed_batches(cur: Any, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The failed batches of a run in the seed's error shape, with their range and attempts."""
    cur.execute(
        "SELECT s.table_name, b.stage, b.batch_no, b.lower_bound, b.upper_bound, b.last_error, "
        "b.attempts, b.finished_at FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "USING (run_id, stage) WHERE b.run_id = %s AND b.status = 'failed' "
        "ORDER BY s.position, b.batch_no LIMIT %s",
        (run_id, limit),
    )
    out = []
    for table, stage, no, lower, upper, error, attempts, at in cur.fetchall():
        key_range = KeyRange(lower, upper).label()
        out.append(
            {
                "table": table,
                "id": lower,
                "error": error,
                "timestamp": ledger.iso(at),
                "stage": stage,
                "batch": no,
                "range": key_range,
                "attempts": attempts,
            }
        )
    return out
