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

from uuid_migrate import retrying
from uuid_migrate.execution import heartbeat
from uuid_migrate.ledger import batches, reports, runs, stages, transitions
from uuid_migrate.ledger.batches import Batch
from uuid_migrate.ledger.states import BatchStatus, RunStatus
from uuid_migrate.progression import advance, checkpoint
from uuid_migrate.progression.live import Progress
from uuid_migrate.progression.work import Next
from uuid_migrate.recovery import requeue


def reconcile(
    conn: Any,
    redis_conn: Any,
    run_id: str,
    *,
    stale_after_s: float,
    page_size: int,
    queue_empty: bool | None,
    max_attempts: int | None = None,
) -> Next:
    """One pass; returns what must be sent (after the ledger changes are committed)."""
    progress = Progress(redis_conn, run_id)
    with conn.cursor() as cur:
        status, paused = runs.run_state(cur, run_id)
        if status == RunStatus.VALIDATING:
            lost = _validation_lost(cur, run_id, stale_after_s)
            conn.commit()
            return Next(validate=lost)
        if status != RunStatus.RUNNING or paused:
            conn.commit()
            return Next()
        rebuild_progress(cur, progress, run_id)
        idle = queue_empty is True and _idle(cur, redis_conn, run_id, stale_after_s)
        runs.lock_run(cur, run_id)
        chosen = requeue.retriable(cur, redis_conn, run_id, stale_after_s, lost_pending=idle)
        chosen = [b for b in chosen if b.status != BatchStatus.FAILED]  # those wait for `retry`
        chosen = _give_up_on_killers(cur, run_id, chosen, max_attempts)
        nxt = requeue.reopen(cur, run_id, chosen, stale_after_s)
        running = [s["stage"] for s in stages.stages(cur, run_id) if s["status"] == "running"]
    conn.commit()
    for stage in running:
        if not any(p.stage == stage for p in nxt.retries):
            nxt.merge(
                advance.continue_stage(conn, progress, run_id, stage, page_size)
            )
    with conn.cursor() as cur:
        nxt.merge(advance.advance_run(cur, run_id, page_size))
    conn.commit()
    advance.publish_checkpoints(conn, progress, run_id, {p.stage for p in nxt.pages})
    return nxt


def _give_up_on_killers(
    cur: Any, run_id: str, chosen: list[Batch], max_attempts: int | None
) -> list[Batch]:
    """A stale batch that already used every attempt is failed, not sent again."""
    if max_attempts is None:
        return chosen
    spent = [
        b
        for b in chosen
        if b.status == BatchStatus.RUNNING and retrying.attempts_exhausted(b.attempts, max_attempts)
    ]
    for b in spent:
        message = f"gave up: {b.attempts} attempts ended without finishing (workers lost)"
        batches.fail(
            cur, b, stages.table_of(cur, run_id, b.stage), message, leaving=(BatchStatus.RUNNING,)
        )
    return [b for b in chosen if b not in spent]


def _idle(cur: Any, redis_conn: Any, run_id: str, stale_after_s: float) -> bool:
    """Nothing can be carrying the run's pending batches: no beat, no change for a while."""
    if heartbeat.any_alive(redis_conn, run_id):
        return False
    last = transitions.last_activity(cur, run_id)
    return last is None or last < datetime.now(UTC) - timedelta(seconds=stale_after_s)


def _validation_lost(cur: Any, run_id: str, stale_after_s: float) -> bool:
    """Validating, no report, and the last stage closed long ago: its message was lost."""
    if reports.latest(cur, run_id, "post") is not None:
        return False
    return stages.closed_longer_than(cur, run_id, stale_after_s)


def rebuild_progress(cur: Any, progress: Progress, run_id: str) -> list[str]:
    """Restore, from the ledger, each stage's Redis counters and checkpoint that are missing.

    Counting goes through the same count-once script as the workers, so a batch that a
    worker counts at the same moment is still counted once.
    """
    rebuilt = []
    rows = stages.stages(cur, run_id)
    for row in rows:
        stage = row["stage"]
        if "total" in progress.stage(stage):
            continue
        progress.set_totals(stage, row["total_rows"], row["batch_count"])
        counter = Progress(progress.conn.pipeline(transaction=False), run_id)
        for batch_no, planned, changed, failed in batches.finished(cur, run_id, stage):
            counter.count_batch(stage, batch_no, planned, changed, failed)
        counter.conn.execute()
        progress.write_checkpoint(stage, checkpoint.build(cur, run_id, row))
        rebuilt.append(stage)
    if rebuilt:
        progress.set_run_total(sum(int(r["total_rows"]) for r in rows))
    return rebuilt
