"""One pass over a table for every post-migration count: FILTER aggregates over the table
joined to the parent of each reference checked, and, in the same statement (one snapshot),
the table's rows of id_mappings.

Whether each row's mapping names its `uuid_id` is first checked without joining id_mappings:
the pairs (row id, `uuid_id`) of the table's rows that have one and the pairs (old_id, new_id)
of its mappings are compared as two sets, by their number and the sum of a 64-bit hash of
each pair. Equal, they are the same pairs (unless the differing pairs' hashes happen to sum to
the same total, as unlikely as two 64-bit hashes colliding): every row with a UUID has its
mapping naming it, no row without one has a mapping, no mapping is left of a deleted row.
That saves hashing the whole table against its mappings, which is most of a scan's cost.
When they differ (a deleted row's mapping, a broken one), the scan runs again joined to
id_mappings and counts exactly.

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
    #: The table's rows of id_mappings, those of deleted rows included.
    mappings: int | None = None


def scan_table(
    cur: Any, plan: Plan, table: str, with_uuid: bool, relations: tuple[Relation, ...]
) -> TableScan:
    """Count everything the checks of `table` need: one statement, two when its pairs and
    its mappings' differ."""
    if not with_uuid:
        row = _scan(cur, plan, table, [], relations)
        return TableScan(row[0], relations=_relation_pairs(row[1:], relations))
    names = table_names(plan, table)
    pairs = [
        sql.SQL("count({c}.{u})").format(**names),
        sql.SQL("coalesce(sum({h}) FILTER (WHERE {c}.{u} IS NOT NULL), 0)").format(
            h=_pair_hash(names["row"], sql.SQL("{c}.{u}").format(**names)), **names
        ),
    ]
    row = _scan(cur, plan, table, pairs, relations, with_mapping_hash=True)
    total, migrated, pair_sum, *rest = row
    counted, mappings, mapping_sum = rest[:-2], rest[-2], rest[-1]
    if (migrated, pair_sum) == (mappings, mapping_sum):
        found = _relation_pairs(counted, relations)
        return TableScan(total, migrated, 0, migrated, found, mappings)
    return _exact(cur, plan, table, relations)


def _exact(cur: Any, plan: Plan, table: str, relations: tuple[Relation, ...]) -> TableScan:
    """The scan joined to id_mappings: each row's mapping looked up."""
    names = table_names(plan, table)
    joined = [
        sql.SQL("count({c}.{u})").format(**names),
        sql.SQL("count(*) FILTER (WHERE mp.new_id IS DISTINCT FROM {c}.{u})").format(**names),
        sql.SQL("count(mp.old_id)"),
    ]
    row = _scan(cur, plan, table, joined, relations, join_mappings=True)
    total, migrated, disagreeing, mapped, *rest = row
    found = _relation_pairs(rest[:-1], relations)
    return TableScan(total, migrated, disagreeing, mapped, found, rest[-1])


def _scan(
    cur: Any, plan: Plan, table: str, columns: list[sql.Composable],
    relations: tuple[Relation, ...], join_mappings: bool = False, with_mapping_hash: bool = False,
) -> list[Any]:  # fmt: skip
    """One statement: count(*), `columns` and each reference's counts over the table (joined
    to its mappings with `join_mappings`); then, with a `uuid_id`, the table's mappings:
    their number (and the sum of their pairs' hashes with `with_mapping_hash`)."""
    names = table_names(plan, table)
    counts, joins, params = [sql.SQL("count(*)"), *columns], [], []
    if join_mappings:
        joins.append(
            sql.SQL("LEFT JOIN {m} AS mp ON mp.table_name = %s AND mp.old_id = {row}").format(
                **names
            )
        )
        params.append(table)
    for i, rel in enumerate(relations):
        counts += _relation_counts(plan, rel, i, names)
        found, values = _relation_joins(plan, rel, i, names)
        joins += found
        params += values
    query = sql.SQL("SELECT {} FROM {} AS {} {}").format(
        sql.SQL(", ").join(counts), names["t"], ROW, sql.SQL(" ").join(joins)
    )
    if columns:
        query, params = _with_mappings(query, params, names, table, with_mapping_hash)
    cur.execute(query, params)
    return [int(v) for v in cur.fetchone()]  # the sums are exact numerics


def _with_mappings(
    query: sql.Composed, params: list[Any], names: dict[str, Any], table: str, hashed: bool
) -> tuple[sql.Composed, list[Any]]:
    """The scan beside the table's mappings (counted, and their pairs' hashes summed)."""
    pair = _pair_hash(sql.SQL("mp.old_id"), sql.SQL("mp.new_id"))
    mapping_sum = sql.SQL(", coalesce(sum({}), 0)").format(pair) if hashed else sql.SQL("")
    joined = sql.SQL(
        "SELECT s.*, m.* FROM ({scan}) AS s, "
        "(SELECT count(*){sum} FROM {m} AS mp WHERE mp.table_name = %s) AS m"
    ).format(scan=query, sum=mapping_sum, m=names["m"])
    return joined, [*params, table]


def _pair_hash(row_id: sql.Composable, uuid: sql.Composable) -> sql.Composed:
    """A 64-bit hash of (row id, UUID) as one text: the UUID's text has a fixed length, so the
    pair is never ambiguous. Under "C": a nondeterministic collation of an application's
    id_mappings.old_id would hash ids equal but for case alike."""
    return sql.SQL('hashtextextended(({} || {}::text) COLLATE "C", 0)').format(row_id, uuid)


def _relation_pairs(values: list[int], relations: tuple[Relation, ...]) -> tuple[RelationCounts, ...]:
    return tuple(RelationCounts(values[2 * i], values[2 * i + 1]) for i in range(len(relations)))


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
