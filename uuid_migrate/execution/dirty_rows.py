"""The rows of a stage its batch statement would still write: what the final sweep fixes.

One read-only query per stage, taking no row lock: each parent joined once (a hash join:
the parent's column is unique), the reference compared under the parent column's collation
as the batch statement compares it. A row is dirty when the statement's own condition holds
for it: no `uuid_id` yet, or a translation that differs from its parent's current `uuid_id`
(NULL where no parent row exists, so an orphan whose translation is NULL already is not
dirty). Two more, where the statement would act on them too: in a table whose `uuid_id` was
adopted, a row without its mapping; in a references stage, an orphan without its error
record. The stage's unique index on `uuid_id` is built beside the sweep (see
`progression.closing`), so without a relation this is one pass over the table.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger import error_records
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan, Relation
from uuid_migrate.plan.stages import Stage

_ROW = sql.Identifier("c")


def dirty_rows(cur: Any, plan: Plan, stage: Stage, limit: int) -> list[str]:
    """Ids (`Cut.row_id`) of at most `limit` rows of the stage that need its statement."""
    query, params = dirty_query(plan, stage, limit)
    cur.execute(query, params)
    return [row[0] for row in cur.fetchall()]


def dirty_query(plan: Plan, stage: Stage, limit: int) -> tuple[sql.Composed, tuple[Any, ...]]:
    cut = cut_of(plan.table(stage.table))
    row_id = cut.row_id(_ROW)
    joins: list[sql.Composable] = []
    dirty: list[sql.Composable] = []
    params: list[Any] = []
    if stage.assigns_uuid:
        dirty.append(sql.SQL("c.{} IS NULL").format(sql.Identifier(UUID_COLUMN)))
        if UUID_COLUMN in plan.table(stage.table).adopt:
            joins.append(sql.SQL(
                "LEFT JOIN {} AS m ON m.table_name = %s AND m.old_id = {}"
            ).format(qualified(plan.schema, MAPPING_TABLE), row_id))  # fmt: skip
            params.append(stage.table)
            dirty.append(sql.SQL("m.old_id IS NULL"))
    for i, rel in enumerate(stage.relations):
        parent = sql.Identifier(f"p{i}")
        joins.append(_parent_join(plan, rel, parent))
        dirty.append(sql.SQL("c.{} IS DISTINCT FROM {}.{}").format(
            sql.Identifier(rel.uuid_column), parent, sql.Identifier(UUID_COLUMN)))  # fmt: skip
        if not stage.assigns_uuid:
            dirty.append(_unrecorded_orphan(plan, rel, parent, row_id))
            params += [rel.table, rel.column]
    query = sql.SQL("SELECT {} FROM {} AS c {} WHERE {} LIMIT {}").format(
        row_id,
        plan.qualified(stage.table),
        sql.SQL(" ").join(joins),
        sql.SQL(" OR ").join(dirty),
        sql.Literal(int(limit)),
    )
    return query, tuple(params)


def _parent_join(plan: Plan, rel: Relation, parent: sql.Identifier) -> sql.Composed:
    return sql.SQL("LEFT JOIN {} AS {} ON {}.{} = {}").format(
        plan.qualified(rel.parent),
        parent,
        parent,
        sql.Identifier(plan.parent_column(rel)),
        rel.compared(sql.SQL("c.{}").format(sql.Identifier(rel.column))),
    )


def _unrecorded_orphan(
    plan: Plan, rel: Relation, parent: sql.Identifier, row_id: sql.Composable
) -> sql.Composed:
    """A reference naming no parent row, its translation NULL, and no error record for it:
    a references stage records it (the record is looked up for these rows only)."""
    return sql.SQL("(c.{} IS NOT NULL AND {}.{} IS NULL AND c.{} IS NULL AND NOT {})").format(
        sql.Identifier(rel.column),
        parent,
        sql.Identifier(plan.parent_column(rel)),
        sql.Identifier(rel.uuid_column),
        error_records.recorded_for(row_id),
    )
