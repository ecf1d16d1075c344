"""The SQL of one batch: a single set-based statement over one key range.

It assigns `uuid_id` where missing, translates each reference from the parent's `uuid_id`,
writes the new mappings and records orphans, all in one statement so that it commits (with
the ledger row) or not at all. Re-running it changes nothing: only rows without a UUID or with
a translation that differs from the parent's are written, and mappings are unique per old id.

The mapping insert comes in two forms. `guarded`, it skips an old id mapped already (ON
CONFLICT DO NOTHING); unguarded, it is a plain insert, which costs a tenth less per batch (no
speculative insertion: one index probe and one WAL record fewer per row) and fails on such an
id instead, so the caller runs it under a savepoint and falls back to the guarded form. A row
the statement writes has no `uuid_id`, so its old id is mapped only where the application left
a mapping behind; an adopted `uuid_id` maps rows it keeps too, and always takes the guard.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger import added_mappings, error_records, generated_values
from uuid_migrate.plan.cuts import Scope, cut_of
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan, Relation
from uuid_migrate.plan.ranges import KeyRange
from uuid_migrate.plan.stages import Stage

_CHILD = sql.Identifier("c")


def parent_uuid(plan: Plan, rel: Relation) -> sql.Composed:
    """The parent's UUID for the child's reference; NULL when the parent row is missing.
    Compared under the parent column's collation, as the foreign key compares."""
    return sql.SQL("(SELECT p.{uuid} FROM {parent} AS p WHERE p.{key} = {col})").format(
        uuid=sql.Identifier(UUID_COLUMN),
        parent=plan.qualified(rel.parent),
        key=sql.Identifier(plan.parent_column(rel)),
        col=rel.compared(sql.SQL("c.{}").format(sql.Identifier(rel.column))),
    )


def batch_statement(
    plan: Plan, stage: Stage, run_id: str, key_range: Scope, guarded: bool = True
) -> sql.Composed:
    """One statement; its single result row is (rows written, mappings added, orphans recorded).
    Over a key range, or over the rows a RowSet names (the final sweep's). Unguarded, it fails
    with a unique violation on id_mappings where an old id is mapped."""
    ctes = [_update_cte(plan, stage, key_range)]
    guarded = guarded or _adopts_uuid(plan, stage)
    ctes.append(
        _mapping_cte(plan, stage, run_id, _mapped_rows(plan, stage, key_range), guarded)
        if stage.assigns_uuid
        else _empty_cte("mapped")
    )
    if _adopts_uuid(plan, stage):
        ctes.append(sql.SQL("generated AS ({})").format(
            generated_values.generated_insert(run_id, stage.table)))  # fmt: skip
    ctes.append(
        _orphans_cte(plan, stage, run_id, key_range) if stage.relations else _empty_cte("orphans")
    )
    return sql.SQL(
        "WITH {} SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM mapped), "
        "(SELECT count(*) FROM orphans)"
    ).format(sql.SQL(", ").join(ctes))


def _adopts_uuid(plan: Plan, stage: Stage) -> bool:
    return stage.assigns_uuid and UUID_COLUMN in plan.table(stage.table).adopt


