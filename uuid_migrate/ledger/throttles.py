"""A run's row budget (`--max-rows-per-second`), in the ledger so that every worker of the run,
on every machine, reads the same one, and a resumed run can change it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from uuid_migrate.ledger.tables import table_exists


def set_rate(cur: Any, run_id: str, rows_per_second: int) -> None:
    """The run's budget from now on (0: none)."""
    cur.execute(
        "INSERT INTO uuid_migration.throttles (run_id, max_rows_per_second) VALUES (%s, %s) "
        "ON CONFLICT (run_id) DO UPDATE SET max_rows_per_second = EXCLUDED.max_rows_per_second, "
        "updated_at = now()",
        (run_id, rows_per_second),
    )


def rate_of(cur: Any, run_id: str) -> int:
    """The run's budget in rows per second; 0 when it has none (or the ledger predates it)."""
    if not table_exists(cur, "throttles"):
        return 0
    cur.execute("SELECT max_rows_per_second FROM uuid_migration.throttles WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def batch_span(cur: Any, run_id: str) -> tuple[int, datetime | None, datetime | None]:
    """The rows the run's succeeded batches wrote, the first one's start and the last one's
    end: the rate a budget or a rest is measured by."""
    cur.execute(
        "SELECT coalesce(sum(rows), 0)::bigint, min(started_at), max(finished_at) "
        "FROM uuid_migration.batches WHERE run_id = %s AND status = 'succeeded'",
        (run_id,),
    )
    rows, first, last = cur.fetchone()
    return int(rows), first, last
