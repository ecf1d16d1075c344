"""The transition log: every change of a batch's status, appended with its error and worker.

A trigger on uuid_migration.batches writes it (see `tables`), in the same transaction as the
change, so no code path can move a batch without leaving a line here.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.timestamps import iso


def history(cur: Any, run_id: str, stage: str, batch_no: int) -> list[dict[str, Any]]:
    """A batch's transitions, oldest first."""
    cur.execute(
        "SELECT from_status, to_status, error, attempts, worker, at "
        "FROM uuid_migration.transitions WHERE run_id = %s AND stage = %s AND batch_no = %s "
        "ORDER BY id",
        (run_id, stage, batch_no),
    )
    keys = ("from", "to", "error", "attempts", "worker", "at")
    return [dict(zip(keys, (*row[:-1], iso(row[-1])), strict=True)) for row in cur.fetchall()]


def last_activity(cur: Any, run_id: str) -> Any:
    """When a batch of the run last changed status, or work was last sent (None: never)."""
    cur.execute(
        "SELECT greatest((SELECT max(at) FROM uuid_migration.transitions WHERE run_id = %s), "
        "(SELECT max(greatest(sent_at, started_at)) FROM uuid_migration.stages "
        "WHERE run_id = %s))",
        (run_id, run_id),
    )
    return cur.fetchone()[0]
