"""A plan as plain data: the TOML file format and the ledger's copy, read back into a Plan."""

from __future__ import annotations

from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.model import ExtraColumn, Plan, Relation, Skipped, Table, make_table

#: The version of this format the ledger's copy carries; its absence means an older version
#: wrote it, when every table was in the plan's schema (a dot in a name was the name's).
PLAN_FORMAT = 2


def to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: the TOML file format and what the ledger stores."""
    out: dict[str, Any] = {"plan_format": PLAN_FORMAT, "schema": plan.schema}
    if plan.batch_size:
        out["batch_size"] = plan.batch_size
    if plan.allow_user_triggers:
        out["allow_user_triggers"] = True
    out["tables"] = [_table_dict(t, plan.schema) for t in plan.tables]
    out["relations"] = [_relation_dict(r) for r in plan.relations]
    if plan.skipped:
        out["skipped"] = [{"kind": s.kind, "name": s.name, "reason": s.reason} for s in plan.skipped]
    return out


def _table_dict(table: Table, home: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": table.name}
    if table.schema or "." in table.name:  # a dot in a name of the plan's own schema is its own
        out["schema"] = table.schema or home
    out.update(key=table.key, key_type=table.key_type)
    if not table.migrate:
        out["migrate"] = False
    if table.batch_size:
        out["batch_size"] = table.batch_size
    if table.extra_columns:
        out["extra_columns"] = [{"name": c.name, "type": c.type} for c in table.extra_columns]
    if table.key_columns:
        out["key_columns"] = list(table.key_columns)
    if table.adopt:
        out["adopt"] = list(table.adopt)
    out["cut"] = cut_of(table).describe()  # for the reader; derived again when read
    if table.partitioned:
        out["partitioned"] = True
        out["partition_key"] = list(table.partition_key)
    return out


def _relation_dict(rel: Relation) -> dict[str, Any]:
    out: dict[str, Any] = {"table": rel.table, "column": rel.column, "parent": rel.parent}
    out["uuid_column"] = rel.uuid_column
    if rel.parent_column:
        out["parent_column"] = rel.parent_column
    if not rel.declared:
        out["declared"] = False
    if rel.collation:
        out["collation"] = rel.collation
    return out


def from_dict(data: dict[str, Any], stored: bool = False) -> Plan:
    """Build a plan from plain data: a parsed TOML file, or (`stored`) the ledger's copy,
    which an older version wrote with every table in the plan's schema."""
    try:
        home = str(data.get("schema", "public"))
        one_schema = stored and "plan_format" not in data
        tables = tuple(_table_from(t, home, one_schema) for t in data.get("tables", []))
        names = _names_of(tables, home)
        relations = tuple(_relation_from(r, names) for r in data.get("relations", []))
        size = data.get("batch_size")
        batch_size = int(size) if size is not None else None
        skipped = tuple(
            Skipped(str(s.get("kind", "table")), str(s["name"]), str(s.get("reason", "")))
            for s in data.get("skipped", [])
        )
        allow = bool(data.get("allow_user_triggers", False))
        return Plan(home, tables, relations, batch_size, skipped, allow_user_triggers=allow)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"plan is malformed: {exc}") from None


def _where_from(data: dict[str, Any], home: str, one_schema: bool) -> tuple[str, str]:
    """A plan file's table entry as (schema, table): `schema` given (a table of another
    schema is then named `schema.table`), or `name` as `schema.table` (the plan's own schema
    tried first, as it may hold a dot), or a bare name in the plan's own schema."""
    name = str(data["name"])
    if "schema" in data:
        schema = str(data["schema"])
        return schema, name if schema == home else name.removeprefix(f"{schema}.")
    if one_schema or "." not in name:
        return home, name
    if name.startswith(f"{home}."):
        return home, name.removeprefix(f"{home}.")
    schema, _, relation = name.partition(".")
    return schema, relation


def _names_of(tables: tuple[Table, ...], home: str) -> dict[str, str]:
    """Each way a plan file may name a table in its relations -> the plan's name for it."""
    names = {f"{t.schema or home}.{t.relation}": t.name for t in tables}
    names.update({t.name: t.name for t in tables})
    return names


def _table_from(data: dict[str, Any], home: str, one_schema: bool) -> Table:
    extras = tuple(
        ExtraColumn(str(c["name"]), str(c.get("type", "uuid")))
        for c in data.get("extra_columns", [])
    )
    size = data.get("batch_size")
    return make_table(
        *_where_from(data, home, one_schema),
        home,
        key=str(data.get("key", "")),
        key_type=str(data.get("key_type", "")),
        migrate=bool(data.get("migrate", True)),
        batch_size=int(size) if size is not None else None,
        extra_columns=extras,
        key_columns=tuple(str(c) for c in data.get("key_columns", [])),
        adopt=tuple(str(c) for c in data.get("adopt", [])),
        partitioned=bool(data.get("partitioned", False)),
        partition_key=tuple(str(c) for c in data.get("partition_key", [])),
    )


def _relation_from(data: dict[str, Any], names: dict[str, str]) -> Relation:
    table, parent = str(data["table"]), str(data["parent"])
    return Relation(
        table=names.get(table, table),
        column=str(data["column"]),
        parent=names.get(parent, parent),
        uuid_column=str(data.get("uuid_column", "")),
        declared=bool(data.get("declared", True)),
        parent_column=str(data.get("parent_column", "")),
        collation=str(data.get("collation", "")),
    )
