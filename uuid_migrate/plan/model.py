"""The migration described as data: tables, added columns, relations. Everything else derives from it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from psycopg2 import sql

from uuid_migrate.errors import PlanError
from uuid_migrate.identifiers import qualified
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


def table_label(schema: str, relation: str, home: str) -> str:
    """How the plan names a table: bare in the plan's own schema, `schema.table` elsewhere."""
    return relation if schema == home else f"{schema}.{relation}"


def make_table(schema: str, relation: str, home: str, **fields: Any) -> Table:
    """A plan entry for `schema.relation` in a plan whose own schema is `home`."""
    in_home = schema == home
    return Table(table_label(schema, relation, home), schema="" if in_home else schema, **fields)


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
    #: The schema of a table outside the plan's own; its `name` is then `schema.table`, the
    #: name the plan, its stages and `id_mappings.table_name` know it by.
    schema: str = ""
    #: Columns the table has already that the migration adopts instead of refusing:
    #: `uuid_id` (its values kept and mapped) or an extra column (kept as it is).
    adopt: tuple[str, ...] = ()

    @property
    def relation(self) -> str:
        """The table's name in its schema."""
        return self.name[len(self.schema) + 1 :] if self.schema else self.name


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
    #: The referenced column's collation, `schema.name`, when the referencing column has
    #: another: the reference is compared under it, as PostgreSQL's foreign keys do (filled
    #: from the catalog by `plan.collations`; empty when both columns agree).
    collation: str = ""

    def __post_init__(self) -> None:
        if not self.uuid_column:
            object.__setattr__(self, "uuid_column", reference_uuid_column(self.column))

    def compared(self, value: sql.Composable) -> sql.Composable:
        """The child's reference `value` as every comparison with the parent's column takes
        it: under the referenced column's collation (two collations side by side would leave
        PostgreSQL unable to choose one, and the foreign key's equality is the parent's)."""
        if not self.collation:
            return value
        schema, _, name = self.collation.partition(".")
        return sql.SQL("({}) COLLATE {}").format(value, sql.Identifier(schema, name))


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
    """A whole migration: its own schema (where `id_mappings` lives), its tables in plan
    order (from any schema), and their relations."""

    schema: str = "public"
    tables: tuple[Table, ...] = ()
    relations: tuple[Relation, ...] = ()
    batch_size: int | None = None
    #: What the migration leaves alone, and why; said before any change.
    skipped: tuple[Skipped, ...] = ()
    #: The application's triggers may fire on the migration's writes (where they cannot be
    #: silenced): accepted in the plan, as `--allow-triggers` does for one run.
    allow_user_triggers: bool = False

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise PlanError(f"table {name!r} is not in the plan")

    def where(self, name: str) -> tuple[str, str]:
        """(schema, table) of a table of the plan, as PostgreSQL names it."""
        table = self.table(name)
        return table.schema or self.schema, table.relation

    def qualified(self, name: str) -> sql.Composed:
        """A table of the plan as SQL, schema-qualified and quoted."""
        return qualified(*self.where(name))

    def schemas(self) -> tuple[str, ...]:
        """Every schema the plan touches, its own first."""
        others = sorted({t.schema for t in self.tables if t.schema and t.schema != self.schema})
        return (self.schema, *others)

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
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PlanError(
            f"table {twice[0]!r} appears twice in the plan (a name of the plan's own schema "
            "that holds a dot reads like another schema's table: rename one, or leave one out)"
        )
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
    _check_adopted(plan)
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


def _check_adopted(plan: Plan) -> None:
    for table in plan.tables:
        allowed = ({UUID_COLUMN} if table.migrate else set()) | {c.name for c in table.extra_columns}
        for column in table.adopt:
            if column not in allowed:
                raise PlanError(
                    f"table {table.name!r}: adopt lists {column!r}, but only its uuid_id and its "
                    "extra columns can be adopted (a translated column is derived from its "
                    "parent: give that relation another uuid_column instead)"
                )


def written_columns(plan: Plan, table: str) -> set[str]:
    """The columns a batch of `table` sets (extra columns are only added, never written)."""
    written = {UUID_COLUMN} if plan.table(table).migrate else set()
    return written | {r.uuid_column for r in plan.relations_of(table)}


def added_columns(plan: Plan, table: str) -> list[str]:
    """Names of every column the migration adds to `table`, in the order they are added."""
    spec = plan.table(table)
    names = [UUID_COLUMN] if spec.migrate else []
    names += [c.name for c in spec.extra_columns]
    names += [r.uuid_column for r in plan.relations_of(table)]
    return names
