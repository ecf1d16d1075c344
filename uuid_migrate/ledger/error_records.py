"""Error records: one row per orphaned reference or failed batch, with its context.

Shown as `{table, id, error, timestamp, ...context}` (docs/formats.md, "error record").
The batch statement inserts orphans itself, inside its own transaction, through
`orphan_insert`, so a batch's data and its error records commit together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger.tables import LEDGER_SCHEMA
from uuid_migrate.timestamps import iso

#: The table, for the batch statement and the checks that look records up.
ERRORS_TABLE = qualified(LEDGER_SCHEMA, "errors")


def record(
    cur: Any, run_id: str, table: str, row_id: str | None, error: str, context: dict[str, Any]
) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.errors (run_id, table_name, row_id, error, context) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, table, row_id, error, Json(context)),
    )


def orphan_insert(selects: sql.Composable) -> sql.Composed:
    """`INSERT ... <selects> ... RETURNING 1` for a CTE; each select yields (run_id,
    table_name, row_id, column_name, error, context)."""
    return sql.SQL(
        "INSERT INTO {errors} (run_id, table_name, row_id, column_name, error, context) "
        "{selects} ON CONFLICT DO NOTHING RETURNING 1"
    ).format(errors=ERRORS_TABLE, selects=selects)


def recorded_for(row_id: sql.Composable) -> sql.Composed:
    """`EXISTS` a record for the row whose id (as text) is `row_id`, of table %s, column %s
    (two parameters)."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM {errors} AS e WHERE e.table_name = %s "
        "AND e.row_id = {row_id} AND e.column_name = %s)"
    ).format(errors=ERRORS_TABLE, row_id=row_id)


def table_failures(cur: Any, run_id: str) -> list[str]:
    """The run's errors that belong to a whole table (no row): a unique index that could
    not be built. Oldest first."""
    cur.execute(
        "SELECT error FROM uuid_migration.errors WHERE run_id = %s AND row_id IS NULL "
        "ORDER BY id",
        (run_id,),
    )
    return [row[0] for row in cur.fetchall()]


def count_of_table(cur: Any, table: str) -> int:
    """How many errors the table has recorded (an index-only count)."""
    cur.execute("SELECT count(*) FROM uuid_migration.errors WHERE table_name = %s", (table,))
    return int(cur.fetchone()[0])


def of_table(
    cur: Any, table: str, limit: int, total: int | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """The count of recorded errors for a table and the first few, as error records."""
    total = count_of_table(cur, table) if total is None else total
    if not total:
        return 0, []
    cur.execute(
        "SELECT table_name, row_id, error, created_at, context FROM uuid_migration.errors "
        "WHERE table_name = %s ORDER BY id LIMIT %s",
        (table, limit),
    )
    return total, [_record_dict(*row) for row in cur.fetchall()]


def count(cur: Any) -> int:
    cur.execute("SELECT count(*) FROM uuid_migration.errors")
    return int(cur.fetchone()[0])


def _record_dict(table: str, row_id: str | None, error: str, at: datetime, ctx: Any) -> dict:
    out = {"table": table, "id": row_id, "error": error, "timestamp": iso(at)}
    out.update({k: v for k, v in (ctx or {}).items() if k not in out})
    return out
