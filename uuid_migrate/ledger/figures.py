"""Read-only figures over a run's batches: counts, checkpoints, failures, durations.

Aggregates only, set-based, never one row per batch to Python; the partial index on batches
not yet succeeded keeps the per-batch ones cheap whatever the table's size.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.plan.ranges import KeyRange
from uuid_migrate.timestamps import iso


def batch_counts(cur: Any, run_id: str, stage: str) -> dict[str, int]:
    """Batches of the stage by status; `succeeded` counted as all batches less the others."""
    cur.execute(
        "SELECT status, count(*) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "AND status <> 'succeeded' GROUP BY status",
        (run_id, stage),
    )
    counts = {status: count for status, count in cur.fetchall()}
    cur.execute(
        "SELECT coalesce(max(batch_no) + 1, 0) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s",
        (run_id, stage),
    )
    succeeded = cur.fetchone()[0] - sum(counts.values())
    return {"succeeded": succeeded, **counts} if succeeded else counts


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


def running_batches(cur: Any, run_ids: list[str]) -> int:
    cur.execute(
        "SELECT count(*) FROM uuid_migration.batches WHERE run_id = ANY(%s) AND status = 'running'",
        (run_ids,),
    )
    return int(cur.fetchone()[0])


def finished_and_failed(cur: Any, run_id: str) -> tuple[int, int]:
    """(batches finished, of which failed) over the whole run: the circuit breaker's input."""
    cur.execute(
        "SELECT count(*) FILTER (WHERE status IN ('succeeded', 'failed')), "
        "count(*) FILTER (WHERE status = 'failed') FROM uuid_migration.batches "
        "WHERE run_id = %s",
        (run_id,),
    )
    finished, failed = cur.fetchone()
    return int(finished), int(failed)


def failed_batches(cur: Any, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The failed batches of a run as error records, with their range and attempts."""
    cur.execute(
        "SELECT s.table_name, b.stage, b.batch_no, b.lower_bound, b.upper_bound, b.last_error, "
        "b.attempts, b.finished_at FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "USING (run_id, stage) WHERE b.run_id = %s AND b.status = 'failed' "
        "ORDER BY s.position, b.batch_no LIMIT %s",
        (run_id, limit),
    )
    return [
        {
            "table": table,
            "id": lower,
            "error": error,
            "timestamp": iso(at),
            "stage": stage,
            "batch": no,
            "range": KeyRange(lower, upper).label(),
            "attempts": attempts,
        }
        for table, stage, no, lower, upper, error, attempts, at in cur.fetchall()
    ]


def batches_in(cur: Any, run_id: str, states: tuple[str, ...], limit: int) -> tuple[int, list[str]]:
    """How many batches of the run are in `states`, and the first as `stage#n status (range]`."""
    cur.execute(
        "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s AND status = ANY(%s)",
        (run_id, list(states)),
    )
    found = int(cur.fetchone()[0])
    cur.execute(
        "SELECT stage || '#' || batch_no || ' ' || status || ' (' || coalesce(quote_literal("
        "lower_bound), '-inf') || ', ' || coalesce(quote_literal(upper_bound), '+inf') || ']' "
        "FROM uuid_migration.batches WHERE run_id = %s AND status = ANY(%s) "
        "ORDER BY stage, batch_no LIMIT %s",
        (run_id, list(states), limit),
    )
    return found, [row[0] for row in cur.fetchall()]


def table_failed_rows(cur: Any, run_id: str, table: str) -> int:
    """Rows of the table's failed batches."""
    cur.execute(
        "SELECT coalesce(sum(b.planned_rows), 0) FROM uuid_migration.batches b "
        "JOIN uuid_migration.stages s ON s.run_id = b.run_id AND s.stage = b.stage "
        "WHERE b.run_id = %s AND s.table_name = %s AND b.status = 'failed'",
        (run_id, table),
    )
    return int(cur.fetchone()[0])


def table_duration_ms(cur: Any, run_id: str, table: str) -> int | None:
    """First batch start to last batch end of the table, in milliseconds."""
    cur.execute(
        "SELECT extract(epoch FROM max(b.finished_at) - min(b.started_at)) * 1000 "
        "FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "ON s.run_id = b.run_id AND s.stage = b.stage WHERE b.run_id = %s AND s.table_name = %s",
        (run_id, table),
    )
    value = cur.fetchone()[0]
    return int(value) if value is not None else None


def stage_activity(cur: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """Per stage: its active seconds (first batch start to last end, or to now while any
    batch is open), rows of succeeded batches, failed batches, batches being retried (a
    later attempt) and batches waiting for a worker."""
    cur.execute(
        "SELECT stage, extract(epoch FROM (CASE WHEN bool_or(status IN ('pending', 'running')) "
        "AND min(started_at) IS NOT NULL THEN clock_timestamp() ELSE max(finished_at) END) "
        "- min(started_at))::float8, "
        "coalesce(sum(planned_rows) FILTER (WHERE status = 'succeeded'), 0), "
        "count(*) FILTER (WHERE status = 'failed'), "
        "count(*) FILTER (WHERE status IN ('pending', 'running') AND attempts > 0 "
        "AND (status = 'pending' OR attempts > 1)), count(*) FILTER (WHERE status = 'pending') "
        "FROM uuid_migration.batches WHERE run_id = %s GROUP BY stage",
        (run_id,),
    )
    keys = ("active_s", "done", "failed", "retrying", "waiting")
    return {
        stage: dict(zip(keys, (float(active or 0.0), *map(int, counts)), strict=True))
        for stage, active, *counts in cur.fetchall()
    }


def seconds_since_last_claim(cur: Any, run_id: str) -> float | None:
    """Seconds since a worker last took a batch of the run, or since its first stage started
    if none did yet; None before that."""
    cur.execute(
        "SELECT extract(epoch FROM clock_timestamp() - coalesce((SELECT max(at) FROM "
        "uuid_migration.transitions WHERE run_id = %s AND to_status = 'running'), "
        "(SELECT min(started_at) FROM uuid_migration.stages WHERE run_id = %s)))::float8",
        (run_id, run_id),
    )
    value = cur.fetchone()[0]
    return None if value is None else float(value)


def stage_timing(cur: Any, run_id: str, stage: str) -> dict[str, float]:
    """A stage's succeeded batches, their rows, first start to last end (s), median (ms)."""
    cur.execute(
        "SELECT count(*), coalesce(sum(planned_rows), 0), extract(epoch FROM "
        "max(finished_at) - min(started_at))::float8, percentile_cont(0.5) WITHIN GROUP "
        "(ORDER BY extract(epoch FROM finished_at - started_at)) FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND status = 'succeeded'",
        (run_id, stage),
    )
    batches, rows, seconds, median = cur.fetchone()
    return {
        "batches": int(batches),
        "rows": int(rows),
        "seconds": float(seconds or 0.0),
        "median_ms": float(median or 0.0) * 1000,
    }
