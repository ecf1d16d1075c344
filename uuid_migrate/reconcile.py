"""The reconciler: makes Celery and Redis agree with the ledger again after anything was lost.

A chord's own bookkeeping lives in the result backend and dies with it; messages die with the
broker; counters and checkpoints die with Redis. The ledger survives, so from it alone this:
- sends again batches that are stale (running, no heartbeat) or, when the run is idle (no
  heartbeat anywhere, an empty queue, no transition for a while), pending but sent;
- continues or closes every running stage that has nothing out (its callback never ran);
- starts stages whose parents are done, and re-sends a validation that never reported;
- rebuilds Redis counters and checkpoints that are missing.
Every step is a compare-and-set in the ledger, so it may run alongside live callbacks.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from uuid_migrate import advance, control, heartbeat, ledger, requeue, transitions
from uuid_migrate.advance import Next
from uuid_migrate.checkpoint import stage_checkpoint
from uuid_migrate.progress import Progress


def reconcile(
    conn: Any,
    index_conn_factory: Any,
    redis_conn: Any,
    run_id: str,
    *,
    stale_after_s: float,
    page_size: int,
    queue_empty: bool | None,
    max_attempts: int | None = None,
) -> Next:
    """One pass; returns what must be sent (after the ledger changes are committed)."""
    with conn.cursor() as cur:
        status, paused = control.run_state(cur, run_id)
        if status == ledger.VALIDATING:
            lost = _validation_lost(cur, run_id, stale_after_s)
            conn.commit()
            return Next(validate=lost)
        if status != ledger.RUNNING or paused:
            conn.commit()
            return Next()
        rebuild_progress(cur, Progress(redis_conn, run_id), run_id)
        idle = queue_empty is True and _idle(cur, redis_conn, run_id, stale_after_s)
        ledger.lock_run(cur, run_id)
        chosen = requeue.retriable(cur, redis_conn, run_id, stale_after_s, lost_pending=idle)
        chosen = [b for b in chosen if b.status != ledger.FAILED]  # failures wait for `retry`
        chosen = _give_up_on_killers(cur, run_id, chosen, max_attempts)
        nxt = requeue.reopen(cur, run_id, chosen, stale_after_s)
        running = [s["stage"] for s in ledger.stages(cur, run_id) if s["status"] == "running"]
    conn.commit()
    for stage in running:
        if not any(p.stage == stage for p in nxt.retries):
            _merge(nxt, advance.continue_stage(conn, index_conn_factory, run_id, stage, page_size))
    with conn.cursor() as cur:
        _merge(nxt, advance.advance_run(cur, run_id, page_size))
    conn.commit()
    return nxt


def _give_up_on_killers(
    cur: Any, run_id: str, chosen: list[ledger.Batch], max_attempts: int | None
) -> list[ledger.Batch]:
    """A stale batch that already used every attempt is failed, not sent again: a batch that
    takes its worker down with it would otherwise be retried for ever."""
    if max_attempts is None:
        return chosen
    spent = [b for b in chosen if b.status == ledger.RUNNING and b.attempts >= max_attempts]
    for b in spent:
        message = f"gave up: {b.attempts} attempts ended without finishing (workers lost)"
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'failed', finished_at = now(), "
            "last_error = %s WHERE run_id = %s AND stage = %s AND batch_no = %s "
            "AND status = 'running'",
            (message, run_id, b.stage, b.batch_no),
        )
        cur.execute(
            "SELECT table_name FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
            (run_id, b.stage),
        )
        context = {"batch": b.batch_no, "stage": b.stage, "range": b.key_range.label()}
        ledger.record_error(cur, run_id, cur.fetchone()[0], b.lower, message, context)
    return [b for b in chosen if b not in spent]


def _merge(into: Next, other: Next) -> None:
    into.pages += other.pages
    into.retries += other.retries
    into.validate = into.validate or other.validate


def _idle(cur: Any, redis_conn: Any, run_id: str, stale_after_s: float) -> bool:
    """Nothing can be carrying the run's pending batches: no beat, no change for a while."""
    if heartbeat.any_alive(redis_conn, run_id):
        return False
    last = transitions.last_activity(cur, run_id)
    return last is None or last < datetime.now(UTC) - timedelta(seconds=stale_after_s)


def _validation_lost(cur: Any, run_id: str, stale_after_s: float) -> bool:
    """Validating, no report, and the last stage closed long ago: its message was lost."""
    if ledger.latest_report(cur, run_id, "post") is not None:
        return False
    cur.execute(
        "SELECT max(finished_at) < now() - make_interval(secs => %s) "
        "FROM uuid_migration.stages WHERE run_id = %s",
        (stale_after_s, run_id),
    )
    return bool(cur.fetchone()[0])


def rebuild_progress(cur: Any, progress: Progress, run_id: str) -> list[str]:
    """Restore, from the ledger, each stage's Redis counters and checkpoint that are missing.

    Counting goes through the same count-once script as the workers, so a batch that a
    worker counts at the same moment is still counted once.
    """
    rebuilt = []
    rows = ledger.stages(cur, run_id)
    for row in rows:
        stage = row["stage"]
        if "total" in progress.stage(stage):
            continue
        progress.set_totals(stage, row["total_rows"], row["batch_count"])
        cur.execute(
            "SELECT batch_no, planned_rows, coalesce(rows, 0), status = 'failed' "
            "FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
            "AND status IN ('succeeded', 'failed')",
            (run_id, stage),
        )
        counter = Progress(progress.conn.pipeline(transaction=False), run_id)
        for batch_no, planned, changed, failed in cur.fetchall():
            counter.count_batch(stage, batch_no, planned, changed, failed)
        counter.conn.execute()
        checkpoint = stage_checkpoint(cur, run_id, row)
        progress.write_checkpoint(stage, {k: checkpoint[k] for k in _CHECKPOINT_KEYS})
        rebuilt.append(stage)
    if rebuilt:
        progress.set_run_total(sum(int(r["total_rows"]) for r in rows))
    return rebuilt


_CHECKPOINT_KEYS = (
    "phase",
    "table",
    "lastProcessedId",
    "processedCount",
    "totalCount",
    "status",
    "errors",
)
