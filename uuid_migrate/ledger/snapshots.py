"""Stored snapshots of the touched tables, taken before a run's first change."""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json


def store(cur: Any, run_id: str, table: str, definition: dict, checksum: dict) -> None:
    """The table's snapshot for the run, once: an existing one is kept."""
    cur.execute(
        "INSERT INTO uuid_migration.snapshots (run_id, table_name, definition, checksum) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, table, Json(definition), Json(checksum)),
    )


def oldest(cur: Any, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per table, the oldest snapshot among these runs: the state before the first of them."""
    if not run_ids:
        return {}
    cur.execute(
        "SELECT DISTINCT ON (s.table_name) s.table_name, s.definition, s.checksum "
        "FROM uuid_migration.snapshots s JOIN uuid_migration.runs r ON r.run_id = s.run_id "
        "WHERE s.run_id = ANY(%s) ORDER BY s.table_name, r.created_at, s.taken_at",
        (run_ids,),
    )
    return {t: {"definition": d, "checksum": c} for t, d, c in cur.fetchall()}
