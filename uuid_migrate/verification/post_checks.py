"""Post-migration checks: every row has its UUID, mappings agree, references are translated.

The same checks serve a run still in progress: integrity checks (uniqueness, mappings that
agree, translations that agree) hold at every moment, since a batch writes a row's UUID, its
mapping and its translations in one statement; completeness checks apply to finished tables.

Each check counts on its own, or takes the count from a table's single scan (`table_scan`)
and then only looks for the sample ids when something is wrong.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.ledger import error_records, figures
from uuid_migrate.plan.model import Plan, Relation
from uuid_migrate.schema.mapping_table import MAPPING_INDEXES, MappingIndex
from uuid_migrate.schema.steps import AddColumn, same_type, uuid_index
from uuid_migrate.verification.check_sql import ROW, offending, table_names
from uuid_migrate.verification.report import CheckResult, info, verdict


def rows_without_uuid(cur: Any, plan: Plan, table: str, found: int | None = None) -> CheckResult:
    names = table_names(plan, table)
    source = sql.SQL("{t} AS {c} WHERE {c}.{u} IS NULL").format(**names)
    found, sample = offending(cur, source, sql.SQL("{c}.{k}").format(**names), (), found)
    return verdict("rows_without_uuid", table, 0, found, sample)


def uuid_unique(cur: Any, plan: Plan, table: str, all_agree: bool = False) -> CheckResult:
    """Rows sharing a `uuid_id` with another row, checked without trusting the table's index.

    `all_agree`: every row's `uuid_id` is its mapping's `new_id` (or both are missing). Rows
    have distinct ids, so distinct mappings, and a valid unique index keeps id_mappings'
    `new_id` unique: no two rows can share a UUID then, and the table is not grouped."""
    if all_agree and MappingIndex(plan.schema, *MAPPING_INDEXES[1]).exists(cur):
        return verdict("uuid_unique", table, 0, 0, [])
    names = table_names(plan, table)
    source = sql.SQL(
        "{t} AS {c} WHERE {c}.{u} IN "
        "(SELECT x.{u} FROM {t} AS x WHERE x.{u} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)"
    ).format(**names)
    found, sample = offending(cur, source, sql.SQL("{c}.{k}").format(**names))
    return verdict("uuid_unique", table, 0, found, sample)


def mappings_agree(cur: Any, plan: Plan, table: str, found: int | None = None) -> CheckResult:
    """Rows whose id_mappings row is missing or names another UUID (or none where one is set)."""
    names = table_names(plan, table)
    source = sql.SQL(
        "{t} AS {c} LEFT JOIN {m} AS mp ON mp.table_name = %s AND mp.old_id = {row} "
        "WHERE mp.new_id IS DISTINCT FROM {c}.{u}"
    ).format(**names)
    found, sample = offending(cur, source, sql.SQL("{c}.{k}").format(**names), (table,), found)
    return verdict("id_mappings_agree", table, 0, found, sample)


def mappings_one_per_row(
    cur: Any, plan: Plan, table: str, rows: int, mapped: int | None = None
) -> CheckResult:
    """Every row has its mapping (at most one per old id: id_mappings is unique on it)."""
    names = table_names(plan, table)
    source = sql.SQL(
        "{t} AS {c} WHERE NOT EXISTS "
        "(SELECT 1 FROM {m} AS mp WHERE mp.table_name = %s AND mp.old_id = {row})"
    ).format(**names)
    missing = None if mapped is None else rows - mapped
    key = sql.SQL("{c}.{k}").format(**names)
    missing, sample = offending(cur, source, key, (table,), missing)
    return verdict("id_mappings_one_per_row", table, rows, rows - missing, sample)


def mappings_of_deleted_rows(
    cur: Any, plan: Plan, table: str, found: int | None = None
) -> CheckResult:
    """Mappings whose row no longer exists: history (a deleted row's mapping stays), a
    figure, never a failure. `found`: the table's mappings less those a row has."""
    if found is not None:
        return info("id_mappings_of_deleted_rows", table, found)
    names = table_names(plan, table)
    source = sql.SQL(
        "{m} AS mp WHERE mp.table_name = %s AND NOT EXISTS "
        "(SELECT 1 FROM {t} AS {c} WHERE {row} = mp.old_id)"
    ).format(**names)
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(source), (table,))
    return info("id_mappings_of_deleted_rows", table, int(cur.fetchone()[0]))


def references_translated(
    cur: Any, plan: Plan, rel: Relation, found: int | None = None
) -> CheckResult:
    """Every `<ref>_uuid_id` equals its parent's `uuid_id`; NULL exactly where no parent exists."""
    names = table_names(plan, rel.table)
    source = sql.SQL(
        "{t} AS {c} LEFT JOIN {parent} AS p ON p.{pk} = {value} "
        "WHERE {c}.{target} IS DISTINCT FROM p.{u}"
    ).format(**_relation_names(plan, rel), **names)
    found, sample = offending(cur, source, names["row"], (), found)
    return verdict("references_translated", f"{rel.table}.{rel.column}", 0, found, sample)


def orphans_recorded(cur: Any, plan: Plan, rel: Relation, found: int | None = None) -> CheckResult:
    """Every orphaned reference has its error record."""
    names = table_names(plan, rel.table)
    source = sql.SQL(
        "{t} AS {c} WHERE {c}.{col} IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{pk} = {value}) "
        "AND NOT {recorded}"
    ).format(
        recorded=error_records.recorded_for(names["row"]),
        **_relation_names(plan, rel),
        **names,
    )
    found, sample = offending(cur, source, names["row"], (rel.table, rel.column), found)
    return verdict("orphans_recorded", f"{rel.table}.{rel.column}", 0, found, sample)


def extra_columns_present(cur: Any, plan: Plan, table: str) -> list[CheckResult]:
    checks = []
    for extra in plan.table(table).extra_columns:
        step = AddColumn(*plan.where(table), extra.name, extra.type)
        found = step.existing_type(cur)
        ok = found is not None and same_type(cur, found, extra.type)
        actual = extra.type if ok else (found or "missing")
        checks.append(verdict("extra_column", f"{table}.{extra.name}", extra.type, actual, [extra.name]))
    return checks


def uuid_index_valid(cur: Any, plan: Plan, table: str) -> CheckResult:
    index = uuid_index(plan, table)
    validity = index.validity(cur)
    actual = {None: "missing", False: "invalid", True: "valid"}[validity]
    return verdict("uuid_index_valid", table, "valid", actual, [index.name])


def batches_finished(cur: Any, run_id: str, states: tuple[str, ...]) -> CheckResult:
    """No batch of the run in one of `states`; names them as stage#batch (range)."""
    found, sample = figures.batches_in(cur, run_id, states, 10)
    return verdict("batches_finished", "*", 0, found, sample)


def _relation_names(plan: Plan, rel: Relation) -> dict[str, sql.Composable]:
    return {
        "col": sql.Identifier(rel.column),
        "target": sql.Identifier(rel.uuid_column),
        "parent": plan.qualified(rel.parent),
        "pk": sql.Identifier(plan.parent_column(rel)),
        # The reference as the parent's column compares it (its collation).
        "value": rel.compared(sql.SQL("{}.{}").format(ROW, sql.Identifier(rel.column))),
    }
