"""The final sweep of a stage, after its batches are done and before the stages depending on
it start: the rows that raced with the triggers found by one query, and fixed by the batch
statement.

The tool's triggers keep the application's writes in step, but a few can race with them: a
child row written while its parent's UUID was not yet committed keeps a NULL translation, a
row the application wrote with the triggers away has no UUID. One read-only query finds the
rows the batch statement would still write (`dirty_rows`); usually there are none, and the
sweep is done. Otherwise the statement runs over exactly those rows, a chunk of at most a
batch's size at a time, each chunk one short transaction with the batches' lock timeout,
tried again after a backoff while the application holds a row; the run's fence is checked as
a batch checks it. Then the rows are looked for again, a bounded number of times: whatever
still races after that is for validation to report.

A stage no other stage waits for is not swept as it closes but by the run's final validation,
whose scan of the table finds the same rows (`swept_at_close`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2

from uuid_migrate import retrying
from uuid_migrate.execution.attempt import run_statement, silence_user_triggers
from uuid_migrate.execution.dirty_rows import dirty_rows
from uuid_migrate.execution.statement import batch_statement
from uuid_migrate.ledger import runs
from uuid_migrate.plan.cuts import RowSet
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage

#: How long the sweep waits for a row lock the application holds, unless told otherwise.
SWEEP_LOCK_TIMEOUT_MS = 500
#: Tries of one chunk against lock timeouts, and the backoff between them.
SWEEP_ATTEMPTS = 8
SWEEP_BACKOFF_MS, SWEEP_BACKOFF_MAX_MS = 200, 5000
#: Rows found at most per look, and how many looks (each fixing what it found) at most.
SWEEP_ROWS_PER_PASS = 100_000
SWEEP_PASSES = 3


def swept_at_close(stage: Stage, stage_map: dict[str, Stage]) -> bool:
    """Whether a stage is swept as it closes: only when another stage waits for it (for its
    UUIDs, all there once swept). The run's validation scans every table for the sweep's
    rows anyway, and sweeps the tables where it finds some (`progression.final_validation`):
    for a stage nothing waits for, that one pass does both."""
    return any(stage.name in other.depends_on for other in stage_map.values())


def sweep_stage(
    conn: Any, plan: Plan, stage: Stage, run_id: str, lock_timeout_ms: int = SWEEP_LOCK_TIMEOUT_MS,
    sleep: Callable[[float], None] = time.sleep,
) -> int | None:  # fmt: skip
    """Rows the sweep wrote; None when a rollback fenced the run meanwhile (it stops)."""
    written = 0
    for _ in range(SWEEP_PASSES):
        found = _look(conn, plan, stage, run_id)
        if found is None:
            return None
        ids, chunk = found
        if not ids:
            break
        for part in _chunks(ids, chunk):
            rows = _fix(conn, plan, stage, run_id, RowSet(part), lock_timeout_ms, sleep)
            if rows is None:
                return None
            written += rows
    return written


def _look(conn: Any, plan: Plan, stage: Stage, run_id: str) -> tuple[list[str], int] | None:
    """(the dirty rows' ids, the chunk size: the table's batch size), or None if fenced."""
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id)
        if run is None or runs.run_is_fenced(cur, run_id):
            conn.rollback()
            return None
        ids = dirty_rows(cur, plan, stage, SWEEP_ROWS_PER_PASS)
    conn.commit()
    return ids, plan.batch_size_of(stage.table, int(run["batch_size"]))


def _chunks(ids: list[str], size: int) -> Iterator[tuple[str, ...]]:
    for start in range(0, len(ids), size):
        yield tuple(ids[start : start + size])


def _fix(
    conn: Any, plan: Plan, stage: Stage, run_id: str, rows: RowSet, lock_timeout_ms: int,
    sleep: Callable[[float], None],
) -> int | None:  # fmt: skip
    statement = batch_statement(plan, stage, run_id, rows)
    for attempt in range(1, SWEEP_ATTEMPTS + 1):
        try:
            with conn.cursor() as cur:
                if runs.run_is_fenced(cur, run_id):
                    conn.rollback()
                    return None
                silence_user_triggers(conn, cur, plan, stage.table, run_id)
                written, _, _ = run_statement(cur, statement, lock_timeout_ms)
            conn.commit()
            return int(written)
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
            if attempt == SWEEP_ATTEMPTS:
                raise
            backoff = retrying.compute_backoff(attempt, SWEEP_BACKOFF_MS, SWEEP_BACKOFF_MAX_MS)
            sleep(backoff / 1000)
    return 0
