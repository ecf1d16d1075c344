"""When a run's steps happened, from the ledger's own timestamps: for the benchmark's phases.

Read-only. `taken_at` and `applied_at` are `now()` of their transaction: its start, so each
step's time marks when it began (a concurrent index build, recorded after it, its end).
"""

from __future__ import annotations

from typing import Any


def succeeded_batches(cur: Any, run_id: str) -> list[tuple[str, float, float, int]]:
    """(table, start, end in epoch seconds, rows) of every succeeded batch, by start.

    One row per batch: for the benchmark's figures, not for anything a run does."""
    cur.execute(
        "SELECT s.table_name, extract(epoch FROM b.started_at)::float8, "
        "extract(epoch FROM b.finished_at)::float8, coalesce(b.rows, 0) "
        "FROM uuid_migration.batches b JOIN uuid_migration.stages s USING (run_id, stage) "
        "WHERE b.run_id = %s AND b.status = 'succeeded' ORDER BY b.started_at",
        (run_id,),
    )
    return [(t, float(s), float(e), int(n)) for t, s, e, n in cur.fetchall()]


def step_marks(cur: Any, run_id: str) -> dict[str, float | None]:
    """Epoch seconds of the first snapshot, the first schema step, the first and the last
    row trigger, the first stage started (its first page sent); None where the run has none."""
    cur.execute(
        "SELECT extract(epoch FROM min(taken_at))::float8 FROM uuid_migration.snapshots "
        "WHERE run_id = %s",
        (run_id,),
    )
    snapshots = cur.fetchone()[0]
    cur.execute(
        "SELECT extract(epoch FROM min(applied_at))::float8, "
        "extract(epoch FROM min(applied_at) FILTER (WHERE step->>'kind' = 'row_trigger'))::float8, "
        "extract(epoch FROM max(applied_at) FILTER (WHERE step->>'kind' = 'row_trigger'))::float8 "
        "FROM uuid_migration.ddl_steps WHERE run_id = %s",
        (run_id,),
    )
    ddl, first_trigger, last_trigger = cur.fetchone()
    cur.execute(
        "SELECT extract(epoch FROM min(started_at))::float8 FROM uuid_migration.stages "
        "WHERE run_id = %s",
        (run_id,),
    )
    return {
        "snapshots": snapshots,
        "ddl": ddl,
        "first_trigger": first_trigger,
        "last_trigger": last_trigger,
        "first_stage": cur.fetchone()[0],
    }


def closing_times(
    cur: Any, run_id: str
) -> dict[str, tuple[float, float | None, float | None, float | None]]:
    """Per table, in epoch seconds: its last batch's end, its hand-off (after the final
    sweep; None for a table whose backfill has none), its unique index's first record
    (written once the build is done; a task run twice records it again), its stage's end."""
    cur.execute(
        "WITH last AS (SELECT s.table_name, max(b.finished_at) AS batch_end, "
        "max(s.handed_off_at) AS handed_off, "
        "max(s.finished_at) AS stage_end FROM uuid_migration.stages s "
        "JOIN uuid_migration.batches b USING (run_id, stage) WHERE s.run_id = %s GROUP BY 1), "
        "idx AS (SELECT step->>'table' AS table_name, min(applied_at) AS built "
        "FROM uuid_migration.ddl_steps WHERE run_id = %s AND step->>'kind' = 'unique_index' "
        "GROUP BY 1) "
        "SELECT l.table_name, extract(epoch FROM l.batch_end)::float8, "
        "extract(epoch FROM l.handed_off)::float8, extract(epoch FROM i.built)::float8, "
        "extract(epoch FROM l.stage_end)::float8 FROM last l LEFT JOIN idx i USING (table_name)",
        (run_id, run_id),
    )
    return {t: (float(b), h, i, s) for t, b, h, i, s in cur.fetchall()}
