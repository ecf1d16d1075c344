"""Discovery from pg_catalog: the string-keyed tables of a schema, every foreign key to them,
and, for each one the migration leaves alone, the reason.

Nothing is skipped silently: a table with a string primary key that is not migrated, or a
foreign key to a migrated table that is not translated, is listed in the plan's `skipped`
with why, so `plan`, `validate` and `run` can say so before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.identifiers import LEDGER_SCHEMA
from uuid_migrate.plan.model import MAPPING_TABLE, Plan, Relation, Skipped, Table, validate
from uuid_migrate.plan.naming import distinct_reference_columns

#: Key types we migrate: text, varchar and char (and domains over them).
STRING_TYPES = ("text", "varchar", "bpchar")
#: Schemas that are never the application's.
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", LEDGER_SCHEMA)

_TABLES = """
SELECT n.nspname, c.relname, c.relkind, c.relispartition,
       (SELECT pc.relname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
        WHERE i.inhrelid = c.oid LIMIT 1),
       (SELECT pn.nspname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
        JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid LIMIT 1),
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.num ORDER BY u.ord),
       (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum = k.conkey[1]),
       (SELECT bt.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        WHERE a.attrelid = c.oid AND a.attnum = k.conkey[1]),
       ARRAY(SELECT a.attname FROM pg_partitioned_table pt
             CROSS JOIN LATERAL unnest(pt.partattrs::int2[]) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = u.num
             WHERE pt.partrelid = c.oid ORDER BY u.ord)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY n.nspname, c.relname
"""

_FOREIGN_KEYS = """
SELECT k.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.num ORDER BY u.ord),
       pc.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = pc.oid AND a.attnum = u.num ORDER BY u.ord),
       c.relispartition
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND pn.nspname = %s AND n.nspname NOT LIKE 'pg\\_%%'
  AND k.conparentid = 0
ORDER BY n.nspname, c.relname, k.conname
"""


@dataclass(frozen=True)
class _Found:
    """A table as the catalog shows it."""

    schema: str
    name: str
    kind: str
    is_partition: bool
    partition_of: str | None
    partition_of_schema: str | None
    key: tuple[str, ...]
    key_type: str | None
    key_base: str | None
    partition_key: tuple[str, ...] = ()

    @property
    def string_key(self) -> bool:
        return len(self.key) == 1 and self.key_base in STRING_TYPES


def schema_exists(cur: Any, schema: str) -> bool:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def discover(cur: Any, schema: str = "public") -> Plan:
    """The plan for every string-keyed table of `schema` and every foreign key to one of them,
    with what is left alone and why."""
    if schema == LEDGER_SCHEMA:
        raise PlanError("the ledger schema cannot be migrated")
    if not schema_exists(cur, schema):
        raise PlanError(f"schema {schema!r} does not exist")
    cur.execute(_TABLES, (list(_SYSTEM_SCHEMAS),))
    found = [_Found(*row[:6], tuple(row[6]), row[7], row[8], tuple(row[9])) for row in cur.fetchall()]
    here = {t.name: t for t in found if t.schema == schema}
    partitions = _partitions_of_string_keyed(found)
    migrated: dict[str, Table] = {}
    skipped: list[Skipped] = []
    for t in found:
        if t.string_key and t.name != MAPPING_TABLE and (t.schema, t.name) not in partitions:
            reason = _why_not_migrated(t, schema)
            if reason is None:
                migrated[t.name] = _table(t)
            else:
                skipped.append(Skipped("table", f"{t.schema}.{t.name}", reason))
    if not migrated:
        raise PlanError(_nothing_found(schema, found))
    part_of = {name: parent for (s, name), parent in partitions.items() if s == schema}
    relations, children = _relations(cur, schema, here, migrated, skipped, part_of)
    plan = Plan(
        schema,
        tuple(migrated.values()) + tuple(children.values()),
        tuple(distinct_reference_columns(relations)),
        skipped=tuple(skipped),
    )
    return validate(plan)


def _table(t: _Found, migrate: bool = True) -> Table:
    return Table(
        t.name, t.key[0], t.key_type or "text", migrate=migrate, partitioned=t.kind == "p",
        partition_key=t.partition_key,
    )  # fmt: skip


def _partitions_of_string_keyed(found: list[_Found]) -> dict[tuple[str, str], str]:
    """(schema, name) -> parent of every partition whose parent has a string key: migrated
    (or left alone, and said so) through that parent, so never an entry of its own."""
    keyed = {(t.schema, t.name) for t in found if t.string_key}
    return {
        (t.schema, t.name): t.partition_of
        for t in found
        if t.partition_of and (t.partition_of_schema, t.partition_of) in keyed
    }


def _why_not_migrated(t: _Found, schema: str) -> str | None:
    if t.schema != schema:
        return f"in schema {t.schema}: only schema {schema!r} is discovered (--schema {t.schema})"
    if t.partition_of:
        return f"a partition of {t.partition_of}, which has no single string primary key: not migrated"
    return None


def _relations(
    cur: Any, schema: str, here: dict[str, _Found], migrated: dict[str, Table],
    skipped: list[Skipped], part_of: dict[str, str],
) -> tuple[list[Relation], dict[str, Table]]:  # fmt: skip
    """Each foreign key to a migrated table, as a relation or as skipped with the reason."""
    relations: list[Relation] = []
    children: dict[str, Table] = {}
    cur.execute(_FOREIGN_KEYS, (schema,))
    rows = cur.fetchall()
    through = _single_references(rows, schema, migrated)
    left_alone = {s.name for s in skipped if s.kind == "table"}
    for name, child_schema, child, columns, parent, parent_columns, is_part in rows:
        label = f"{child_schema}.{child}({', '.join(columns)}) -> {parent}({', '.join(parent_columns)})"
        single = len(columns) == 1
        found = [
            (c, target)
            for c, pc in zip(columns, parent_columns, strict=True)
            if (target := _target(parent, pc, single, migrated, through)) is not None
        ]
        if len(columns) > 1 and not found:
            if parent in migrated:
                reason = "a composite foreign key none of whose columns names a migrated key"
                skipped.append(Skipped("foreign_key", f"{label} [{name}]", reason))
            continue
        if parent not in migrated and len(columns) == 1:
            _note_unmigrated_parent(skipped, left_alone, part_of, schema, parent, f"{label} [{name}]")
            continue
        reason = _why_not_translated(child_schema, child, is_part, schema, here)
        if reason:
            skipped.append(Skipped("foreign_key", f"{label} [{name}]", reason))
            continue
        if child not in migrated and child not in children:
            children[child] = _child_table(here[child])
        for column, target in found:
            if any(r.table == child and r.column == column for r in relations):
                continue  # also reached through another key (a composite one's column)
            pc = parent_columns[columns.index(column)]
            unique = pc if parent == target.name and pc != target.key else ""
            relations.append(Relation(child, column, target.name, parent_column=unique))
    return relations, children


def _target(
    parent: str, column: str, single: bool, migrated: dict[str, Table],
    through: dict[tuple[str, str], Table],
) -> Table | None:  # fmt: skip
    """The migrated table a referenced column names: the parent itself (its key, or for a
    single-column key, a unique column), or the table that column references in turn."""
    if parent in migrated and (single or column == migrated[parent].key):
        return migrated[parent]
    return through.get((parent, column))


def _single_references(
    rows: list[tuple], schema: str, migrated: dict[str, Table]
) -> dict[tuple[str, str], Table]:
    """(table, column) -> the migrated table whose key that column references: the way a
    composite foreign key's column reaches a migrated key through the table it references."""
    return {
        (child, columns[0]): migrated[parent]
        for _, child_schema, child, columns, parent, parent_columns, _ in rows
        if child_schema == schema and len(columns) == 1 and parent in migrated
        and parent_columns[0] == migrated[parent].key
    }


