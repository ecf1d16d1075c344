"""The triggers that keep the application's writes in step while (and after) the tool runs.

Each table of the plan gets, before its first batch, a row-level trigger function and two
triggers calling it: `BEFORE INSERT`, and `BEFORE UPDATE OF` its key and reference columns
(with a WHEN clause, so an update of other columns, or one that leaves them as they were, never
calls it). On a migrated table the function gives a row without `uuid_id` its UUID and its
`id_mappings` row (carried along to the new key when the key changes); on a referencing
table it sets each `<ref>_uuid_id` from the parent's current `uuid_id` (NULL while the parent
has none: the batches fill it later). The tool's own batch writes set `uuid_migrate.batch`
and the function returns at once for them.

The function lives in the table's schema, is owned by the tool's role and runs as it
(`SECURITY DEFINER`, with a fixed `search_path`), so an application role that may write the
table but not `id_mappings` still gets its mappings. A deleted row's mapping stays, as
history: a row inserted again with that key gets the same UUID back. The triggers stay after
a successful run; `rollback` drops them and the functions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified, regclass_text
from uuid_migrate.ledger import added_mappings
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan, Relation

#: Set (SET LOCAL) by every batch of the tool: the triggers leave its writes alone.
BATCH_SETTING = "uuid_migrate.batch"
#: The triggers' names on every table. BEFORE triggers fire in name order: these come after
#: the application's own (which may set a key or a reference the function must see).
INSERT_TRIGGER = "zz_uuid_migrate_insert"
UPDATE_TRIGGER = "zz_uuid_migrate_update"
TRIGGER_NAMES = (INSERT_TRIGGER, UPDATE_TRIGGER)
_FUNCTION_PREFIX = "uuid_migrate_sync_"
_TAG = sql.SQL("$uuid_migrate_trigger$")
_NEW, _OLD = sql.SQL("NEW"), sql.SQL("OLD")


@dataclass(frozen=True)
class Reference:
    """One translated reference as the function needs it, all names spelled out."""

    column: str
    uuid_column: str
    parent_schema: str
    parent_table: str
    parent_column: str
    collation: str = ""

    def lookup(self) -> sql.Composed:
        """The parent's current uuid_id for NEW's reference, compared as the batches do."""
        rel = Relation("", self.column, "", self.uuid_column, collation=self.collation)
        return sql.SQL("(SELECT p.{u} FROM {parent} AS p WHERE p.{pk} = {value})").format(
            u=sql.Identifier(UUID_COLUMN),
            parent=qualified(self.parent_schema, self.parent_table),
            pk=sql.Identifier(self.parent_column),
            value=rel.compared(_column(_NEW, self.column)),
        )


@dataclass(frozen=True)
class RowTrigger:
    """The function and the two triggers of one table; recorded as one schema step."""

    schema: str
    table: str
    function: str
    #: The migrated key ("" when the table only references migrated ones), and the name
    #: its rows have in id_mappings (the plan's name of the table).
    key: str
    label: str
    mappings_schema: str
    references: tuple[Reference, ...] = ()
    kind: str = "row_trigger"
    #: Applied in a transaction, with the producer's lock timeout.
    concurrent = False
    #: Its forward replaces the function and triggers a run of the tool made before, so a
    #: new run's plan (another reference) is what they follow.
    replaces = True

    def __post_init__(self) -> None:
        refs = tuple(r if isinstance(r, Reference) else Reference(**r) for r in self.references)
        object.__setattr__(self, "references", refs)

    def identity(self) -> str:
        return f"{self.kind}:{self.schema}.{self.table}"

    def exists(self, cur: Any) -> bool:
        return bool(installed_on(cur, self.schema, self.table))

    def describe(self) -> str:
        return f"triggers {', '.join(TRIGGER_NAMES)} on {self.schema}.{self.table}"

    def forward(self) -> sql.Composed:
        table = qualified(self.schema, self.table)
        function = qualified(self.schema, self.function)
        create = sql.SQL(
            "CREATE OR REPLACE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {tag} {body} {tag}"
        ).format(f=function, tag=_TAG, body=self._body())
        on_insert = sql.SQL(
            "CREATE OR REPLACE TRIGGER {n} BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {f}()"
        ).format(n=sql.Identifier(INSERT_TRIGGER), t=table, f=function)
        on_update = sql.SQL(
            "CREATE OR REPLACE TRIGGER {n} BEFORE UPDATE OF {cols} ON {t} FOR EACH ROW "
            "WHEN ({when}) EXECUTE FUNCTION {f}()"
        ).format(
            n=sql.Identifier(UPDATE_TRIGGER),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in self._watched()),
            t=table,
            when=self._when(),
            f=function,
        )
        return sql.SQL("; ").join([create, on_insert, on_update])

    def reverse(self) -> sql.Composed:
        table = qualified(self.schema, self.table)
        drops = [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table)
            for name in TRIGGER_NAMES
        ]
        drops.append(
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(qualified(self.schema, self.function))
        )
        return sql.SQL("; ").join(drops)

    def _watched(self) -> list[str]:
        return ([self.key] if self.key else []) + [r.column for r in self.references]

    def _when(self) -> sql.Composed:
        changed = [_changed(c) for c in self._watched()]
        if self.key:
            changed.append(sql.SQL("NEW.{} IS NULL").format(sql.Identifier(UUID_COLUMN)))
        return sql.SQL(" OR ").join(changed)

    def _body(self) -> sql.Composed:
        start = sql.SQL(
            "DECLARE noted xid; BEGIN IF current_setting({s}, true) = 'on' THEN RETURN NEW; END IF;"
        )
        parts = [start.format(s=sql.Literal(BATCH_SETTING))]
        if self.key:
            parts.append(self._mapping())
        for ref in self.references:
            parts.append(
                sql.SQL("IF TG_OP = 'INSERT' OR {changed} THEN {target} := {lookup}; END IF;").format(
                    changed=_changed(ref.column),
                    target=_column(_NEW, ref.uuid_column),
                    lookup=ref.lookup(),
                )
            )
        parts.append(sql.SQL("RETURN NEW; END;"))
        return sql.SQL(" ").join(parts)

    def _mapping(self) -> sql.Composed:
        """NEW's uuid_id (a new one, or the one its key had before: history) and its mapping,
        moved from the old key when the key changes."""
        uuid, new_key, old_key = (
            _column(_NEW, UUID_COLUMN),
            sql.SQL("{}::text").format(_column(_NEW, self.key)),
            sql.SQL("{}::text").format(_column(_OLD, self.key)),
        )
        mappings = qualified(self.mappings_schema, MAPPING_TABLE)
        return sql.SQL(
            "IF TG_OP = 'INSERT' OR {key_changed} OR {uuid} IS NULL THEN "
            "IF TG_OP = 'UPDATE' AND {key_changed} AND {old_uuid} IS NOT NULL THEN "
            "DELETE FROM {m} WHERE table_name = {label} AND old_id = {old_key} "
            "AND new_id = {old_uuid}; END IF; "
            "IF {uuid} IS NULL THEN {uuid} := coalesce((SELECT new_id FROM {m} "
            "WHERE table_name = {label} AND old_id = {new_key}), gen_random_uuid()); END IF; "
            "DELETE FROM {m} WHERE table_name = {label} AND old_id = {new_key} AND new_id <> {uuid}; "
            "INSERT INTO {m} AS m (table_name, old_id, new_id) VALUES ({label}, {new_key}, {uuid}) "
            "ON CONFLICT DO NOTHING RETURNING m.xmin INTO noted; "
            "IF noted IS NOT NULL THEN {note} END IF; END IF;"
        ).format(
            key_changed=_changed(self.key),
            uuid=uuid,
            old_uuid=_column(_OLD, UUID_COLUMN),
            m=mappings,
            label=sql.Literal(self.label),
            old_key=old_key,
            new_key=new_key,
            note=added_mappings.trigger_note(sql.Literal(self.label), new_key, sql.SQL("noted")),
        )


def _column(row: sql.SQL, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(row, sql.Identifier(name))


def _changed(column: str) -> sql.Composed:
    """The column's text changed, byte for byte: under a nondeterministic collation `F1` and
    `f1` are equal, yet a mapping holds the key's exact text."""
    return sql.SQL('OLD.{c}::text COLLATE "C" IS DISTINCT FROM NEW.{c}::text COLLATE "C"').format(
        c=sql.Identifier(column)
    )


