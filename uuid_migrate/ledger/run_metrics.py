"""The aggregates a Prometheus scrape reads, over the run's batches and stages.

A few set-based queries per scrape, never one row per batch to Python, whatever the size.
"""

from __future__ import annotations

from typing import Any


def stage_rows(cur: Any, run_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT s.stage, s.table_name, s.status, s.total_rows, "
        "coalesce(sum(b.planned_rows) FILTER (WHERE b.status = 'succeeded'), 0), "
        "coalesce(sum(b.rows) FILTER (WHERE b.status = 'succeeded'), 0), "
        "coalesce(sum(greatest(b.attempts - 1, 0)), 0) "
        "FROM uuid_migration.stages s LEFT JOIN uuid_migration.batches b "
        "ON b.run_id = s.run_id AND b.stage = s.stage WHERE s.run_id = %s "
        "GROUP BY s.stage, s.table_name, s.status, s.total_rows, s.position ORDER BY s.position",
        (run_id,),
    )
    return [
        {
            "stage": stage,
            "table": table,
            "status": status,
            "total_rows": int(total),
            "rows_processed": int(processed),
            "rows_changed": int(changed),
            "retries": int(retries),
        }
        for stage, table, status, total, processed, changed, retries in cur.fetchall()
    ]


def batch_states(cur: Any, run_id: str) -> dict[tuple[str, str], int]:
    cur.execute(
        "SELECT stage, status, count(*) FROM uuid_migration.batches WHERE run_id = %s "
        "GROUP BY stage, status",
        (run_id,),
    )
    return {(stage, status): count for stage, status, count in cur.fetchall()}


def durations(
    cur: Any, run_id: str, bounds: tuple[float, ...]
) -> dict[str, tuple[dict[int, int], float]]:
    """Per stage: finished batches counted by how many `bounds` are >= their duration; the sum.

    width_bucket over the negated, ascending bounds counts the bounds >= a duration in one
    pass, which is exactly Prometheus' inclusive `le` (width_bucket alone is exclusive).
    """
    negated = sorted(-b for b in bounds)
    cur.execute(
        "WITH d AS (SELECT stage, extract(epoch FROM finished_at - started_at)::float8 AS s "
        "FROM uuid_migration.batches WHERE run_id = %s AND status IN ('succeeded', 'failed') "
        "AND started_at IS NOT NULL AND finished_at IS NOT NULL) "
        "SELECT stage, width_bucket(-s, %s::float8[]), count(*), sum(s) FROM d GROUP BY 1, 2",
        (run_id, negated),
    )
    counts: dict[str, dict[int, int]] = {}
    sums: dict[str, float] = {}
    for stage, above, count, seconds in cur.fetchall():
        counts.setdefault(stage, {})[above] = int(count)
        sums[stage] = sums.get(stage, 0.0) + float(seconds)
    return {stage: (counts[stage], sums[stage]) for stage in counts}


def elapsed_s(cur: Any, run_id: str) -> float:
    """Seconds from the run's first batch start to its last finish (or now, while running)."""
    cur.execute(
        "SELECT extract(epoch FROM (CASE WHEN bool_and(status IN ('succeeded', 'failed', 'split')) "
        "THEN max(finished_at) ELSE now() END) - min(started_at))::float8 "
        "FROM uuid_migration.batches WHERE run_id = %s",
        (run_id,),
    )
    value = cur.fetchone()[0]
    return float(value) if value else 0.0
