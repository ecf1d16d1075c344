"""Foreign keys to migrated tables, from any schema, as the plan's relations: each one
translated, or listed as skipped with the reason.

A single-column foreign key names the parent's key or a unique column of it; a composite
one is translated column by column where a column names a migrated key, directly or through
the table it references. A referencing table that is not migrated itself joins the plan as a
table that only gets translated columns, cut over whatever key it has.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.plan.found import SYSTEM_SCHEMAS, Found, Scope, Where
from uuid_migrate.plan.model import Relation, Skipped, Table

_FOREIGN_KEYS = """
SELECT k.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.num ORDER BY u.ord),
       pn.nspname, pc.relname,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, ord)
             JOIN pg_attribute a ON a.attrelid = pc.oid AND a.attnum = u.num ORDER BY u.ord),
       c.relispartition
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class pc ON pc.oid = k.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE k.contype = 'f' AND k.conparentid = 0
  AND pn.nspname <> ALL(%s) AND pn.nspname NOT LIKE 'pg\\_%%'
  AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY n.nspname, c.relname, k.conname
"""


class _ForeignKey:
    """One row of the catalog's foreign keys, with the names a person reads."""

    def __init__(self, row: tuple) -> None:
        self.name, child_schema, child, columns, parent_schema, parent, parent_columns = row[:7]
        self.child: Where = (child_schema, child)
        self.parent: Where = (parent_schema, parent)
        self.columns: list[str] = list(columns)
        self.parent_columns: list[str] = list(parent_columns)
        self.on_partition = bool(row[7])

    @property
    def single(self) -> bool:
        return len(self.columns) == 1

    def describe(self) -> str:
        child = f"{'.'.join(self.child)}({', '.join(self.columns)})"
        parent = f"{'.'.join(self.parent)}({', '.join(self.parent_columns)})"
        return f"{child} -> {parent} [{self.name}]"


def relations_and_children(
    cur: Any, scope: Scope, found: list[Found], migrated: dict[Where, Table],
    skipped: list[Skipped], partitions: dict[Where, str],
) -> tuple[list[Relation], dict[Where, Table]]:  # fmt: skip
    """Each foreign key to a migrated table, as a relation or as skipped with the reason;
    and the referencing tables that are not migrated themselves."""
    cur.execute(_FOREIGN_KEYS, (list(SYSTEM_SCHEMAS), list(SYSTEM_SCHEMAS)))
    keys = [_ForeignKey(row) for row in cur.fetchall()]
    tables = {t.where: t for t in found}
    through = _single_references(keys, migrated)
    left_alone = {s.name for s in skipped if s.kind == "table"}
    relations: list[Relation] = []
    children: dict[Where, Table] = {}
    for fk in keys:
        targets = [
            (column, target)
            for column, pc in zip(fk.columns, fk.parent_columns, strict=True)
            if (target := _target(fk, pc, migrated, through)) is not None
        ]
        reason = _why_not(fk, targets, scope, tables, migrated, left_alone, partitions)
        if reason:
            skipped.append(Skipped("foreign_key", fk.describe(), reason))
            continue
        if not targets:
            continue  # references a table that is not the migration's, and has no string key
        child = scope.label(fk.child)
        if fk.child not in migrated and fk.child not in children:
            children[fk.child] = _child_table(tables[fk.child], scope)
        for column, target in targets:
            if any(r.table == child and r.column == column for r in relations):
                continue  # also reached through another key (a composite one's column)
            pc = fk.parent_columns[fk.columns.index(column)]
            own = migrated.get(fk.parent) is target
            unique = pc if own and pc != target.key else ""
            relations.append(Relation(child, column, target.name, parent_column=unique))
    return relations, children


def _target(
    fk: _ForeignKey, column: str, migrated: dict[Where, Table],
    through: dict[tuple[Where, str], Table],
) -> Table | None:  # fmt: skip
    """The migrated table a referenced column names: the parent itself (its key, or for a
    single-column key, a unique column), or the table that column references in turn."""
    parent = migrated.get(fk.parent)
    if parent is not None and (fk.single or column == parent.key):
        return parent
    return through.get((fk.parent, column))


def _single_references(
    keys: list[_ForeignKey], migrated: dict[Where, Table]
) -> dict[tuple[Where, str], Table]:
    """(table, column) -> the migrated table whose key that column references: the way a
    composite foreign key's column reaches a migrated key through the table it references."""
    return {
        (fk.child, fk.columns[0]): migrated[fk.parent]
        for fk in keys
        if fk.single and fk.parent in migrated and fk.parent_columns[0] == migrated[fk.parent].key
    }


def _why_not(
    fk: _ForeignKey, targets: list, scope: Scope, tables: dict[Where, Found],
    migrated: dict[Where, Table], left_alone: set[str], partitions: dict[Where, str],
) -> str | None:  # fmt: skip
    """Why the foreign key is not translated; None when it is (or is none of our business:
    it references a table without a string key that the migration does not touch)."""
    if not targets:
        if fk.parent in migrated:
            return "a composite foreign key none of whose columns names a migrated key"
        if not fk.single:
            return None
        if ".".join(fk.parent) in left_alone:
            return f"{'.'.join(fk.parent)} is not migrated"
        if fk.parent in partitions:
            return (
                f"{'.'.join(fk.parent)} is a partition of {partitions[fk.parent]}: references "
                "to one partition are not translated yet"
            )
        return None
    return _why_not_translated(fk, scope, tables)


def _why_not_translated(fk: _ForeignKey, scope: Scope, tables: dict[Where, Found]) -> str | None:
    if fk.child[0] not in scope.schemas:
        return f"from {scope.outside(fk.child[0])}"
    info = tables.get(fk.child)
    if info is None:
        return f"{'.'.join(fk.child)} is not a table: not translated"
    if fk.on_partition or info.partition_of:
        return (
            f"from a partition of {info.partition_of_schema}.{info.partition_of}: references "
            "declared on one partition "
            "are not translated yet"
        )
    if info.kind == "p" and not info.key:
        return (
            f"{info.name} is partitioned and has no primary key: block ranges cannot span its "
            "partitions, so it is not translated yet"
        )
    if info.extension:
        return f"from a table of extension {info.extension}: not the application's"
    return None


def _child_table(info: Found, scope: Scope) -> Table:
    """A table that only references migrated ones: cut over its key, one column or several,
    or over its blocks when it has none."""
    if not info.key:
        return scope.table(info, key="", key_type="", migrate=False)
    if len(info.key) > 1:
        return scope.table(
            info, key="", key_type="", migrate=False, key_columns=info.key,
            partitioned=info.kind == "p", partition_key=info.partition_key,
        )  # fmt: skip
    return scope.table(
        info, key=info.key[0], key_type=info.key_type or "text", migrate=False,
        partitioned=info.kind == "p", partition_key=info.partition_key,
    )  # fmt: skip
