"""The circuit breaker: a run whose batches mostly fail is stopped, not left to fail on."""

from __future__ import annotations

from typing import Any

from uuid_migrate.ledger import figures, runs

#: The breaker looks at a run only once this many of its batches have finished.
BREAKER_MIN_FINISHED = 50
#: ... and trips when more than this share of them failed.
BREAKER_FAILED_SHARE = 0.5


def breaker_trips(finished: int, failed: int) -> bool:
    """More than half of at least 50 finished batches failed: the table (or run) is broken."""
    return finished >= BREAKER_MIN_FINISHED and failed > finished * BREAKER_FAILED_SHARE


def check_circuit(conn: Any, run_id: str) -> bool:
    """After a batch failed: stop the run if the breaker trips; True if it did (just now)."""
    with conn.cursor() as cur:
        finished, failed = figures.finished_and_failed(cur, run_id)
        tripped = breaker_trips(finished, failed)
        if tripped:
            runs.lock_run(cur, run_id)
            tripped = runs.fail(
                cur,
                run_id,
                f"stopped by the circuit breaker: {failed} of {finished} finished "
                "batches failed; fix the cause, then `uuid-migrate retry`",
            )
    conn.commit()
    return tripped
