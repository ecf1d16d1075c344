"""What happens after a batch, after a page of batches, and at the end of a run.

Plain code called by the thin Celery tasks: it reads and writes the ledger and Redis and says
what must be sent next; the tasks do the sending.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg2.extras import Json

from uuid_migrate import flow, ledger
from uuid_migrate.batch import BatchOutcome, plan_of_run
from uuid_migrate.checkpoint import PHASES, last_processed_id
from uuid_migrate.ddl import UniqueIndex, index_steps, step_to_dict
from uuid_migrate.ddl_runner import take_advisory_lock
from uuid_migrate.flow import Page
from uuid_migrate.ledger import FAILED, SUCCEEDED
from uuid_migrate.plan import Plan
from uuid_migrate.progress import Progress
from uuid_migrate.stages import BACKFILL
from uuid_migrate.validation import validate_run


@dataclass
class Next:
    """Messages to send once the ledger changes are committed."""

    pages: list[Page] = field(default_factory=list)
    validate: bool = False
    #: Re-sent batches: chords whose callback continues their stage (`continue_stage`).
    retries: list[Page] = field(default_factory=list)


def record_progress(conn: Any, progress: Progress, outcome: BatchOutcome) -> None:
    """After the commit: count the batch once in Redis and refresh the stage's checkpoint."""
    if outcome.status not in (SUCCEEDED, FAILED):
        return
    failed = outcome.status == FAILED
    progress.count_batch(
        outcome.stage, outcome.batch_no, outcome.planned_rows, outcome.rows, failed
    )
    with conn.cursor() as cur:
        last_id = last_processed_id(cur, outcome.run_id, outcome.stage)
        cur.execute(
            "SELECT kind, total_rows FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
            (outcome.run_id, outcome.stage),
        )
        kind, total = cur.fetchone()
    conn.commit()
    counters = progress.stage(outcome.stage)
    progress.write_checkpoint(
        outcome.stage,
        {
            "phase": PHASES.get(kind, kind),
            "table": outcome.table,
            "lastProcessedId": last_id,
            "processedCount": counters.get("processed", 0),
            "totalCount": total,
            "status": "in_progress",
            "errors": [],
        },
    )


def after_page(
    conn: Any, index_conn_factory: Any, run_id: str, stage: str, end: int, page_size: int
) -> Next:
    """A chord finished page `end` of a stage: send the next page, or close the stage."""
    with conn.cursor() as cur:
        run = ledger.get_run(cur, run_id)
        if run is None or run["status"] != ledger.RUNNING:
            conn.commit()
            return Next()  # stopped (the circuit breaker): `retry` picks the stage up again
        if not flow.page_is_last(cur, run_id, stage, end):
            page = flow.claim_next_page(cur, run_id, stage, end, page_size)
            conn.commit()
            return Next(pages=[page] if page else [])
        outcome = flow.stage_outcome(cur, run_id, stage)
        known = plan_of_run(cur, run_id)
    conn.commit()
    if outcome == flow.RUNNING or not known:
        return Next()  # a batch is still out (a redelivery); its own page callback will close
    plan, stage_map = known
    if outcome == SUCCEEDED and stage_map[stage].kind == BACKFILL:
        position, index = index_step_of(plan, stage_map[stage].table)
        build_unique_index(index_conn_factory, index, run_id, position)
    return close_stage(conn, run_id, stage, outcome, page_size)


def continue_stage(conn: Any, index_conn_factory: Any, run_id: str, stage: str, page_size: int) -> Next:
    """Callback of re-sent batches and the reconciler's step: once nothing sent is still out,
    send the stage's next page, or close it (whatever chord was meant to, if it never did)."""
    with conn.cursor() as cur:
        run = ledger.get_run(cur, run_id)
        row = next((s for s in ledger.stages(cur, run_id) if s["stage"] == stage), None)
        if run is None or run["status"] != ledger.RUNNING or not row or row["status"] != "running":
            conn.commit()
            return Next()
        if flow.dispatched_open(cur, run_id, stage):
            conn.commit()
            return Next()
        if row["dispatched_upto"] < row["batch_count"]:
            page = flow.claim_next_page(cur, run_id, stage, row["dispatched_upto"], page_size)
            conn.commit()
            if page is not None:
                return Next(pages=[page])
    conn.commit()
    return after_page(conn, index_conn_factory, run_id, stage, row["batch_count"], page_size)


def close_stage(conn: Any, run_id: str, stage: str, outcome: str, page_size: int) -> Next:
    """Mark the stage, start what it unblocked, and hand over to validation at the end."""
    with conn.cursor() as cur:
        ledger.lock_run(cur, run_id)
        flow.finish_stage(cur, run_id, stage, outcome)
        nxt = advance_run(cur, run_id, page_size)
    conn.commit()
    return nxt


def advance_run(cur: Any, run_id: str, page_size: int) -> Next:
    """Start every stage whose parents are done; claim validation once all are; settle failure.

    Runs under the run's row lock (taken here if the caller has not), in READ COMMITTED, so
    each statement sees stages that a concurrent closer committed while we waited for it.
    """
    ledger.lock_run(cur, run_id)
    pages = flow.start_ready_stages(cur, run_id, page_size)
    validate = flow.claim_validation(cur, run_id)
    if not pages and not validate:
        flow.settle_failed_run(cur, run_id)
    return Next(pages=pages, validate=validate)


def build_unique_index(conn_factory: Any, index: UniqueIndex, run_id: str, position: int) -> None:
    """CREATE UNIQUE INDEX CONCURRENTLY, once, replacing an invalid leftover of a crash.

    Recorded as one of the run's steps, so rollback knows it may drop it. Under the index's
    advisory lock, which a rollback takes too: either the build ends before the rollback
    looks, or it sees the rollback's fence and builds nothing.
    """
    conn = conn_factory()
    try:
        with conn.cursor() as cur:
            take_advisory_lock(cur, index.lock_key())
            try:
                if not ledger.run_is_fenced(cur, run_id):
                    _build(cur, index, run_id, position)
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s)", (index.lock_key(),))
    finally:
        conn.close()


def _build(cur: Any, index: UniqueIndex, run_id: str, position: int) -> None:
    validity = index.validity(cur)
    if validity is False:
        cur.execute(index.reverse())
    cur.execute(index.forward())
    cur.execute(
        "INSERT INTO uuid_migration.ddl_steps (run_id, position, step, created) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, position, Json(step_to_dict(index)), validity is not True),
    )


def index_step_of(plan: Plan, table: str) -> tuple[int, UniqueIndex]:
    return next((p, i) for p, i in index_steps(plan) if i.table == table)


def finish_validation(conn: Any, run_id: str) -> dict[str, Any] | None:
    """Build and store the post-migration report, then close the run by its verdict."""
    with conn.cursor() as cur:
        ledger.lock_run(cur, run_id)
        run = ledger.get_run(cur, run_id)
        known = plan_of_run(cur, run_id)
        if known is None or run["status"] != ledger.VALIDATING:
            conn.rollback()
            return None  # a duplicate delivery, or the run was rolled back meanwhile
        report = validate_run(cur, run_id, known[0])
        verdict = SUCCEEDED if report["overallStatus"] == "passed" else FAILED
        message = None if verdict == SUCCEEDED else "post-migration validation failed"
        ledger.set_run_status(cur, run_id, verdict, expect=(ledger.VALIDATING,), message=message)
    conn.commit()
    return report
