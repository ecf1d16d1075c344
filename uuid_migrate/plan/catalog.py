"""Discovery from pg_catalog: which tables have string keys and which columns reference them."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.identifiers import LEDGER_SCHEMA, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE, Plan, Relation, Table, validate

#: Key types we migrate: text, varchar and char (and domains over them).
STRING_TYPES = ("text", "varchar", "bpchar")
_TYPE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\(\s*\d+(\s*,\s*\d+)?\s*\))?(\[\])?$")

_PRIMARY_KEYS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       bt.typname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE k.contype = 'p' AND n.nspname = %s AND cardinality(k.conkey) = 1
  AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""

_FOREIGN_KEYS = """
SELECT c.relname, a.attname, pc.relname, pa.attname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid
JOIN pg_namespace pn ON pn.oid = pc.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
JOIN pg_attribute pa ON pa.attrelid = pc.oid AND pa.attnum = k.confkey[1]
WHERE k.contype = 'f' AND n.nspname = %s AND pn.nspname = %s AND cardinality(k.conkey) = 1
ORDER BY c.relname, a.attname
"""


def schema_exists(cur: Any, schema: str) -> bool:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def primary_keys(cur: Any, schema: str) -> dict[str, tuple[str, str, str]]:
    """table -> (key column, its declared type, its base type name) for single-column keys."""
    cur.execute(_PRIMARY_KEYS, (schema,))
    return {table: (col, declared, base) for table, col, declared, base in cur.fetchall()}


def discover(cur: Any, schema: str = "public") -> Plan:
    """The plan for every string-keyed table of `schema` and every foreign key to one of them."""
    if not schema_exists(cur, schema):
        raise PlanError(f"schema {schema!r} does not exist")
    keys = primary_keys(cur, schema)
    migrated = {
        name: Table(name, col, declared)
        for name, (col, declared, base) in keys.items()
        if base in STRING_TYPES and name != MAPPING_TABLE
    }
    if schema == LEDGER_SCHEMA:
        raise PlanError("the ledger schema cannot be migrated")
    relations, extra_tables = [], {}
    cur.execute(_FOREIGN_KEYS, (schema, schema))
    for child, column, parent, parent_col in cur.fetchall():
        if parent not in migrated or migrated[parent].key != parent_col:
            continue
        if child not in migrated and child not in extra_tables:
            if child not in keys:
                continue  # no single-column key to cut ranges on; see plan docs
            col, declared, _ = keys[child]
            extra_tables[child] = Table(child, col, declared, migrate=False)
        relations.append(Relation(child, column, parent))
    if not migrated:
        raise PlanError(
            f"schema {schema!r} has no table with a single text/varchar/char primary key"
        )
    tables = tuple(migrated.values()) + tuple(extra_tables.values())
    return validate(Plan(schema, tables, tuple(relations)))


def resolve(cur: Any, plan: Plan) -> Plan:
    """Complete a plan written by hand from the catalog, or say precisely what does not fit."""
    if not schema_exists(cur, plan.schema):
        raise PlanError(f"schema {plan.schema!r} does not exist")
    keys = primary_keys(cur, plan.schema)
    tables = tuple(_resolve_table(cur, plan.schema, t, keys) for t in plan.tables)
    resolved = replace(plan, tables=tables)
    for rel in plan.relations:
        _require_column(cur, plan.schema, rel.table, rel.column)
    return validate(resolved)


def _resolve_table(cur: Any, schema: str, table: Table, keys: dict) -> Table:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass_text(schema, table.name),))
    if not cur.fetchone()[0]:
        raise PlanError(f"table {schema}.{table.name} does not exist")
    if table.name not in keys:
        raise PlanError(f"table {table.name!r} has no single-column primary key")
    col, declared, base = keys[table.name]
    if table.key and table.key != col:
        raise PlanError(f"table {table.name!r}: key {table.key!r} is not its primary key ({col!r})")
    if table.migrate and base not in STRING_TYPES:
        raise PlanError(
            f"table {table.name!r}: primary key {col!r} is {declared}, not a string type"
        )
    for extra in table.extra_columns:
        check_type_name(cur, extra.type)
    return replace(table, key=col, key_type=declared)


def _require_column(cur: Any, schema: str, table: str, column: str) -> None:
    cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
        "AND attnum > 0 AND NOT attisdropped",
        (regclass_text(schema, table), column),
    )
    if cur.fetchone() is None:
        raise PlanError(f"column {table}.{column} does not exist")


def check_type_name(cur: Any, type_name: str) -> None:
    """Extra column types go into DDL as text, so only plain, existing type names pass."""
    if not _TYPE_PATTERN.match(type_name):
        raise PlanError(f"column type {type_name!r} is not a plain type name")
    base = type_name.split("(")[0].replace("[]", "").strip()
    cur.execute("SELECT to_regtype(%s) IS NOT NULL", (base,))
    if not cur.fetchone()[0]:
        raise PlanError(f"column type {type_name!r} does not exist")


def complete(cur: Any, plan: Plan) -> Plan:
    """A plan file's tables with keys filled in from the catalog where they exist, unchecked.

    For `validate`, which reports a missing table or key as a failed check instead of refusing.
    """
    if not schema_exists(cur, plan.schema):
        raise PlanError(f"schema {plan.schema!r} does not exist")
    keys = primary_keys(cur, plan.schema)
    tables = tuple(
        replace(t, key=t.key or keys[t.name][0], key_type=keys[t.name][1]) if t.name in keys else t
        for t in plan.tables
    )
    return replace(plan, tables=tables)
