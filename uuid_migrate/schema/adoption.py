"""Adopting an application's own `uuid_id`: its values are kept and mapped, so they are
checked first, before any change, for what would make a batch or the unique index fail.

A value shared by two rows, or one that `id_mappings` already gives another row (or this
row another value for), is named with the rows' ids; the run refuses to start.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan

#: Ids named per problem: enough to find them, short enough for one line.
_NAMED = 5


def problems(cur: Any, plan: Plan) -> list[str]:
    """One line per adopted uuid_id whose values cannot be kept as they are."""
    found = []
    for table in plan.migrated():
        if UUID_COLUMN in table.adopt and _column_exists(cur, plan, table.name):
            found += _duplicates(cur, plan, table.name) + _mapping_conflicts(cur, plan, table.name)
    return found


def _column_exists(cur: Any, plan: Plan, name: str) -> bool:
    cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
        "AND NOT attisdropped",
        (regclass_text(*plan.where(name)), UUID_COLUMN),
    )
    return cur.fetchone() is not None


def _names(plan: Plan, name: str) -> dict[str, sql.Composable]:
    return {
        "t": plan.qualified(name),
        "k": sql.Identifier(plan.table(name).key),
        "u": sql.Identifier(UUID_COLUMN),
        "m": qualified(plan.schema, MAPPING_TABLE),
    }


def _duplicates(cur: Any, plan: Plan, name: str) -> list[str]:
    cur.execute(
        sql.SQL(
            "SELECT {u}::text, array_agg({k}::text ORDER BY {k}) FROM {t} WHERE {u} IS NOT NULL "
            "GROUP BY {u} HAVING count(*) > 1 ORDER BY 1 LIMIT %s"
        ).format(**_names(plan, name)),
        (_NAMED,),
    )
    rows = cur.fetchall()
    if not rows:
        return []
    shown = "; ".join(f"{value} on ids {', '.join(ids[:_NAMED])}" for value, ids in rows)
    return [f"cannot adopt {name}.{UUID_COLUMN}: values are shared by several rows ({shown})"]


def _mapping_conflicts(cur: Any, plan: Plan, name: str) -> list[str]:
    """Mappings the batches would contradict: this row mapped to another UUID, or this UUID
    mapped to another row."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass_text(plan.schema, MAPPING_TABLE),))
    if not cur.fetchone()[0]:
        return []
    cur.execute(
        sql.SQL(
            "SELECT x.{k}::text FROM {t} x JOIN {m} m ON (m.table_name = %(name)s "
            "AND m.old_id = x.{k}::text AND m.new_id <> x.{u}) OR (m.new_id = x.{u} "
            "AND (m.table_name <> %(name)s OR m.old_id <> x.{k}::text)) "
            "WHERE x.{u} IS NOT NULL ORDER BY 1 LIMIT %(n)s"
        ).format(**_names(plan, name)),
        {"name": name, "n": _NAMED},
    )
    ids = [row[0] for row in cur.fetchall()]
    if not ids:
        return []
    return [
        f"cannot adopt {name}.{UUID_COLUMN}: {MAPPING_TABLE} already maps these rows, or their "
        f"uuid_id, otherwise (ids {', '.join(ids)})"
    ]