def _update_cte(plan: Plan, stage: Stage, key_range: KeyRange) -> sql.Composed:
    cut = cut_of(plan.table(stage.table))
    sets, needs_work, returning = ([], [], [sql.SQL("{} AS old_id").format(cut.row_id(_CHILD))])
    drawn, source, joined = sql.SQL("gen_random_uuid()"), sql.SQL(""), sql.SQL("")
    if _adopts_uuid(plan, stage):
        # An adopted uuid_id keeps the application's values: the UUIDs this statement draws
        # are told apart (`generated`) and recorded, so a rollback clears exactly those.
        drawn, source = sql.SQL("o.fresh"), _fresh_uuids(plan, stage, cut, key_range)
        joined = sql.SQL("c.{} = o.k AND ").format(sql.Identifier(plan.table(stage.table).key))
        returning.append(sql.SQL("c.{} = o.fresh AS generated").format(sql.Identifier(UUID_COLUMN)))
    if stage.assigns_uuid:
        uuid = sql.Identifier(UUID_COLUMN)
        sets.append(sql.SQL("{u} = coalesce(c.{u}, {d})").format(u=uuid, d=drawn))
        needs_work.append(sql.SQL("c.{} IS NULL").format(uuid))
        returning.append(sql.SQL("c.{} AS new_id").format(uuid))
    for i, rel in enumerate(stage.relations):
        target = sql.Identifier(rel.uuid_column)
        lookup = parent_uuid(plan, rel)
        sets.append(sql.SQL("{} = {}").format(target, lookup))
        needs_work.append(sql.SQL("c.{} IS DISTINCT FROM {}").format(target, lookup))
        column = sql.Identifier(rel.column)
        returning.append(sql.SQL("c.{} AS {}").format(column, sql.Identifier(f"ref{i}_raw")))
        returning.append(sql.SQL("c.{}::text AS {}").format(column, sql.Identifier(f"ref{i}")))
        returning.append(sql.SQL("c.{} AS {}").format(target, sql.Identifier(f"ref{i}_uuid")))
    return sql.SQL(
        "upd AS (UPDATE {table} AS c SET {sets} {source} WHERE {joined}{range} AND ({work}) "
        "RETURNING {ret})"
    ).format(
        table=plan.qualified(stage.table),
        sets=sql.SQL(", ").join(sets),
        source=source,
        joined=joined,
        range=cut.condition(_CHILD, key_range),
        work=sql.SQL(" OR ").join(needs_work),
        ret=sql.SQL(", ").join(returning),
    )


def _fresh_uuids(plan: Plan, stage: Stage, cut: Any, key_range: KeyRange) -> sql.Composed:
    """`FROM` one drawn UUID per row of the range, to be joined on the key (which a
    concurrent update of the row keeps, unlike its ctid)."""
    key = sql.Identifier(plan.table(stage.table).key)
    row = sql.Identifier("x")
    return sql.SQL(
        "FROM (SELECT x.{k} AS k, gen_random_uuid() AS fresh FROM {t} AS x WHERE {r}) AS o"
    ).format(k=key, t=plan.qualified(stage.table), r=cut.condition(row, key_range))


def _mapped_rows(plan: Plan, stage: Stage, key_range: KeyRange) -> sql.Composable:
    """The (old_id, new_id) rows to map: those the statement writes, and for an adopted
    uuid_id also the rows of the range that had their value already (kept, and mapped)."""
    if not _adopts_uuid(plan, stage):
        return sql.SQL("upd")
    cut = cut_of(plan.table(stage.table))
    row = sql.Identifier("x")
    return sql.SQL(
        "(SELECT old_id, new_id FROM upd UNION ALL SELECT {own}, x.{u} FROM {t} AS x "
        "WHERE {r} AND x.{u} IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM upd WHERE upd.old_id = {own})) AS kept"
    ).format(
        own=cut.row_id(row), u=sql.Identifier(UUID_COLUMN), t=plan.qualified(stage.table),
        r=cut.condition(row, key_range),
    )  # fmt: skip


def _mapping_cte(
    plan: Plan, stage: Stage, run_id: str, rows: sql.Composable, guarded: bool
) -> sql.Composed:
    """The new mappings; in an id_mappings that was there before the migration, each row
    inserted is also noted in the ledger, so rollback removes exactly those."""
    return sql.SQL(
        "mapped AS (INSERT INTO {mappings} AS m (table_name, old_id, new_id) "
        "SELECT {name}, old_id, new_id FROM {rows} {guard}RETURNING {returned}), {noted}"
    ).format(
        mappings=qualified(plan.schema, MAPPING_TABLE),
        name=sql.Literal(stage.table),
        rows=rows,
        guard=sql.SQL("ON CONFLICT (table_name, old_id) DO NOTHING " if guarded else ""),
        returned=added_mappings.RETURNED,
        noted=added_mappings.note_cte(run_id, "mapped"),
    )


