"""The stages table: a table's backfill or its deferred references, and every move of one.

A stage also holds how far its batches were sent (`dispatched_upto`): pages are claimed by a
compare-and-set on it, so a page is sent once whoever asks for it.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.ledger.states import StageStatus

_STAGE_KEYS = (
    "stage",
    "table",
    "kind",
    "depends_on",
    "status",
    "planned",
    "total_rows",
    "batch_count",
    "dispatched_upto",
    "started_at",
    "finished_at",
    "handed_off_at",
)

_SELECT = (
    "SELECT stage, table_name, kind, depends_on, status, planned, total_rows, batch_count, "
    "dispatched_upto, started_at, finished_at, handed_off_at FROM uuid_migration.stages"
)


def add_stage(cur: Any, run_id: str, position: int, stage: Any) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.stages (run_id, stage, position, table_name, kind, depends_on) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, stage.name, position, stage.table, stage.kind, list(stage.depends_on)),
    )


def stages(cur: Any, run_id: str) -> list[dict[str, Any]]:
    """The run's stages in dependency order (parents first)."""
    cur.execute(
        f"{_SELECT} WHERE run_id = %s ORDER BY position",
        (run_id,),
    )
    return [dict(zip(_STAGE_KEYS, row, strict=True)) for row in cur.fetchall()]


def stage(cur: Any, run_id: str, name: str) -> dict[str, Any] | None:
    """One stage's row, as `stages` gives it."""
    cur.execute(
        f"{_SELECT} WHERE run_id = %s AND stage = %s",
        (run_id, name),
    )
    row = cur.fetchone()
    return dict(zip(_STAGE_KEYS, row, strict=True)) if row else None


def mark_planned(cur: Any, run_id: str, stage_name: str, batch_count: int, total: int) -> None:
    cur.execute(
        "UPDATE uuid_migration.stages SET planned = true, batch_count = %s, total_rows = %s "
        "WHERE run_id = %s AND stage = %s",
        (batch_count, total, run_id, stage_name),
    )


def claim_pages(cur: Any, run_id: str, stage_name: str, done_upto: int, size: int) -> int | None:
    """Move `dispatched_upto` from `done_upto` on by up to `size`; the new end, or None when
    another caller moved it first or the stage has nothing left to send."""
    cur.execute(
        "UPDATE uuid_migration.stages SET dispatched_upto = least(dispatched_upto + %s, "
        "batch_count), sent_at = now() WHERE run_id = %s AND stage = %s AND dispatched_upto = %s "
        "AND dispatched_upto < batch_count AND status = 'running' RETURNING dispatched_upto",
        (size, run_id, stage_name, done_upto),
    )
    row = cur.fetchone()
    return row[0] if row else None


def start_ready(cur: Any, run_id: str) -> list[str]:
    """pending -> running for every planned stage whose parents all succeeded or, still
    building their unique index, handed their tables over."""
    cur.execute(
        "UPDATE uuid_migration.stages s SET status = 'running', started_at = now(), "
        "dispatched_upto = 0 WHERE s.run_id = %s AND s.status = 'pending' AND s.planned "
        "AND NOT EXISTS (SELECT 1 FROM uuid_migration.stages d WHERE d.run_id = s.run_id "
        "AND d.stage = ANY(s.depends_on) AND d.status <> 'succeeded' "
        "AND NOT (d.status = 'running' AND d.handed_off_at IS NOT NULL)) RETURNING s.stage",
        (run_id,),
    )
    return [row[0] for row in cur.fetchall()]


def hand_off(cur: Any, run_id: str, stage_name: str) -> bool:
    """A running stage's batches and sweep are done: its dependents may start; False if
    another caller already handed it off."""
    cur.execute(
        "UPDATE uuid_migration.stages SET handed_off_at = now() WHERE run_id = %s "
        "AND stage = %s AND status = 'running' AND handed_off_at IS NULL RETURNING 1",
        (run_id, stage_name),
    )
    return cur.fetchone() is not None


def any_before_hand_off(cur: Any, run_id: str) -> bool:
    """Whether a stage of the run is still to start, or running and not handed off."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM uuid_migration.stages WHERE run_id = %s "
        "AND status IN ('pending', 'running') AND handed_off_at IS NULL)",
        (run_id,),
    )
    return bool(cur.fetchone()[0])


def finish(cur: Any, run_id: str, stage_name: str, status: StageStatus) -> bool:
    """running -> succeeded | failed; False if another caller already did."""
    cur.execute(
        "UPDATE uuid_migration.stages SET status = %s, finished_at = now() "
        "WHERE run_id = %s AND stage = %s AND status = 'running' RETURNING 1",
        (status, run_id, stage_name),
    )
    return cur.fetchone() is not None


def reopen(
    cur: Any, run_id: str, stage_names: list[str], status: StageStatus = StageStatus.FAILED,
    to: StageStatus = StageStatus.RUNNING,
) -> list[str]:
    """`status` -> `to`: failed -> running for the stages whose batches are sent again or
    which close again (swept and handed off again once done); succeeded -> pending for those
    to start again after their parent (see `requeue`)."""
    cur.execute(
        "UPDATE uuid_migration.stages SET status = %s, finished_at = NULL, "
        "handed_off_at = NULL "
        "WHERE run_id = %s AND stage = ANY(%s) AND status = %s RETURNING stage",
        (to, run_id, stage_names, status),
    )
    return [row[0] for row in cur.fetchall()]


def status_counts(cur: Any, run_id: str) -> dict[str, int]:
    cur.execute(
        "SELECT status, count(*) FROM uuid_migration.stages WHERE run_id = %s GROUP BY status",
        (run_id,),
    )
    return {status: count for status, count in cur.fetchall()}


def any_running(cur: Any, run_id: str) -> bool:
    return bool(status_counts(cur, run_id).get(StageStatus.RUNNING))


def closed_longer_than(cur: Any, run_id: str, seconds: float) -> bool:
    """The run's last stage closed more than `seconds` ago."""
    cur.execute(
        "SELECT max(finished_at) < now() - make_interval(secs => %s) "
        "FROM uuid_migration.stages WHERE run_id = %s",
        (seconds, run_id),
    )
    return bool(cur.fetchone()[0])


def table_of(cur: Any, run_id: str, stage_name: str) -> str:
    cur.execute(
        "SELECT table_name FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
        (run_id, stage_name),
    )
    return cur.fetchone()[0]