def _note_unmigrated_parent(
    skipped: list[Skipped], left_alone: set[str], part_of: dict[str, str], schema: str,
    parent: str, label: str,
) -> None:  # fmt: skip
    """A foreign key to a table that is not migrated: said only when that table has a string
    key (and so is itself listed as left alone, or is a partition)."""
    if f"{schema}.{parent}" in left_alone:
        skipped.append(Skipped("foreign_key", label, f"{parent} is not migrated"))
    elif parent in part_of:
        reason = (
            f"{parent} is a partition of {part_of[parent]}: references to one partition are "
            "not translated yet"
        )
        skipped.append(Skipped("foreign_key", label, reason))


def _why_not_translated(
    child_schema: str, child: str, is_partition: bool, schema: str, here: dict[str, _Found]
) -> str | None:
    if child_schema != schema:
        return f"from schema {child_schema}: references from other schemas are not translated yet"
    info = here.get(child)
    if info is None:
        return f"{child} is not a table: not translated"
    if is_partition or info.partition_of:
        return (
            f"from a partition of {info.partition_of}: references declared on one partition "
            "are not translated yet"
        )
    if info.kind == "p" and not info.key:
        return (
            f"{child} is partitioned and has no primary key: block ranges cannot span its "
            "partitions, so it is not translated yet"
        )
    return None


def _child_table(info: _Found) -> Table:
    """A table that only references migrated ones: cut over its key, one column or several,
    or over its blocks when it has none."""
    if not info.key:
        return Table(info.name, "", "", migrate=False)
    if len(info.key) > 1:
        return Table(
            info.name, "", "", migrate=False, key_columns=info.key,
            partitioned=info.kind == "p", partition_key=info.partition_key,
        )  # fmt: skip
    return _table(info, migrate=False)


def _nothing_found(schema: str, found: list[_Found]) -> str:
    elsewhere = sorted({t.schema for t in found if t.string_key and t.schema != schema})
    message = f"schema {schema!r} has no table with a single text/varchar/char primary key"
    if elsewhere:
        message += f"; schemas with such tables: {', '.join(elsewhere)} (use --schema)"
    return message