def _orphans_cte(plan: Plan, stage: Stage, run_id: str, key_range: KeyRange) -> sql.Composed:
    selects = [_orphan_select(plan, stage, run_id, i, rel) for i, rel in enumerate(stage.relations)]
    if not stage.assigns_uuid:
        # A references stage writes only rows whose translation changes, so an orphan whose
        # translation is NULL already is not among them: found in the range instead.
        selects += [_unwritten_orphans(plan, stage, run_id, rel, key_range) for rel in stage.relations]
    insert = error_records.orphan_insert(sql.SQL(" UNION ALL ").join(selects))
    return sql.SQL("orphans AS ({})").format(insert)


def _orphan_select(plan: Plan, stage: Stage, run_id: str, i: int, rel: Relation) -> sql.Composed:
    """Written rows whose reference names a parent row that does not exist (not merely one
    not yet done)."""
    ref, raw = sql.Identifier(f"ref{i}"), sql.Identifier(f"ref{i}_raw")
    return sql.SQL(
        "{record} FROM upd AS u WHERE u.{ref} IS NOT NULL AND u.{ref_uuid} IS NULL AND {none}"
    ).format(
        record=_orphan_record(plan, stage, run_id, rel, sql.SQL("u.old_id"), sql.SQL("u.{}").format(ref)),
        ref=ref,
        ref_uuid=sql.Identifier(f"ref{i}_uuid"),
        none=_no_parent(plan, rel, sql.SQL("u.{}").format(raw)),
    )


def _unwritten_orphans(
    plan: Plan, stage: Stage, run_id: str, rel: Relation, key_range: KeyRange
) -> sql.Composed:
    """Rows of the range the statement leaves alone that reference no parent row: NULL
    translation, a value, not written by `upd` (a hash anti-join, so the parent is looked up
    only for those few rows)."""
    cut = cut_of(plan.table(stage.table))
    row = sql.Identifier("o")
    value = sql.SQL("o.{}").format(sql.Identifier(rel.column))
    return sql.SQL(
        "{record} FROM {source} AS o WHERE {range} AND {value} IS NOT NULL "
        "AND o.{target} IS NULL AND NOT EXISTS (SELECT 1 FROM upd AS u WHERE u.old_id = {own}) "
        "AND {none}"
    ).format(
        record=_orphan_record(
            plan, stage, run_id, rel, cut.row_id(row), sql.SQL("{}::text").format(value)
        ),
        source=plan.qualified(stage.table),
        range=cut.condition(row, key_range),
        value=value,
        target=sql.Identifier(rel.uuid_column),
        own=cut.row_id(row),
        none=_no_parent(plan, rel, value),
    )


def _orphan_record(
    plan: Plan, stage: Stage, run_id: str, rel: Relation, row_id: sql.Composable,
    value: sql.Composable,
) -> sql.Composed:  # fmt: skip
    """The SELECT list of one orphan's error record: (run, table, row id, column, error,
    context); `value` is the reference as text."""
    message = f"orphaned reference: no {rel.parent} row with {plan.parent_column(rel)} = "
    return sql.SQL(
        "SELECT {run}, {table}, {row_id}, {column}, {message} || quote_literal({value}), "
        "jsonb_build_object('column', {column}, 'parent', {parent_name}, 'value', {value})"
    ).format(
        run=sql.Literal(run_id),
        table=sql.Literal(stage.table),
        row_id=row_id,
        column=sql.Literal(rel.column),
        message=sql.Literal(message),
        value=value,
        parent_name=sql.Literal(rel.parent),
    )


def _no_parent(plan: Plan, rel: Relation, value: sql.Composable) -> sql.Composed:
    """No parent row has `value` in the referenced column (under its collation)."""
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{key} = {value})").format(
        parent=plan.qualified(rel.parent),
        key=sql.Identifier(plan.parent_column(rel)),
        value=rel.compared(value),
    )


def _empty_cte(name: str) -> sql.Composed:
    return sql.SQL("{} AS (SELECT 1 WHERE false)").format(sql.Identifier(name))
