"""Running one batch: its data change and its ledger row commit together or not at all."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2

from uuid_migrate import ledger
from uuid_migrate.batch_sql import batch_statement
from uuid_migrate.plan import Plan, from_dict
from uuid_migrate.stages import Stage, stages

#: Plans parsed once per process and run, since every batch of a run shares one.
_PLANS: dict[str, tuple[Plan, dict[str, Stage]]] = {}


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch did; `status` is succeeded, skipped (already done), failed or unknown."""

    run_id: str
    stage: str
    table: str
    batch_no: int
    status: str
    key_range: str = ""
    rows: int = 0
    planned_rows: int = 0
    mappings: int = 0
    orphans: int = 0
    attempt: int = 0
    duration_ms: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_of_run(cur: Any, run_id: str) -> tuple[Plan, dict[str, Stage]] | None:
    if run_id not in _PLANS:
        run = ledger.get_run(cur, run_id)
        if run is None:
            return None
        plan = from_dict(run["plan"])
        _PLANS[run_id] = (plan, {s.name: s for s in stages(plan)})
    return _PLANS[run_id]


def claim(conn: Any, run_id: str, stage: str, batch_no: int, worker: str) -> ledger.Batch | None:
    """Stamp the batch running (its own commit, so the attempt shows); None if already done."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'running', attempts = attempts + 1, "
            "started_at = now(), finished_at = NULL, worker = %s "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s AND status <> 'succeeded' "
            "RETURNING lower_bound, upper_bound, status, attempts",
            (worker, run_id, stage, batch_no),
        )
        row = cur.fetchone()
    conn.commit()
    return ledger.Batch(run_id, stage, batch_no, *row) if row else None


def execute_batch(
    conn: Any, run_id: str, stage_name: str, batch_no: int, worker: str, statement_timeout_ms: int
) -> BatchOutcome:
    """Run one batch to completion or failure; never raises for a database error of the batch."""
    started = time.monotonic()
    with conn.cursor() as cur:
        known = ledger.ledger_exists(cur) and plan_of_run(cur, run_id)
    conn.commit()
    if not known:
        return BatchOutcome(run_id, stage_name, "", batch_no, "unknown", error="run not in ledger")
    plan, stage_map = known
    stage = stage_map[stage_name]
    batch = claim(conn, run_id, stage_name, batch_no, worker)
    if batch is None:
        return BatchOutcome(run_id, stage_name, stage.table, batch_no, "skipped")
    outcome = BatchOutcome(
        run_id,
        stage_name,
        stage.table,
        batch_no,
        "running",
        batch.key_range.label(),
        attempt=batch.attempts,
    )
    try:
        result = _transaction(conn, plan, stage, batch, statement_timeout_ms)
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        message = _one_line(exc)
        _mark_failed(conn, batch, stage.table, message)
        return _finish(outcome, started, status="failed", error=message)
    if result is None:
        return _finish(outcome, started, status="skipped")
    rows, mappings, orphans, planned = result
    return _finish(
        outcome,
        started,
        status="succeeded",
        rows=rows,
        mappings=mappings,
        orphans=orphans,
        planned_rows=planned,
    )


def _transaction(
    conn: Any, plan: Plan, stage: Stage, batch: ledger.Batch, statement_timeout_ms: int
) -> tuple[int, int, int, int] | None:
    with conn.cursor() as cur:
        cur.execute("SET LOCAL statement_timeout = %s", (statement_timeout_ms,))
        if ledger.run_is_fenced(cur, batch.run_id):
            conn.rollback()
            return None
        # Serialises two deliveries of the same batch: the second waits, then sees it done.
        cur.execute(
            "SELECT status, planned_rows FROM uuid_migration.batches "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s FOR UPDATE",
            (batch.run_id, batch.stage, batch.batch_no),
        )
        row = cur.fetchone()
        if row is None or row[0] == ledger.SUCCEEDED:
            conn.rollback()
            return None
        planned = row[1]
        cur.execute(batch_statement(plan, stage, batch.run_id, batch.key_range))
        rows, mappings, orphans = cur.fetchone()
        # clock_timestamp(): now() is the transaction's start, before the batch's work.
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'succeeded', rows = %s, "
            "finished_at = clock_timestamp(), last_error = NULL "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s",
            (rows, batch.run_id, batch.stage, batch.batch_no),
        )
    conn.commit()
    return rows, mappings, orphans, planned


def _mark_failed(conn: Any, batch: ledger.Batch, table: str, message: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'failed', finished_at = now(), "
            "last_error = %s WHERE run_id = %s AND stage = %s AND batch_no = %s",
            (message, batch.run_id, batch.stage, batch.batch_no),
        )
        context = {"batch": batch.batch_no, "stage": batch.stage, "range": batch.key_range.label()}
        ledger.record_error(cur, batch.run_id, table, batch.lower, message, context)
    conn.commit()


def _rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.rollback()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _finish(outcome: BatchOutcome, started: float, **changes: Any) -> BatchOutcome:
    elapsed = int((time.monotonic() - started) * 1000)
    return BatchOutcome(**{**outcome.as_dict(), **changes, "duration_ms": elapsed})
