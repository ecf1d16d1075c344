"""The final sweep of a stage: its batches' statements once more, over every range, after
the stage's batches (and its unique index) are done.

The tool's triggers keep the application's writes in step, but a few can race with them: a
child row written while its parent's UUID was not yet committed keeps a NULL translation, a
row the application wrote with the triggers away has no UUID. The batch statement writes
exactly the rows still lacking their UUID or holding a translation that differs from the
parent's (and their mappings), so running it again fixes those and leaves the rest alone.
Each range is one short transaction with the batches' lock timeout, tried again after a
backoff while the application holds a row; the run's fence is checked as a batch checks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2

from uuid_migrate import retrying
from uuid_migrate.execution.attempt import run_statement, silence_user_triggers
from uuid_migrate.execution.statement import batch_statement
from uuid_migrate.ledger import batches, runs
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.ranges import KeyRange
from uuid_migrate.plan.stages import Stage

#: How long the sweep waits for a row lock the application holds, unless told otherwise.
SWEEP_LOCK_TIMEOUT_MS = 500
#: Tries of one range against lock timeouts, and the backoff between them.
SWEEP_ATTEMPTS = 8
SWEEP_BACKOFF_MS, SWEEP_BACKOFF_MAX_MS = 200, 5000


def sweep_stage(
    conn: Any, plan: Plan, stage: Stage, run_id: str, lock_timeout_ms: int = SWEEP_LOCK_TIMEOUT_MS,
    sleep: Callable[[float], None] = time.sleep,
) -> int | None:  # fmt: skip
    """Rows the sweep wrote; None when a rollback fenced the run meanwhile (it stops)."""
    with conn.cursor() as cur:
        ranges = batches.succeeded_ranges(cur, run_id, stage.name)
    conn.commit()
    written = 0
    for key_range in ranges:
        rows = _sweep_range(conn, plan, stage, run_id, key_range, lock_timeout_ms, sleep)
        if rows is None:
            return None
        written += rows
    return written


def _sweep_range(
    conn: Any, plan: Plan, stage: Stage, run_id: str, key_range: KeyRange, lock_timeout_ms: int,
    sleep: Callable[[float], None],
) -> int | None:  # fmt: skip
    statement = batch_statement(plan, stage, run_id, key_range)
    for attempt in range(1, SWEEP_ATTEMPTS + 1):
        try:
            with conn.cursor() as cur:
                if runs.run_is_fenced(cur, run_id):
                    conn.rollback()
                    return None
                silence_user_triggers(conn, cur, plan, stage.table, run_id)
                rows, _, _ = run_statement(cur, statement, lock_timeout_ms)
            conn.commit()
            return int(rows)
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
            if attempt == SWEEP_ATTEMPTS:
                raise
            backoff = retrying.compute_backoff(attempt, SWEEP_BACKOFF_MS, SWEEP_BACKOFF_MAX_MS)
            sleep(backoff / 1000)
    return 0
