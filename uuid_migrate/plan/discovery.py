"""Discovery from pg_catalog: the string-keyed tables of every user schema (or of the schemas
named), every foreign key to them from any schema, and, for each one the migration leaves
alone, the reason.

Nothing is skipped silently: a table with a string primary key that is not migrated, or a
foreign key to a migrated table that is not translated, is listed in the plan's `skipped`
with why, so `plan`, `validate` and `run` can say so before anything changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.identifiers import LEDGER_SCHEMA
from uuid_migrate.plan.collations import compare_as_foreign_keys
from uuid_migrate.plan.found import SYSTEM_SCHEMAS, Found, Scope, Where
from uuid_migrate.plan.model import MAPPING_TABLE, Plan, Relation, Skipped, Table, validate
from uuid_migrate.plan.naming import distinct_reference_columns
from uuid_migrate.plan.references import relations_and_children

#: The schema a plan's `id_mappings` goes to when it has tables to migrate and none is named.
DEFAULT_SCHEMA = "public"

_USER_SCHEMAS = """
SELECT nspname, has_schema_privilege(oid, 'USAGE') FROM pg_namespace
WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg\\_%%' ORDER BY nspname
"""

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
             WHERE pt.partrelid = c.oid ORDER BY u.ord),
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
          AND d.refclassid = 'pg_extension'::regclass LIMIT 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'p'
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY n.nspname, c.relname
"""

def schema_exists(cur: Any, schema: str) -> bool:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def discover(
    cur: Any, schemas: Sequence[str] | str | None = None, home: str | None = None
) -> Plan:
    """The plan for every string-keyed table of the schemas (every user schema when none are
    named) and every foreign key to one of them, with what is left alone and why.

    `home` pins the plan's own schema: the one of the runs not rolled back, whose
    `id_mappings` and table names a new run must share."""
    found = _found_tables(cur)
    searched = _schemas_to_search(cur, schemas)
    partitions = _partitions_of_string_keyed(found)
    candidates = [t for t in found if t.string_key and t.where not in partitions]
    scope = _scope(searched, schemas is not None, candidates, home)
    migrated: dict[Where, Table] = {}
    skipped: list[Skipped] = []
    for t in sorted(candidates, key=lambda t: (t.schema != scope.home, t.schema, t.name)):
        reason = _why_not_migrated(t, scope)
        if reason is None:
            migrated[t.where] = scope.table(t, key=t.key[0], **_key_fields(t))
        else:
            skipped.append(Skipped("table", f"{t.schema}.{t.name}", reason))
    if not migrated:
        raise PlanError(_nothing_found(searched, found))
    relations, children = relations_and_children(cur, scope, found, migrated, skipped, partitions)
    plan = Plan(
        scope.home,
        tuple(migrated.values()) + tuple(children.values()),
        tuple(distinct_reference_columns(relations)),
        skipped=tuple(skipped),
    )
    return validate(_without(*compare_as_foreign_keys(cur, plan)))


def _without(plan: Plan, refused: list[tuple[Relation, str]]) -> Plan:
    """The plan less the references that cannot be compared as their foreign keys compare,
    listed as skipped with the reason, and less the tables they leave with nothing to do."""
    if not refused:
        return plan
    gone = {(rel.table, rel.column) for rel, _ in refused}
    relations = tuple(r for r in plan.relations if (r.table, r.column) not in gone)
    busy = {r.table for r in relations}
    skipped = tuple(
        Skipped("foreign_key", f"{_column(plan, rel.table, rel.column)} -> "
                f"{_column(plan, rel.parent, plan.parent_column(rel))}", reason)
        for rel, reason in refused
    )  # fmt: skip
    return replace(
        plan,
        tables=tuple(t for t in plan.tables if t.migrate or t.name in busy),
        relations=relations,
        skipped=plan.skipped + skipped,
    )


