"""Schema changes as data: each step knows its forward SQL, its reverse, and whether it is done.

The producer applies the additive steps before any batch, and each table's unique index
after its backfill; rollback walks the recorded steps backwards. A step is known by what it
is (`identity`), and its record says whether it created its object, so a reverse never drops
something that was there before the migration.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import asdict, dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan, added_columns, table_label
from uuid_migrate.plan.stages import table_order
from uuid_migrate.schema.mapping_table import MappingIndex, mapping_indexes
from uuid_migrate.schema.partitioned import PartitionedUniqueIndex
from uuid_migrate.schema.triggers import RowTrigger, trigger_steps


@dataclass(frozen=True)
class CreateMappingTable:
    """`id_mappings(table_name, old_id, new_id, created_at)`, one row per old id."""

    schema: str
    kind: str = "create_mapping_table"
    #: Applied in a transaction, with the producer's lock timeout.
    concurrent = False

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}"

    def exists(self, cur: Any) -> bool:
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (regclass_text(self.schema, MAPPING_TABLE),)
        )
        return bool(cur.fetchone()[0])

    def forward(self) -> sql.Composed:
        """The table with its unique indexes, in one transaction: it is new and empty. Only
        applied when the table is absent; one that exists gets its missing indexes from
        the `MappingIndex` steps."""
        create = sql.SQL(
            "CREATE TABLE {} (table_name text NOT NULL, old_id text NOT NULL, "
            "new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
        ).format(qualified(self.schema, MAPPING_TABLE))
        return sql.SQL("; ").join([create, *(i.inline() for i in mapping_indexes(self.schema))])

    def describe(self) -> str:
        return f"table {self.schema}.{MAPPING_TABLE}"

    def reverse(self) -> sql.Composed:
        return sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(self.schema, MAPPING_TABLE))


@dataclass(frozen=True)
class AddColumn:
    """A nullable column without default: instant, no table rewrite."""

    schema: str
    table: str
    column: str
    type: str
    kind: str = "add_column"
    concurrent = False

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}.{self.table}.{self.column}"

    def existing_type(self, cur: Any) -> str | None:
        cur.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
            (regclass_text(self.schema, self.table), self.column),
        )
        row = cur.fetchone()
        return row[0] if row else None

    def exists(self, cur: Any) -> bool:
        return self.existing_type(cur) is not None

    def forward(self) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            qualified(self.schema, self.table), sql.Identifier(self.column), sql.SQL(self.type)
        )

    def describe(self) -> str:
        return f"column {self.schema}.{self.table}.{self.column} ({self.type})"

    def reverse(self) -> sql.Composed:
        return sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
            qualified(self.schema, self.table), sql.Identifier(self.column)
        )


@dataclass(frozen=True)
class UniqueIndex:
    """The unique index on `uuid_id`, built concurrently after the table's backfill."""

    schema: str
    table: str
    column: str
    name: str
    kind: str = "unique_index"
    #: CREATE INDEX CONCURRENTLY: outside a transaction, under an advisory lock (see `apply`).
    concurrent = True

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}.{self.name}"

    def validity(self, cur: Any) -> bool | None:
        """True if present and valid, False if left invalid by an interrupted build, None if absent."""
        cur.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (self.schema, self.name),
        )
        row = cur.fetchone()
        return None if row is None else bool(row[0])

    def exists(self, cur: Any) -> bool:
        return self.validity(cur) is not None

    def forward(self) -> sql.Composed:
        return sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(self.name),
            qualified(self.schema, self.table),
            sql.Identifier(self.column),
        )

    def describe(self) -> str:
        return f"unique index {self.name} on {self.schema}.{self.table}"

    def lock_key(self) -> int:
        """The advisory lock held while the index is built, or looked at by a rollback."""
        return zlib.crc32(f"uuid_migrate:index:{self.schema}.{self.name}".encode())

    def leftovers(self, cur: Any) -> list[sql.Composed]:
        """The invalid index a failed concurrent build leaves, to drop."""
        return [self.reverse()] if self.validity(cur) is False else []

    def reverse(self) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            qualified(self.schema, self.name)
        )


Step = (
    CreateMappingTable | MappingIndex | AddColumn | UniqueIndex | PartitionedUniqueIndex | RowTrigger
)
Index = UniqueIndex | PartitionedUniqueIndex
_KINDS = {
    cls.kind: cls
    for cls in (
        CreateMappingTable, MappingIndex, AddColumn, UniqueIndex, PartitionedUniqueIndex, RowTrigger
    )
}  # fmt: skip


def step_to_dict(step: Step) -> dict[str, Any]:
    return asdict(step)


def step_from_dict(data: dict[str, Any]) -> Step:
    cls = _KINDS[data["kind"]]
    return cls(**{k: v for k, v in data.items() if k != "kind"})


