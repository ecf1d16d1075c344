"""What a Prometheus scrape reports about the latest run, computed from the ledger.

PostgreSQL is the truth, and the only place that sees the batches of workers on every machine,
so each scrape asks it: a few aggregate queries over the run's batches (set-based, never one
row per batch to Python), whatever the table sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from uuid_migrate.ledger import run_metrics, runs
from uuid_migrate.ledger.states import BatchStatus, RunStatus

#: Upper bounds (seconds) of the batch duration histogram; +Inf is implied.
DURATION_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)  # fmt: skip
#: Every batch state, reported even at zero so a series never vanishes mid-run.
BATCH_STATES = tuple(BatchStatus)


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
    run = runs.latest_run(cur)
    if run is None:
        return None
    run_id = run["run_id"]
    states = run_metrics.batch_states(cur, run_id)
    durations = run_metrics.durations(cur, run_id, DURATION_BOUNDS)
    stages = []
    for row in run_metrics.stage_rows(cur, run_id):
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
    elapsed = run_metrics.elapsed_s(cur, run_id)
    finished = run["status"] == RunStatus.SUCCEEDED
    return RunMetrics(
        run_id=run_id,
        status=run["status"],
        stages=stages,
        rows_per_second=done / elapsed if elapsed > 0 else None,
        eta_seconds=eta_seconds(total, done, elapsed, finished),
    )
