"""The migration described as data: tables, added columns, relations. Everything else derives from it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from uuid_migrate.errors import PlanError
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.naming import MAX_IDENTIFIER_BYTES, reference_uuid_column

#: The column every migrated table gains, as in the migration guide.
UUID_COLUMN = "uuid_id"
#: Name of the old-to-new id table, as in the migration guide.
MAPPING_TABLE = "id_mappings"
#: Rows per batch at most: one batch is one transaction holding its rows' locks and WAL.
MAX_BATCH_SIZE = 1_000_000


@dataclass(frozen=True)
class ExtraColumn:
    """A nullable column added beside the UUID (such as the `auth_id` placeholder on users)."""

    name: str
    type: str = "uuid"


@dataclass(frozen=True)
class Table:
    """One table the plan touches; `migrate=False` tables only get translated references.

    A partitioned table is migrated as one table (its partitions are never entries of the
    plan); `partition_key` names its partition key columns, which its unique index must hold.
    """

    name: str
    key: str
    key_type: str = "text"
    migrate: bool = True
    batch_size: int | None = None
    extra_columns: tuple[ExtraColumn, ...] = ()
    #: A composite primary key (a table that only references migrated ones, such as a
    #: junction table): its batches are cut over these columns; `key` is then empty.
    key_columns: tuple[str, ...] = ()
    partitioned: bool = False
    partition_key: tuple[str, ...] = ()


@dataclass(frozen=True)
class Relation:
    """A reference `table.column -> parent.parent_column` (the parent's key unless named:
    a unique column), translated into `table.uuid_column`, the `uuid_id` of that row."""

    table: str
    column: str
    parent: str
    uuid_column: str = ""
    declared: bool = True
    parent_column: str = ""

    def __post_init__(self) -> None:
        if not self.uuid_column:
            object.__setattr__(self, "uuid_column", reference_uuid_column(self.column))


@dataclass(frozen=True)
class Skipped:
    """Something discovery found and the migration leaves alone: a table with a string key,
    or a foreign key to a migrated table, with the reason."""

    kind: str  # "table" or "foreign_key"
    name: str
    reason: str

    def describe(self) -> str:
        return f"{self.kind.replace('_', ' ')} {self.name}: {self.reason}"


@dataclass(frozen=True)
class Plan:
    """A whole migration: the schema, its tables in plan order, and their relations."""

    schema: str = "public"
    tables: tuple[Table, ...] = ()
    relations: tuple[Relation, ...] = ()
    batch_size: int | None = None
    #: What the migration leaves alone, and why; said before any change.
    skipped: tuple[Skipped, ...] = ()

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise PlanError(f"table {name!r} is not in the plan")

    def migrated(self) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.migrate)

    def parent_column(self, rel: Relation) -> str:
        """The parent's column a reference names: a unique column, or the parent's key."""
        return rel.parent_column or self.table(rel.parent).key

    def relations_of(self, table: str) -> tuple[Relation, ...]:
        return tuple(r for r in self.relations if r.table == table)

    def with_batch_size(self, batch_size: int | None) -> Plan:
        return self if batch_size is None else replace(self, batch_size=batch_size)

    def batch_size_of(self, table: str, default: int) -> int:
        return self.table(table).batch_size or self.batch_size or default


def validate(plan: Plan) -> Plan:
    """Check the plan is self-consistent; returns it unchanged or raises PlanError."""
    names = [t.name for t in plan.tables]
    if not names:
        raise PlanError("the plan has no tables: nothing to migrate")
    if len(set(names)) != len(names):
        raise PlanError("a table appears twice in the plan")
    migrated = {t.name for t in plan.migrated()}
    if not migrated:
        raise PlanError("the plan migrates no table (every table has migrate = false)")
    for rel in plan.relations:
        if rel.table not in names:
            raise PlanError(
                f"relation {rel.table}.{rel.column}: table {rel.table!r} is not in the plan"
            )
        if rel.parent not in migrated:
            raise PlanError(
                f"relation {rel.table}.{rel.column}: parent {rel.parent!r} is not a migrated table"
            )
    _check_column_names(plan)
    for where, size in [("the plan", plan.batch_size)] + [
        (f"table {t.name!r}", t.batch_size) for t in plan.tables
    ]:
        if size is not None and not 1 <= size <= MAX_BATCH_SIZE:
            raise PlanError(f"{where}: batch_size must be 1 to {MAX_BATCH_SIZE:,}, got {size}")
    return plan


def _check_column_names(plan: Plan) -> None:
    for table in plan.tables:
        added = added_columns(plan, table.name)
        seen: set[str] = set()
        for name in added:
            if len(name.encode()) > MAX_IDENTIFIER_BYTES:
                raise PlanError(
                    f"column name {name!r} on {table.name!r} is longer than "
                    f"{MAX_IDENTIFIER_BYTES} bytes; give that relation a shorter uuid_column"
                )
            if name in seen:
                raise PlanError(f"table {table.name!r} would gain column {name!r} twice")
            seen.add(name)
        if table.key in seen:
            raise PlanError(f"table {table.name!r}: an added column is named like its key")


def added_columns(plan: Plan, table: str) -> list[str]:
    """Names of every column the migration adds to `table`, in the order they are added."""
    spec = plan.table(table)
    names = [UUID_COLUMN] if spec.migrate else []
    names += [c.name for c in spec.extra_columns]
    names += [r.uuid_column for r in plan.relations_of(table)]
    return names


def to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: the TOML file format and what the ledger stores."""
    out: dict[str, Any] = {"schema": plan.schema}
    if plan.batch_size:
        out["batch_size"] = plan.batch_size
    out["tables"] = [_table_dict(t) for t in plan.tables]
    out["relations"] = [_relation_dict(r) for r in plan.relations]
    if plan.skipped:
        out["skipped"] = [{"kind": s.kind, "name": s.name, "reason": s.reason} for s in plan.skipped]
    return out


