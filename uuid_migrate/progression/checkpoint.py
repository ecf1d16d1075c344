"""The checkpoint of a stage (docs/checkpoint.md), built from the ledger: the one builder
behind the copy in Redis, `status --json` and the rebuilt copy after Redis lost it.

Redis gets a fresh checkpoint after every batch and every move of the stage, so what a user
reads there says what the ledger says: `in_progress` while the stage runs, `completed` or
`failed` once it closed, with the table's error records.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.ledger import error_records, figures, stages
from uuid_migrate.plan.stages import BACKFILL, REFERENCES
from uuid_migrate.progression.live import Progress

#: The phase name of each kind of stage.
PHASES = {BACKFILL: "uuid_migration", REFERENCES: "uuid_references"}
#: How many error records a checkpoint carries; the rest are counted.
ERRORS_SHOWN = 20
#: While a stage runs, its batch counts are counted again at most this often.
BATCH_COUNTS_EVERY_S = 1.0
#: Stage states as a checkpoint names them.
_STATUS = {"running": "in_progress", "succeeded": "completed"}


def build(
    cur: Any,
    run_id: str,
    stage: dict[str, Any],
    errors: tuple[int, list[dict[str, Any]]] | None = None,
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """{phase, table, stage, lastProcessedId, processedCount, totalCount, status, errors,
    errorCount, batches} for a stage row of the ledger. `errors` (count, first records) and
    `live` (processedCount and batches, from a fresher source), when the caller has them,
    save the queries that would read them."""
    name = stage["stage"]
    error_count, shown = errors or error_records.of_table(cur, stage["table"], ERRORS_SHOWN)
    live = live or {
        "processedCount": figures.processed_rows(cur, run_id, name),
        "batches": figures.batch_counts(cur, run_id, name),
    }
    return {
        "phase": PHASES.get(stage["kind"], stage["kind"]),
        "table": stage["table"],
        "stage": name,
        "lastProcessedId": figures.last_processed_id(cur, run_id, name),
        "processedCount": live["processedCount"],
        "totalCount": int(stage["total_rows"]),
        "status": _STATUS.get(stage["status"], stage["status"]),
        "errors": shown,
        "errorCount": error_count,
        "batches": live["batches"],
    }


def publish(cur: Any, progress: Progress, run_id: str, names: set[str] | None = None) -> None:
    """Write the checkpoints of the run's stages (or of those named) to Redis."""
    for row in stages.stages(cur, run_id):
        if names is None or row["stage"] in names:
            progress.write_checkpoint(row["stage"], build(cur, run_id, row))


def after_batch(cur: Any, progress: Progress, run_id: str, name: str) -> dict[str, Any] | None:
    """The stage's checkpoint after one of its batches, written to Redis, in a few index
    lookups whatever the stage's size: the rows done come from the Redis counters (each
    batch counted once, just before), the error records are read again only when their count
    changed, and the batch counts, a scan of the stage's batches, at most every
    BATCH_COUNTS_EVERY_S (every stage move writes them exactly)."""
    row = stages.stage(cur, run_id, name)
    if row is None:
        return None
    previous = progress.checkpoint(name) or {}
    count = error_records.count_of_table(cur, row["table"])
    errors = (
        (count, previous["errors"])
        if previous.get("errorCount") == count
        else error_records.of_table(cur, row["table"], ERRORS_SHOWN, count)
    )
    counted = progress.throttle(f"batch_counts:{name}", BATCH_COUNTS_EVERY_S)
    live = {
        "processedCount": progress.stage(name).get("processed", 0),
        "batches": (
            figures.batch_counts(cur, run_id, name)
            if counted or "batches" not in previous
            else previous["batches"]
        ),
    }
    checkpoint = build(cur, run_id, row, errors=errors, live=live)
    progress.write_checkpoint(name, checkpoint)
    return checkpoint
