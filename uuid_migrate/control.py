"""Run-level controls: pausing and resuming, and the circuit breaker that stops a broken run.

The pause flag lives in the ledger's run row (the truth); workers look at it before they
claim a batch and wait while it is set, holding their unacknowledged message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from uuid_migrate import ledger
from uuid_migrate.errors import RunStateError

#: The breaker looks at a run only once this many of its batches have finished.
BREAKER_MIN_FINISHED = 50
#: ... and trips when more than this share of them failed.
BREAKER_FAILED_SHARE = 0.5
#: How often a held worker looks at the pause flag again.
PAUSE_POLL_S = 1.0


def set_paused(cur: Any, paused: bool) -> str:
    """Pause or resume the latest active run; returns its id."""
    run = ledger.latest_run(cur)
    if run is None or run["status"] not in ledger.ACTIVE_RUN_STATES:
        raise RunStateError("no active migration run to pause or resume")
    cur.execute(
        "UPDATE uuid_migration.runs SET paused = %s WHERE run_id = %s", (paused, run["run_id"])
    )
    return run["run_id"]


def run_state(cur: Any, run_id: str) -> tuple[str | None, bool]:
    """(status, paused) of the run; (None, False) when it is not in the ledger."""
    cur.execute("SELECT status, paused FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


def wait_while_paused(
    conn: Any, run_id: str, sleep: Callable[[float], None] = time.sleep
) -> str | None:
    """Block while the run is paused; then return its status (None if unknown)."""
    while True:
        with conn.cursor() as cur:
            status, paused = run_state(cur, run_id)
        conn.commit()
        if not paused or status not in ledger.ACTIVE_RUN_STATES:
            return status
        sleep(PAUSE_POLL_S)


def breaker_trips(finished: int, failed: int) -> bool:
    """More than half of at least 50 finished batches failed: the table (or run) is broken."""
    return finished >= BREAKER_MIN_FINISHED and failed > finished * BREAKER_FAILED_SHARE


def check_circuit(conn: Any, run_id: str) -> bool:
    """After a batch failed: stop the run if the breaker trips; True if it did (just now)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), "
            "count(*) FILTER (WHERE status = 'failed') FROM uuid_migration.batches "
            "WHERE run_id = %s",
            (run_id,),
        )
        finished, failed = cur.fetchone()
        tripped = breaker_trips(finished, failed)
        if tripped:
            ledger.lock_run(cur, run_id)
            tripped = ledger.set_run_status(
                cur,
                run_id,
                ledger.FAILED,
                expect=(ledger.RUNNING,),
                message=f"stopped by the circuit breaker: {failed} of {finished} finished "
                "batches failed; fix the cause, then `uuid-migrate retry`",
            )
    conn.commit()
    return tripped
