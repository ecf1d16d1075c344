"""The seed's checkpoint shape, computed from the ledger (the truth) for one stage."""

from __future__ import annotations

from typing import Any

from uuid_migrate import ledger
from uuid_migrate.stages import BACKFILL

#: The seed's phase name for the UUID backfill; deferred references get their own.
PHASES = {BACKFILL: "uuid_migration", "references": "uuid_references"}
#: How many error records a checkpoint carries; the rest are counted.
ERRORS_SHOWN = 20


def last_processed_id(cur: Any, run_id: str, stage: str) -> str | None:
    """The highest bound below which every batch is done (index lookups, not a scan).

    Halves of a split batch carry their planned ancestor's number as `root_no`, and only
    planned batches' bounds are reported, so a split never moves the checkpoint backwards
    or past work still open.
    """
    cur.execute(
        "SELECT min(coalesce(root_no, batch_no)) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND status NOT IN ('succeeded', 'split')",
        (run_id, stage),
    )
    first_open = cur.fetchone()[0]
    cur.execute(
        "SELECT upper_bound FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "AND upper_bound IS NOT NULL AND root_no IS NULL AND (%s::int IS NULL OR batch_no < %s) "
        "ORDER BY batch_no DESC LIMIT 1",
        (run_id, stage, first_open, first_open),
    )
    row = cur.fetchone()
    return row[0] if row else None


def processed_rows(cur: Any, run_id: str, stage: str) -> int:
    cur.execute(
        "SELECT coalesce(sum(planned_rows), 0) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND status = 'succeeded'",
        (run_id, stage),
    )
    return int(cur.fetchone()[0])


def stage_checkpoint(cur: Any, run_id: str, stage: dict[str, Any]) -> dict[str, Any]:
    """{phase, table, lastProcessedId, processedCount, totalCount, status, errors} for a stage."""
    error_count, errors = ledger.errors_of(cur, stage["table"], ERRORS_SHOWN)
    return {
        "phase": PHASES.get(stage["kind"], stage["kind"]),
        "table": stage["table"],
        "stage": stage["stage"],
        "lastProcessedId": last_processed_id(cur, run_id, stage["stage"]),
        "processedCount": processed_rows(cur, run_id, stage["stage"]),
        "totalCount": int(stage["total_rows"]),
        "status": _seed_status(stage["status"]),
        "errors": errors,
        "errorCount": error_count,
        "batches": ledger.batch_counts(cur, run_id, stage["stage"]),
    }


def _seed_status(status: str) -> str:
    """The seed says in_progress for a table being worked on."""
    return {"running": "in_progress", "succeeded": "completed"}.get(status, status)
