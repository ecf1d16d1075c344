"""The UUIDs the migration wrote into an adopted `uuid_id` (a column the application had):
recorded by the batch that wrote them, so a rollback clears exactly those and keeps the
application's own values.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import LEDGER_SCHEMA, qualified
from uuid_migrate.ledger.tables import table_exists

GENERATED_TABLE = qualified(LEDGER_SCHEMA, "generated_values")

def generated_insert(run_id: str, table: str) -> sql.Composed:
    """`INSERT ... RETURNING 1` for a CTE of the batch statement: the rows of `upd` whose
    UUID the statement drew (`generated`), as (old_id, new_id)."""
    return sql.SQL(
        "INSERT INTO {g} (run_id, table_name, old_id, new_id) SELECT {run}, {table}, old_id, "
        "new_id FROM upd WHERE generated ON CONFLICT DO NOTHING RETURNING 1"
    ).format(g=GENERATED_TABLE, run=sql.Literal(run_id), table=sql.Literal(table))


def tables_of(cur: Any, run_ids: list[str]) -> list[tuple[str, str]]:
    """(run, table) pairs with generated values recorded."""
    if not table_exists(cur, "generated_values"):
        return []
    cur.execute(
        "SELECT DISTINCT run_id, table_name FROM uuid_migration.generated_values "
        "WHERE run_id = ANY(%s) ORDER BY 1, 2",
        (run_ids,),
    )
    return [(r, t) for r, t in cur.fetchall()]


def clear_chunk(
    cur: Any, run_id: str, table: str, target: sql.Composable, key: sql.Composable, size: int
) -> int:
    """Forget up to `size` records and clear the values they name in `target`, where the
    row still holds that value (one the application replaced is its own now)."""
    cur.execute(
        sql.SQL(
            "WITH g AS (DELETE FROM {g} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {g} "
            "WHERE run_id = %s AND table_name = %s LIMIT %s)) RETURNING old_id, new_id), "
            "cleared AS (UPDATE {t} AS t SET uuid_id = NULL FROM g "
            "WHERE t.{k}::text = g.old_id AND t.uuid_id = g.new_id RETURNING 1) "
            "SELECT count(*) FROM g"
        ).format(g=GENERATED_TABLE, t=target, k=key),
        (run_id, table, size),
    )
    return int(cur.fetchone()[0])

