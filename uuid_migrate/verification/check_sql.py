"""The SQL shared by validation checks: counting offending rows and naming a few of them.

Every check is set-based: one count over the whole table (or join), and, only when something
is wrong, a second query for the first few offending keys in key order.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan
from uuid_migrate.verification.report import SAMPLE_SIZE

#: Alias of the table a check looks at, in every check's FROM clause.
ROW = sql.Identifier("c")


def table_names(plan: Plan, table: str) -> dict[str, sql.Composable]:
    """Fragments every check of `table` uses: the table, its key (`k`, a single column; `row`,
    a row's id as text, whatever the key), its uuid, id_mappings."""
    return {
        "t": plan.qualified(table),
        "k": sql.Identifier(plan.table(table).key),
        "row": cut_of(plan.table(table)).row_id(ROW),
        "u": sql.Identifier(UUID_COLUMN),
        "m": qualified(plan.schema, MAPPING_TABLE),
        "c": ROW,
    }


def offending(
    cur: Any, source: sql.Composable, key: sql.Composable, params: tuple[Any, ...] = (),
    found: int | None = None,
) -> tuple[int, list[str]]:  # fmt: skip
    """(how many rows `source` yields, the first few of their `key` as text).

    `source` is a FROM clause (tables, joins, WHERE); `key` an expression over it. With
    `found` (counted already, by a table's scan), only the sample is looked for, if any.
    """
    if found is None:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(source), params)
        found = int(cur.fetchone()[0])
    if not found:
        return 0, []
    cur.execute(
        sql.SQL("SELECT {k}::text FROM {src} ORDER BY {k} LIMIT %s").format(k=key, src=source),
        (*params, SAMPLE_SIZE),
    )
    return found, [row[0] for row in cur.fetchall()]


def count_rows(cur: Any, plan: Plan, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(plan.qualified(table)))
    return int(cur.fetchone()[0])


def column_exists(cur: Any, schema: str, table: str, column: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
        "AND attnum > 0 AND NOT attisdropped",
        (regclass_text(schema, table), column),
    )
    return cur.fetchone() is not None