def _table_dict(table: Table) -> dict[str, Any]:
    out: dict[str, Any] = {"name": table.name, "key": table.key, "key_type": table.key_type}
    if not table.migrate:
        out["migrate"] = False
    if table.batch_size:
        out["batch_size"] = table.batch_size
    if table.extra_columns:
        out["extra_columns"] = [{"name": c.name, "type": c.type} for c in table.extra_columns]
    if table.key_columns:
        out["key_columns"] = list(table.key_columns)
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
    return out


def from_dict(data: dict[str, Any]) -> Plan:
    """Build a plan from plain data (a parsed TOML file or the ledger's copy)."""
    try:
        tables = tuple(_table_from(t) for t in data.get("tables", []))
        relations = tuple(_relation_from(r) for r in data.get("relations", []))
        size = data.get("batch_size")
        batch_size = int(size) if size is not None else None
        skipped = tuple(
            Skipped(str(s.get("kind", "table")), str(s["name"]), str(s.get("reason", "")))
            for s in data.get("skipped", [])
        )
        return Plan(str(data.get("schema", "public")), tables, relations, batch_size, skipped)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"plan is malformed: {exc}") from None


def _table_from(data: dict[str, Any]) -> Table:
    extras = tuple(
        ExtraColumn(str(c["name"]), str(c.get("type", "uuid")))
        for c in data.get("extra_columns", [])
    )
    size = data.get("batch_size")
    return Table(
        name=str(data["name"]),
        key=str(data.get("key", "")),
        key_type=str(data.get("key_type", "")),
        migrate=bool(data.get("migrate", True)),
        batch_size=int(size) if size is not None else None,
        extra_columns=extras,
        key_columns=tuple(str(c) for c in data.get("key_columns", [])),
        partitioned=bool(data.get("partitioned", False)),
        partition_key=tuple(str(c) for c in data.get("partition_key", [])),
    )


def _relation_from(data: dict[str, Any]) -> Relation:
    return Relation(
        table=str(data["table"]),
        column=str(data["column"]),
        parent=str(data["parent"]),
        uuid_column=str(data.get("uuid_column", "")),
        declared=bool(data.get("declared", True)),
        parent_column=str(data.get("parent_column", "")),
    )
