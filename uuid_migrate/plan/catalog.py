"""Plans checked against pg_catalog: a plan file's tables completed and checked, key lookups."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.identifiers import LEDGER_SCHEMA, regclass_text
from uuid_migrate.plan.collations import compare_as_foreign_keys
from uuid_migrate.plan.discovery import schema_exists
from uuid_migrate.plan.found import STRING_TYPES
from uuid_migrate.plan.left_out import left_out
from uuid_migrate.plan.model import Plan, Table, validate

_TYPE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]*(\(\s*\d+(\s*,\s*\d+)?\s*\))?(\[\])?$")

_PRIMARY_KEYS = """
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       bt.typname
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
WHERE k.contype = 'p' AND n.nspname = ANY(%s) AND cardinality(k.conkey) = 1
  AND c.relkind IN ('r', 'p')
ORDER BY n.nspname, c.relname
"""



def primary_key_columns(cur: Any, schema: str, table: str) -> tuple[str, ...]:
    """The table's primary key columns in key order; () without a primary key."""
    cur.execute(
        "SELECT ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord) "
        "JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num ORDER BY u.ord) "
        "FROM pg_constraint k WHERE k.conrelid = to_regclass(%s) AND k.contype = 'p'",
        (regclass_text(schema, table),),
    )
    row = cur.fetchone()
    return tuple(row[0]) if row else ()
_PARTITIONING = """
SELECT c.relkind = 'p', c.relispartition,
       ARRAY(SELECT a.attname FROM pg_partitioned_table pt
             CROSS JOIN LATERAL unnest(pt.partattrs::int2[]) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = u.num
             WHERE pt.partrelid = c.oid ORDER BY u.ord)
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""


def partitioning(cur: Any, schema: str, table: str) -> tuple[bool, bool, tuple[str, ...]]:
    """(partitioned, a partition, partition key columns) of an existing table."""
    cur.execute(_PARTITIONING, (regclass_text(schema, table),))
    partitioned, partition, keys = cur.fetchone()
    return bool(partitioned), bool(partition), tuple(keys)


def primary_keys(cur: Any, plan: Plan) -> dict[str, tuple[str, str, str]]:
    """A table of the plan -> (key column, its declared type, its base type name), for the
    tables that have a single-column key."""
    cur.execute(_PRIMARY_KEYS, (list(plan.schemas()),))
    found = {(s, t): (col, declared, base) for s, t, col, declared, base in cur.fetchall()}
    return {t.name: found[plan.where(t.name)] for t in plan.tables if plan.where(t.name) in found}


def _require_schemas(cur: Any, plan: Plan) -> None:
    for schema in plan.schemas():
        if schema == LEDGER_SCHEMA:
            raise PlanError(f"the ledger schema {LEDGER_SCHEMA} cannot be migrated")
        if not schema_exists(cur, schema):
            raise PlanError(f"schema {schema!r} does not exist")


def resolve(cur: Any, plan: Plan) -> Plan:
    """Complete a plan written by hand from the catalog, or say precisely what does not fit."""
    _require_schemas(cur, plan)
    keys = primary_keys(cur, plan)
    tables = tuple(_resolve_table(cur, plan.where(t.name), t, keys) for t in plan.tables)
    resolved = replace(plan, tables=tables)
    for rel in plan.relations:
        _require_column(cur, plan.where(rel.table), rel.column)
        if rel.parent_column:
            _require_column(cur, plan.where(rel.parent), rel.parent_column)
            _require_unique(cur, plan.where(rel.parent), rel.parent_column)
    resolved, refused = compare_as_foreign_keys(cur, resolved)
    if refused:
        rel, reason = refused[0]
        raise PlanError(f"relation {rel.table}.{rel.column} -> {rel.parent}: {reason}")
    resolved = validate(resolved)
    return replace(resolved, skipped=resolved.skipped + left_out(cur, resolved))


def _resolve_table(cur: Any, where: tuple[str, str], table: Table, keys: dict) -> Table:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass_text(*where),))
    if not cur.fetchone()[0]:
        raise PlanError(f"table {'.'.join(where)} does not exist")
    if table.name not in keys:
        return _composite_table(cur, where, table)
    col, declared, base = keys[table.name]
    if table.key and table.key != col:
        raise PlanError(f"table {table.name!r}: key {table.key!r} is not its primary key ({col!r})")
    if table.migrate and base not in STRING_TYPES:
        raise PlanError(
            f"table {table.name!r}: primary key {col!r} is {declared}, not a string type"
        )
    for extra in table.extra_columns:
        check_type_name(cur, extra.type)
    partitioned, partition, part_key = partitioning(cur, *where)
    if partition:
        raise PlanError(
            f"table {table.name!r} is a partition: name its partitioned table, which is "
            "migrated with all its partitions"
        )
    return replace(table, key=col, key_type=declared, partitioned=partitioned, partition_key=part_key)


def _composite_table(cur: Any, where: tuple[str, str], table: Table) -> Table:
    """A table that is only translated may have a composite primary key, or none: batches are
    cut over it, or over its blocks. A migrated table needs a single string key."""
    columns = primary_key_columns(cur, *where)
    if table.migrate:
        raise PlanError(f"table {table.name!r} has no single-column primary key")
    if table.key_columns and tuple(table.key_columns) != columns:
        raise PlanError(
            f"table {table.name!r}: key_columns {list(table.key_columns)} are not its primary "
            f"key {list(columns)}"
        )
    return replace(table, key="", key_type="", key_columns=columns)


def _require_column(cur: Any, where: tuple[str, str], column: str) -> None:
    cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
        "AND attnum > 0 AND NOT attisdropped",
        (regclass_text(*where), column),
    )
    if cur.fetchone() is None:
        raise PlanError(f"column {'.'.join(where)}.{column} does not exist")


def _require_unique(cur: Any, where: tuple[str, str], column: str) -> None:
    """A reference through a column other than the key needs that column unique, or one
    value could name two parent rows."""
    cur.execute(
        "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
        "AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = %s",
        (regclass_text(*where), column),
    )
    if cur.fetchone() is None:
        table = ".".join(where)
        raise PlanError(
            f"column {table}.{column} is not unique, so a reference to it could name several "
            f"{table} rows: add a unique constraint on it, or reference the primary key"
        )


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
    _require_schemas(cur, plan)
    keys = primary_keys(cur, plan)
    tables = tuple(_completed(cur, plan.where(t.name), t, keys) for t in plan.tables)
    # Compared as they will be compared (a relation refused is still checked, under the
    # parent's collation, rather than not at all).
    return compare_as_foreign_keys(cur, replace(plan, tables=tables))[0]


def _completed(cur: Any, where: tuple[str, str], table: Table, keys: dict) -> Table:
    if table.name in keys:
        return replace(table, key=table.key or keys[table.name][0], key_type=keys[table.name][1])
    columns = primary_key_columns(cur, *where)
    if not table.migrate and not table.key_columns:
        return replace(table, key="", key_type="", key_columns=columns)
    return table