def _column(plan: Plan, table: str, column: str) -> str:
    return f"{'.'.join(plan.where(table))}({column})"


def _found_tables(cur: Any) -> list[Found]:
    cur.execute(_TABLES, (list(SYSTEM_SCHEMAS),))
    return [
        Found(*row[:6], tuple(row[6]), row[7], row[8], tuple(row[9]), row[10])
        for row in cur.fetchall()
    ]


def _schemas_to_search(cur: Any, schemas: Sequence[str] | str | None) -> tuple[str, ...]:
    cur.execute(_USER_SCHEMAS, (list(SYSTEM_SCHEMAS),))
    usable = {name: allowed for name, allowed in cur.fetchall()}
    if schemas is None:  # those this role may not use are said, not searched
        return tuple(name for name, allowed in usable.items() if allowed)
    named = tuple(s.strip() for s in ([schemas] if isinstance(schemas, str) else schemas))
    for schema in named:
        if schema == LEDGER_SCHEMA:
            raise PlanError("the ledger schema cannot be migrated")
        if not schema_exists(cur, schema):
            raise PlanError(f"schema {schema!r} does not exist")
        if not usable.get(schema, True):
            raise PlanError(f"this role may not use schema {schema!r} (it lacks USAGE on it)")
    return tuple(dict.fromkeys(named))


def _scope(
    searched: tuple[str, ...], named: bool, candidates: list[Found], home: str | None
) -> Scope:
    """The plan's own schema: the pinned one, else the first one named, else `public` when it
    has a table to migrate, else the first schema that has one."""
    if home is not None:
        if named and searched[0] != home:
            raise PlanError(
                f"the runs not rolled back keep id_mappings in schema {home!r}: name it first "
                f"(--schema {','.join((home, *[s for s in searched if s != home]))}), or roll "
                "them back first"
            )
        return Scope(searched, home, named)
    if named:
        return Scope(searched, searched[0], True)
    with_tables = [s for s in searched if any(t.schema == s and _own(t) for t in candidates)]
    home = DEFAULT_SCHEMA if DEFAULT_SCHEMA in with_tables else (with_tables or [DEFAULT_SCHEMA])[0]
    return Scope(searched, home, False)


def _own(t: Found) -> bool:
    return t.extension is None and not t.partition_of


def _key_fields(t: Found) -> dict[str, Any]:
    return {
        "key_type": t.key_type or "text",
        "partitioned": t.kind == "p",
        "partition_key": t.partition_key,
    }


def _partitions_of_string_keyed(found: list[Found]) -> dict[Where, str]:
    """(schema, name) -> parent of every partition whose parent has a string key: migrated
    (or left alone, and said so) through that parent, so never an entry of its own."""
    keyed = {t.where for t in found if t.string_key}
    return {
        t.where: t.partition_of
        for t in found
        if t.partition_of and (t.partition_of_schema, t.partition_of) in keyed
    }


def _why_not_migrated(t: Found, scope: Scope) -> str | None:
    if t.extension:
        return f"belongs to extension {t.extension}, not to the application: not migrated"
    if t.schema not in scope.schemas:
        return scope.outside(t.schema)
    if t.schema == scope.home and t.name == MAPPING_TABLE:
        return f"{MAPPING_TABLE} is the name of the table the migration keeps its mappings in"
    if t.partition_of:
        return (
            f"a partition of {t.partition_of_schema}.{t.partition_of}, which has no single "
            "string primary key: not migrated"
        )
    return None


def _nothing_found(searched: tuple[str, ...], found: list[Found]) -> str:
    message = (
        "no table with a single text/varchar/char primary key to migrate in schema"
        f"{'s' if len(searched) != 1 else ''} {', '.join(searched) or '(none)'}"
    )
    elsewhere = sorted({t.schema for t in found if t.string_key and t.schema not in searched})
    if elsewhere:
        message += f"; schemas with such tables: {', '.join(elsewhere)} (use --schema)"
    return message
