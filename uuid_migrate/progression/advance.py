"""What happens after a batch, after a page of batches, after a stage and at the end of a run.

Plain code, decided from the ledger alone (never from Celery's results), and used alike by
the producer when it starts or resumes a run, by the chord callbacks and by the reconciler.
Every move is a compare-and-set, so a callback delivered twice, or a resume racing a live
callback, can make each move only once. Functions commit, then return what must be sent.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg2
import redis

from uuid_migrate.execution import sweep
from uuid_migrate.execution.attempt import BatchOutcome, plan_of_run
from uuid_migrate.ledger import batches, runs, stages
from uuid_migrate.ledger.states import BatchStatus, RunStatus, StageStatus
from uuid_migrate.plan.stages import BACKFILL
from uuid_migrate.progression import checkpoint, outcomes
from uuid_migrate.progression.live import Progress
from uuid_migrate.progression.work import Next


@dataclass(frozen=True)
class AfterBatches:
    """What a worker does next, once a batch's progress is recorded."""

    #: A batch failed: the circuit breaker looks at the run.
    check_breaker: bool
    #: A batch did work: the reconciler's schedule is revived (one SET NX), in case its
    #: message was lost; never for a batch that did nothing (a stopped or rolled-back run
    #: must stay quiet).
    rearm_reconciler: bool


def after_batches(
    conn: Any, progress: Progress, run_id: str, done: list[BatchOutcome]
) -> AfterBatches:
    """After the commit of a batch (and its halves): count each once in Redis and refresh
    the stage's checkpoint; then say what else the worker does."""
    finished = [o for o in done if o.status in (BatchStatus.SUCCEEDED, BatchStatus.FAILED)]
    for outcome in finished:
        progress.count_batch(
            outcome.stage,
            outcome.batch_no,
            outcome.planned_rows,
            outcome.rows,
            outcome.status == BatchStatus.FAILED,
        )
        with conn.cursor() as cur:
            checkpoint.after_batch(cur, progress, run_id, outcome.stage)
        conn.commit()
    failed = any(o.status == BatchStatus.FAILED for o in done)
    return AfterBatches(check_breaker=failed, rearm_reconciler=bool(finished))


def after_page(
    conn: Any, progress: Progress | None, run_id: str, stage: str,
    end: int, page_size: int, lock_timeout_ms: int = sweep.SWEEP_LOCK_TIMEOUT_MS,
) -> Next:  # fmt: skip
    """A chord finished page `end` of a stage: send the next page, or close the stage once its
    final sweep has fixed what raced with the triggers, where another stage waits for it
    (`sweep.swept_at_close`; a table's backfill: its sweep and its unique index are owed, as
    tasks of their own: `closing`)."""
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id)
        if run is None or run["status"] != RunStatus.RUNNING:
            conn.commit()
            return Next()  # stopped (the circuit breaker): `retry` picks the stage up again
        row = stages.stage(cur, run_id, stage)
        if row is None or end < row["batch_count"]:
            page = outcomes.claim_next_page(cur, run_id, stage, end, page_size)
            conn.commit()
            return Next(pages=[page] if page else [])
        outcome = outcomes.stage_outcome(cur, run_id, stage)
        known = plan_of_run(cur, run_id)
    conn.commit()
    if outcome == StageStatus.RUNNING or not known:
        return Next()  # a batch is still out (a redelivery); its own page callback will close
    plan, stage_map = known
    if outcome == StageStatus.SUCCEEDED and stage_map[stage].kind == BACKFILL:
        swept = row["handed_off_at"] is not None
        return Next(sweeps=[] if swept else [stage], indexes=[stage])  # see `closing`
    swept = (
        outcome == StageStatus.SUCCEEDED
        and sweep.swept_at_close(stage_map[stage], stage_map)
        and sweep.sweep_stage(conn, plan, stage_map[stage], run_id, lock_timeout_ms)
    )
    if swept is None:
        return Next()  # rolled back meanwhile
    return close_stage(conn, progress, run_id, stage, outcome, page_size)


def continue_stage(
    conn: Any, progress: Progress | None, run_id: str, stage: str,
    page_size: int, lock_timeout_ms: int = sweep.SWEEP_LOCK_TIMEOUT_MS,
) -> Next:  # fmt: skip
    """Callback of re-sent batches and the reconciler's step: once nothing sent is still out,
    send the stage's next page, or close it (whatever chord was meant to, if it never did)."""
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id)
        row = stages.stage(cur, run_id, stage)
        if run is None or run["status"] != RunStatus.RUNNING or not row or row["status"] != "running":
            conn.commit()
            return Next()
        if batches.open_sent(cur, run_id, stage):
            conn.commit()
            return Next()
        if row["dispatched_upto"] < row["batch_count"]:
            page = outcomes.claim_next_page(cur, run_id, stage, row["dispatched_upto"], page_size)
            conn.commit()
            if page is not None:
                return Next(pages=[page])
    conn.commit()
    return after_page(
        conn, progress, run_id, stage, row["batch_count"], page_size, lock_timeout_ms
    )


def close_stage(
    conn: Any, progress: Progress | None, run_id: str, stage: str, outcome: str, page_size: int
) -> Next:
    """Mark the stage, start what it unblocked, and hand over to validation at the end."""
    with conn.cursor() as cur:
        runs.lock_run(cur, run_id)
        stages.finish(cur, run_id, stage, StageStatus(outcome))
        nxt = advance_run(cur, run_id, page_size)
    conn.commit()
    publish_checkpoints(conn, progress, run_id, {stage} | {p.stage for p in nxt.pages})
    return nxt


def advance_run(cur: Any, run_id: str, page_size: int) -> Next:
    """Start every stage whose parents are done; claim validation once all are; settle failure.

    Runs under the run's row lock (taken here if the caller has not), in READ COMMITTED, so
    each statement sees stages that a concurrent closer committed while we waited for it.
    """
    runs.lock_run(cur, run_id)
    pages = outcomes.start_ready_stages(cur, run_id, page_size)
    validate = outcomes.claim_validation(cur, run_id)
    if not pages and not validate:
        outcomes.settle_failed_run(cur, run_id)
    return Next(pages=pages, validate=validate)


def resume(conn: Any, progress: Progress | None, run_id: str, page_size: int) -> Next:
    """What the ledger says is owed when a producer starts or resumes a run: every sent but
    unfinished batch of a running stage, the stages now ready, or the lost validation."""
    with conn.cursor() as cur:
        status = runs.get_run(cur, run_id)["status"]
        pages = []
        if status == RunStatus.RUNNING:
            for row in stages.stages(cur, run_id):
                if row["status"] == StageStatus.RUNNING:
                    pages.append(outcomes.resume_page(cur, run_id, row, page_size))
        nxt = (
            advance_run(cur, run_id, page_size)
            if status == RunStatus.RUNNING
            else Next(validate=status == RunStatus.VALIDATING)
        )
    conn.commit()
    nxt.pages = pages + nxt.pages
    publish_checkpoints(conn, progress, run_id, None)
    return nxt


def publish_checkpoints(
    conn: Any, progress: Progress | None, run_id: str, names: set[str] | None
) -> None:
    """After a commit that moved stages: their checkpoints in Redis. Best effort, and never
    raising: the moves are committed and what they owe must still be sent; Redis is never the
    truth, and the next batch or stage move writes the checkpoint again."""
    if progress is None:
        return
    try:
        with conn.cursor() as cur:
            checkpoint.publish(cur, progress, run_id, names)
        conn.commit()
    except (redis.RedisError, psycopg2.Error):
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
