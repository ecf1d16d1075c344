"""What a Prometheus scrape reports about the latest run, computed from the ledger.

PostgreSQL is the truth, and the only place that sees the batches of workers on every machine,
so each scrape asks it: a few aggregate queries over the run's batches (set-based, never one
row per batch to Python), whatever the table sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uuid_migrate import ledger

#: Upper bounds (seconds) of the batch duration histogram; +Inf is implied.
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip
#: Every batch state, reported even at zero so a series never vanishes mid-run.
BATCH_STATES = (ledger.PENDING, ledger.RUNNING, ledger.SUCCEEDED, ledger.FAILED, ledger.SPLIT)


@dataclass(frozen=True)
class StageMetrics:
    """One stage (a table's backfill or its deferred references) of the run."""

    stage: str
    table: str
    status: str
    total_rows: int
    rows_processed: int = 0
    rows_changed: int = 0
    retries: int = 0
    batches: dict[str, int] = field(default_factory=dict)
    #: Cumulative counts per DURATION_BOUNDS entry, then the total count (+Inf).
    duration_buckets: tuple[int, ...] = ()
    duration_sum: float = 0.0


@dataclass(frozen=True)
class RunMetrics:
    run_id: str
    status: str
    stages: list[StageMetrics]
    rows_per_second: float | None
    eta_seconds: float | None


def eta_seconds(total: int, done: int, elapsed_s: float, finished: bool) -> float | None:
    """Seconds left at the run's average rate so far; None while there is no rate yet."""
    if finished or done >= total:
        return 0.0
    if done <= 0 or elapsed_s <= 0:
        return None
    return (total - done) / (done / elapsed_s)


def cumulative_buckets(
    bounds: tuple[float, ...], by_bounds_above: dict[int, int]
) -> tuple[int, ...]:
    """Prometheus buckets (count of durations <= each bound, then all) from counts keyed by
    how many bounds are >= the duration (0: above every bound, only in +Inf)."""
    n = len(bounds)
    cumulative = [
        sum(count for above, count in by_bounds_above.items() if above >= n - j) for j in range(n)
    ]
    return (*cumulative, sum(by_bounds_above.values()))


def collect(cur: Any) -> RunMetrics | None:
    """The latest run's metrics, or None when the database has no run."""
    run = ledger.latest_run(cur)
    if run is None:
        return None
    run_id = run["run_id"]
    states = _batch_states(cur, run_id)
    durations = _durations(cur, run_id)
    stages = []
    for row in _stage_rows(cur, run_id):
        counts, seconds = durations.get(row["stage"], ({}, 0.0))
        stages.append(
            StageMetrics(
                **row,
                batches={s: states.get((row["stage"], s), 0) for s in BATCH_STATES},
                duration_buckets=cumulative_buckets(DURATION_BOUNDS, counts),
                duration_sum=seconds,
            )
        )
    total = sum(s.total_rows for s in stages)
    done = sum(s.rows_processed for s in stages)
    elapsed = _elapsed_s(cur, run_id)
    finished = run["status"] == ledger.SUCCEEDED
    return RunMetrics(
        run_id=run_id,
        status=run["status"],
        stages=stages,
        rows_per_second=done / elapsed if elapsed > 0 else None,
        eta_seconds=eta_seconds(total, done, elapsed, finished),
    )


def _stage_rows(cur: Any, run_id: str) -> list[dict[str, Any]]:
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


def _batch_states(cur: Any, run_id: str) -> dict[tuple[str, str], int]:
    cur.execute(
        "SELECT stage, status, count(*) FROM uuid_migration.batches WHERE run_id = %s "
        "GROUP BY stage, status",
        (run_id,),
    )
    return {(stage, status): count for stage, status, count in cur.fetchall()}


def _durations(cur: Any, run_id: str) -> dict[str, tuple[dict[int, int], float]]:
    """Per stage: finished batches counted by how many bounds are >= their duration; the sum.

    width_bucket over the negated, ascending bounds counts the bounds >= a duration in one
    pass, which is exactly Prometheus' inclusive `le` (width_bucket alone is exclusive).
    """
    negated = sorted(-b for b in DURATION_BOUNDS)
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


def _elapsed_s(cur: Any, run_id: str) -> float:
    """Seconds from the run's first batch start to its last finish (or now, while running)."""
    cur.execute(
        "SELECT extract(epoch FROM (CASE WHEN bool_and(status IN ('succeeded', 'failed', 'split')) "
        "THEN max(finished_at) ELSE now() END) - min(started_at))::float8 "
        "FROM uuid_migration.batches WHERE run_id = %s",
        (run_id,),
    )
    value = cur.fetchone()[0]
    return float(value) if value else 0.0