def function_name(table: str) -> str:
    """`uuid_migrate_sync_<table>`, shortened with a hash where PostgreSQL would truncate it."""
    name = f"{_FUNCTION_PREFIX}{table}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name.encode()[:50].decode(errors='ignore')}_{digest}"


def trigger_steps(plan: Plan) -> list[RowTrigger]:
    """One per table of the plan, in plan order."""
    steps = []
    for table in plan.tables:
        schema, relation = plan.where(table.name)
        refs = tuple(
            Reference(
                rel.column,
                rel.uuid_column,
                *plan.where(rel.parent),
                plan.parent_column(rel),
                rel.collation,
            )
            for rel in plan.relations_of(table.name)
        )
        key = table.key if table.migrate else ""
        steps.append(
            RowTrigger(schema, relation, function_name(relation), key, table.name, plan.schema, refs)
        )
    return steps


def installed_on(cur: Any, schema: str, table: str) -> list[str]:
    """The tool's triggers present on the table, by name."""
    cur.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = ANY(%s) "
        "ORDER BY tgname",
        (regclass_text(schema, table), list(TRIGGER_NAMES)),
    )
    return [row[0] for row in cur.fetchall()]


def installed(cur: Any, plan: Plan) -> list[str]:
    """The plan's tables that carry the tool's triggers now (both of them), by plan name."""
    return [t.name for t in plan.tables if len(installed_on(cur, *plan.where(t.name))) == 2]
