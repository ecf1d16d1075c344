"""Running one batch: its data change and its ledger row commit together or not at all."""

from __future__ import annotations

import contextlib
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
    """What a batch did: succeeded, skipped (already done), failed, split (into halves run
    after it), cancelled (the run is not active) or unknown (the ledger was unreachable)."""

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


@dataclass(frozen=True)
class Claim:
    """A batch stamped `running` for this attempt, and the status it had before."""

    batch: ledger.Batch
    previous: str


def claim(conn: Any, run_id: str, stage: str, batch_no: int, worker: str) -> Claim | None:
    """Stamp the batch running (its own commit, so the attempt shows); None if already done.

    A `split` batch is returned unclaimed (previous == split): its halves carry the work.
    """
    with conn.cursor() as cur:
        cur.execute(
            "SELECT lower_bound, upper_bound, status, attempts FROM uuid_migration.batches "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s FOR UPDATE",
            (run_id, stage, batch_no),
        )
        row = cur.fetchone()
        if row is None or row[2] == ledger.SUCCEEDED:
            conn.commit()
            return None
        if row[2] == ledger.SPLIT:
            conn.commit()
            return Claim(ledger.Batch(run_id, stage, batch_no, *row), ledger.SPLIT)
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'running', attempts = attempts + 1, "
            "started_at = now(), finished_at = NULL, worker = %s "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s "
            "RETURNING lower_bound, upper_bound, status, attempts",
            (worker, run_id, stage, batch_no),
        )
        claimed = ledger.Batch(run_id, stage, batch_no, *cur.fetchone())
    conn.commit()
    return Claim(claimed, row[2])


def attempt(
    conn: Any, plan: Plan, stage: Stage, batch: ledger.Batch, statement_timeout_ms: int
) -> tuple[int, int, int, int] | None:
    """One try of the batch's transaction: (rows, mappings, orphans, planned), or None when
    another delivery finished it first. Raises the database's error; the caller decides."""
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
        if row is None or row[0] in ledger.SETTLED:
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


def mark_retrying(conn: Any, batch: ledger.Batch, message: str) -> None:
    """Back to pending with the error, so the ledger and transition log show every try."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'pending', last_error = %s "
            "WHERE run_id = %s AND stage = %s AND batch_no = %s AND status = 'running'",
            (message, batch.run_id, batch.stage, batch.batch_no),
        )
    conn.commit()


def mark_failed(conn: Any, batch: ledger.Batch, table: str, message: str) -> None:
    """Failed for good (until `retry`), with the error in the seed's shape and the range."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'failed', finished_at = now(), "
            "last_error = %s WHERE run_id = %s AND stage = %s AND batch_no = %s "
            "AND status NOT IN ('succeeded', 'split')",
            (message, batch.run_id, batch.stage, batch.batch_no),
        )
        context = {"batch": batch.batch_no, "stage": batch.stage, "range": batch.key_range.label()}
        ledger.record_error(cur, batch.run_id, table, batch.lower, message, context)
    conn.commit()


def rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.rollback()
