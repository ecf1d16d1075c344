"""One pass over a table for every post-migration count: FILTER aggregates over the table
joined to its mappings and to the parent of each reference checked.

Each join matches at most one row per table row (id_mappings is unique on (table_name,
old_id), a parent on the column a reference names), so the pass counts table rows exactly as
the separate checks would, in one snapshot, reading the table once instead of once a check.
The checks themselves (post_checks) turn the counts into verdicts and look for sample ids only
when something is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate.ledger import error_records
from uuid_migrate.plan.model import Plan, Relation
from uuid_migrate.verification.check_sql import ROW, table_names


@dataclass(frozen=True)
class RelationCounts:
    """Of one reference: rows whose translation is not the parent's `uuid_id` (or not NULL
    where no parent exists), and orphans without their error record."""

    untranslated: int
    unrecorded: int


@dataclass(frozen=True)
class TableScan:
    """The counts of one table; the mapping figures are None when it has no `uuid_id`."""

    total: int
    migrated: int | None = None
    #: Rows whose mapping is missing or names another UUID (or one where the row has none).
    disagreeing: int | None = None
    #: Rows that have their mapping.
    mapped: int | None = None
    relations: tuple[RelationCounts, ...] = ()


def scan_table(
    cur: Any, plan: Plan, table: str, with_uuid: bool, relations: tuple[Relation, ...]
) -> TableScan:
    """Count everything the checks of `table` need in one statement."""
    names = table_names(plan, table)
    columns, joins, params = [sql.SQL("count(*)")], [], []
    if with_uuid:
        columns += [
            sql.SQL("count({c}.{u})").format(**names),
            sql.SQL("count(*) FILTER (WHERE mp.new_id IS DISTINCT FROM {c}.{u})").format(**names),
            sql.SQL("count(mp.old_id)"),
        ]
    for i, rel in enumerate(relations):
        columns += _relation_counts(plan, rel, i, names)
    if with_uuid:
        joins.append(
            sql.SQL("LEFT JOIN {m} AS mp ON mp.table_name = %s AND mp.old_id = {row}").format(
                **names
            )
        )
        params.append(table)
    for i, rel in enumerate(relations):
        found, values = _relation_joins(plan, rel, i, names)
        joins += found
        params += values
    cur.execute(
        sql.SQL("SELECT {} FROM {} AS {} {}").format(
            sql.SQL(", ").join(columns), names["t"], ROW, sql.SQL(" ").join(joins)
        ),
        params,
    )
    row = [int(v) for v in cur.fetchone()]
    figures = row[1:4] if with_uuid else [None, None, None]
    rest = row[4:] if with_uuid else row[1:]
    pairs = tuple(RelationCounts(rest[2 * i], rest[2 * i + 1]) for i in range(len(relations)))
    return TableScan(row[0], *figures, relations=pairs)


def _relation_counts(plan: Plan, rel: Relation, i: int, names: dict[str, Any]) -> list[sql.Composed]:
    """The two FILTER counts of a reference (its parent joined as `p<i>`, its error records
    as `e<i>`)."""
    return [
        sql.SQL("count(*) FILTER (WHERE {c}.{target} IS DISTINCT FROM {p}.{u})").format(
            c=names["c"], target=sql.Identifier(rel.uuid_column), p=_alias("p", i), u=names["u"]
        ),
        sql.SQL(
            "count(*) FILTER (WHERE {c}.{col} IS NOT NULL AND {p}.{pk} IS NULL AND {e}.row_id IS NULL)"
        ).format(
            c=names["c"], col=sql.Identifier(rel.column), p=_alias("p", i),
            pk=sql.Identifier(plan.parent_column(rel)), e=_alias("e", i),
        ),
    ]  # fmt: skip


def _relation_joins(
    plan: Plan, rel: Relation, i: int, names: dict[str, Any]
) -> tuple[list[sql.Composed], list[str]]:
    """The parent row a reference names (compared as the foreign key compares), and the
    row's error record for the column, if any; with the parameters of the second. A join,
    not a correlated `NOT EXISTS`: that would keep the scan from running in parallel."""
    value = rel.compared(sql.SQL("{}.{}").format(ROW, sql.Identifier(rel.column)))
    parent = sql.SQL("LEFT JOIN {t} AS {p} ON {p}.{pk} = {value}").format(
        t=plan.qualified(rel.parent), p=_alias("p", i), pk=sql.Identifier(plan.parent_column(rel)),
        value=value,
    )  # fmt: skip
    recorded = sql.SQL(
        "LEFT JOIN (SELECT DISTINCT row_id FROM {errors} WHERE table_name = %s "
        "AND column_name = %s AND row_id IS NOT NULL) AS {e} ON {e}.row_id = {row}"
    ).format(errors=error_records.ERRORS_TABLE, e=_alias("e", i), row=names["row"])
    return [parent, recorded], [rel.table, rel.column]


def _alias(kind: str, i: int) -> sql.Identifier:
    return sql.Identifier(f"{kind}{i}")


def mappings_by_table(cur: Any, plan: Plan, tables: list[str]) -> dict[str, int]:
    """How many id_mappings rows each table has (one pass over id_mappings)."""
    if not tables:
        return {}
    cur.execute(
        sql.SQL(
            "SELECT table_name, count(*) FROM {m} WHERE table_name = ANY(%s) GROUP BY 1"
        ).format(m=table_names(plan, tables[0])["m"]),
        (tables,),
    )
    found = {name: int(n) for name, n in cur.fetchall()}
    return {name: found.get(name, 0) for name in tables}
