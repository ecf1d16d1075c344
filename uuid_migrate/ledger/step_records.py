"""The record of applied schema steps: what each run added, whether it created it, in order.

Rollback reverses exactly the steps recorded as created, newest first.
"""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json


def record(cur: Any, run_id: str, step: dict[str, Any], created: bool) -> None:
    """One applied step; `position` (the order of application) comes from a sequence."""
    cur.execute(
        "INSERT INTO uuid_migration.ddl_steps (run_id, step, created) VALUES (%s, %s, %s)",
        (run_id, Json(step), created),
    )


def of_runs(cur: Any, run_ids: list[str]) -> list[tuple[dict[str, Any], bool]]:
    """(step, created) of every step of the runs, in the order they were applied."""
    cur.execute(
        "SELECT step, created FROM uuid_migration.ddl_steps WHERE run_id = ANY(%s) "
        "ORDER BY applied_at, position",
        (run_ids,),
    )
    return [(step, bool(created)) for step, created in cur.fetchall()]