def additive_steps(plan: Plan) -> list[Step]:
    """Every step applied before the first batch, parents' tables first.

    The tables' triggers come last, once every column they write exists, and before any
    batch, so no row the application writes from then on is missed. Rollback reverses the
    recorded steps by position, so it drops the triggers first, children's columns before
    their parents', then the indexes it added to id_mappings, and `id_mappings` last.
    """
    extra_types = {(t.name, c.name): c.type for t in plan.tables for c in t.extra_columns}
    steps: list[Step] = [CreateMappingTable(plan.schema), *mapping_indexes(plan.schema)]
    for table in _dependency_order(plan):
        for column in added_columns(plan, table):
            kind = extra_types.get((table, column), "uuid")
            steps.append(AddColumn(*plan.where(table), column, kind))
    return steps + trigger_steps(plan)


def index_steps(plan: Plan) -> list[Index]:
    """Each migrated table's unique index on `uuid_id`, built after its backfill."""
    return [uuid_index(plan, t.name) for t in plan.migrated()]


def _dependency_order(plan: Plan) -> list[str]:
    migrated = table_order(plan)
    return migrated + [t.name for t in plan.tables if t.name not in migrated]


def target_conflicts(cur: Any, plan: Plan, ours: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """What stands in the way of the additive steps: a column that exists and that no run of
    this tool added (`ours`: the identities of those it did), unless the plan adopts it with
    the right type; an id_mappings of another shape."""
    conflicts = []
    for step in additive_steps(plan):
        if isinstance(step, AddColumn):
            found = step.existing_type(cur)
            if found is not None and step.identity() not in ours:
                conflicts += _column_in_the_way(cur, plan, step, found)
        elif isinstance(step, MappingIndex):
            conflicts += step.conflicts(cur)
        elif (
            isinstance(step, CreateMappingTable)
            and step.exists(cur)
            and not _mapping_table_fits(cur, plan.schema)
        ):
            conflicts.append(
                f"{plan.schema}.{MAPPING_TABLE} exists but is not a (table_name, old_id, new_id, created_at) table"
            )
    return conflicts


def _column_in_the_way(cur: Any, plan: Plan, step: AddColumn, found: str) -> list[str]:
    label = table_label(step.schema, step.table, plan.schema)
    spec = plan.table(label)
    name = f"{label}.{step.column}"
    if step.column in spec.adopt:
        if same_type(cur, found, step.type):
            return []
        return [f"column {name} is {found}, not {step.type}: it cannot be adopted"]
    adoptable = step.column == UUID_COLUMN or step.column in {c.name for c in spec.extra_columns}
    how = (
        f'adopt it (adopt = ["{step.column}"] on table {label} in a plan file)'
        if adoptable
        else "give that relation another uuid_column in a plan file"
    )
    return [
        f"column {name} already exists and was not added by uuid-migrate, so the migration "
        f"would overwrite the application's data: rename it, or {how}"
    ]


def same_type(cur: Any, found: str, wanted: str) -> bool:
    cur.execute(
        "SELECT format_type(to_regtype(%s), NULL) = format_type(to_regtype(%s), NULL)",
        (found, wanted),
    )
    return bool(cur.fetchone()[0])


#: The columns an id_mappings must have, by type; any other must take a NULL or a default.
_MAPPING_COLUMNS = {"table_name": "text", "old_id": "text", "new_id": "uuid", "created_at": None}


def _mapping_table_fits(cur: Any, schema: str) -> bool:
    """An existing id_mappings the batches can insert into: the four columns, with types the
    batches' values and the validation's joins fit (created_at only needs a default), and no
    other column that requires a value."""
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, NULL), a.attnotnull AND NOT a.atthasdef "
        "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 "
        "AND NOT a.attisdropped",
        (regclass_text(schema, MAPPING_TABLE),),
    )
    found = {name: (kind, required) for name, kind, required in cur.fetchall()}
    for name, kind in _MAPPING_COLUMNS.items():
        allowed = {kind, "character varying"} if kind == "text" else {kind}
        if name not in found or (kind and found[name][0] not in allowed):
            return False
    return not any(required for n, (_, required) in found.items() if n not in _MAPPING_COLUMNS)


def uuid_index(plan: Plan, table: str) -> Index:
    """The table's unique index on `uuid_id`; on a partitioned table, with its partition key
    and built partition by partition."""
    spec = plan.table(table)
    schema, relation = plan.where(table)
    name = index_name(relation, UUID_COLUMN)
    if spec.partitioned:
        keys = spec.partition_key or (spec.key,)
        return PartitionedUniqueIndex(schema, relation, UUID_COLUMN, name, keys)
    return UniqueIndex(schema, relation, UUID_COLUMN, name)


def index_name(table: str, column: str) -> str:
    """`<table>_<column>_key`, shortened with a hash where PostgreSQL would truncate it."""
    name = f"{table}_{column}_key"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name.encode()[:50].decode(errors='ignore')}_{digest}_key"
