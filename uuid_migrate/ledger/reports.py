"""Stored validation reports: one row per report, by run and phase."""

from __future__ import annotations

from typing import Any

from psycopg2.extras import Json


def store(cur: Any, run_id: str | None, phase: str, report: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.reports (run_id, kind, report) VALUES (%s, %s, %s)",
        (run_id, phase, Json(report)),
    )


def latest(cur: Any, run_id: str, phase: str | None = None) -> dict[str, Any] | None:
    """The run's newest report of that phase, or of any phase."""
    cur.execute(
        "SELECT report FROM uuid_migration.reports WHERE run_id = %s "
        "AND (%s::text IS NULL OR kind = %s) ORDER BY id DESC LIMIT 1",
        (run_id, phase, phase),
    )
    row = cur.fetchone()
    return row[0] if row else None
