"""Baseline checks, before a migration: is the plan possible, and what is odd in the data.

Orphaned references and suspicious ids are warnings: the migration handles them (an orphan
keeps a NULL translation and an error record) but a person should know before it starts.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import regclass_text
from uuid_migrate.plan.catalog import STRING_TYPES, primary_key_columns, primary_keys
from uuid_migrate.plan.model import Plan, Relation
from uuid_migrate.schema import adoption
from uuid_migrate.schema.apply import created_by_live_runs
from uuid_migrate.schema.steps import target_conflicts
from uuid_migrate.verification import guards
from uuid_migrate.verification.check_sql import count_rows, offending, table_names
from uuid_migrate.verification.report import (
    FAILED,
    PASSED,
    WARNING,
    CheckResult,
    info,
    left_alone,
    notice,
)


def baseline_checks(cur: Any, plan: Plan) -> tuple[list[CheckResult], set[str]]:
    """Every baseline check of the plan, and the tables that exist to be looked at."""
    keys = primary_keys(cur, plan)
    checks = [key_check(cur, plan, t.name, keys) for t in plan.tables]
    present = {c.table for c in checks if c.status == PASSED}
    for table in plan.tables:
        if table.name in present:
            checks.append(info("row_count", table.name, count_rows(cur, plan, table.name)))
    for table in plan.migrated():
        if table.name in present:
            checks.append(suspicious_ids(cur, plan, table.name))
    for rel in plan.relations:
        if {rel.table, rel.parent} <= present:
            checks.append(orphaned_references(cur, plan, rel))
    checks.append(targets_free(cur, plan))
    checks += [_obstacle_check(o) for o in guards.obstacles(cur, plan)]
    return checks + left_alone(plan), present


_LEVEL_STATUS = {"refusal": FAILED, "warning": WARNING, "note": PASSED}


def _obstacle_check(found: guards.Obstacle) -> CheckResult:
    """What `run` would refuse fails the report; what it accepts or silences is shown."""
    return CheckResult(found.check, found.table, _LEVEL_STATUS[found.level], "none", found.problem)


def key_check(
    cur: Any, plan: Plan, table: str, keys: dict[str, tuple[str, str, str]]
) -> CheckResult:
    """The table exists with its key: a single string column if migrated, the plan's
    composite key if it has one."""
    spec = plan.table(table)
    if not spec.migrate and not spec.key:  # a composite key, or none (block ranges)
        return _other_key_check(cur, plan, table)
    wanted = "single-column string primary key" if spec.migrate else "single-column primary key"
    if table not in keys:
        return CheckResult("primary_key", table, FAILED, wanted, "missing table or key", [table])
    column, declared, base = keys[table]
    ok = (not spec.migrate or base in STRING_TYPES) and (not spec.key or spec.key == column)
    return CheckResult("primary_key", table, PASSED if ok else FAILED, wanted, f"{column} {declared}")


def _other_key_check(cur: Any, plan: Plan, table: str) -> CheckResult:
    spec = plan.table(table)
    wanted = f"({', '.join(spec.key_columns)})" if spec.key_columns else "no primary key"
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (regclass_text(*plan.where(table)),))
    if not cur.fetchone()[0]:
        return CheckResult("primary_key", table, FAILED, wanted, "missing table", [table])
    found = primary_key_columns(cur, *plan.where(table))
    actual = f"({', '.join(found)})" if found else "no primary key"
    return CheckResult("primary_key", table, PASSED if actual == wanted else FAILED, wanted, actual)


def suspicious_ids(cur: Any, plan: Plan, table: str) -> CheckResult:
    """Empty ids, and ids equal to another but for case or surrounding whitespace."""
    names = table_names(plan, table)
    # A join with the (small) set of folded duplicates: `OR ... IN (subquery)` would make
    # PostgreSQL re-run the subquery per row once its hash outgrows work_mem.
    source = sql.SQL(
        "{t} AS {c} LEFT JOIN (SELECT lower(btrim(x.{k}::text)) AS folded FROM {t} AS x "
        "GROUP BY 1 HAVING count(*) > 1) AS d ON d.folded = lower(btrim({c}.{k}::text)) "
        "WHERE {c}.{k}::text = '' OR d.folded IS NOT NULL"
    ).format(**names)
    found, sample = offending(cur, source, sql.SQL("{c}.{k}").format(**names))
    return notice("suspicious_ids", table, found, sample)


def orphaned_references(cur: Any, plan: Plan, rel: Relation) -> CheckResult:
    """Child rows whose reference names no parent row (as providers -> clinics, which has no constraint)."""
    names = table_names(plan, rel.table)
    source = sql.SQL(
        "{t} AS {c} WHERE {c}.{col} IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM {parent} AS p WHERE p.{pk} = {value})"
    ).format(
        col=sql.Identifier(rel.column),
        value=rel.compared(sql.SQL("{}.{}").format(names["c"], sql.Identifier(rel.column))),
        parent=plan.qualified(rel.parent),
        pk=sql.Identifier(plan.parent_column(rel)),
        **names,
    )
    found, sample = offending(cur, source, names["row"])
    return notice("orphaned_references", f"{rel.table}.{rel.column}", found, sample)


def targets_free(cur: Any, plan: Plan) -> CheckResult:
    """No column the migration adds exists already with another type."""
    conflicts = target_conflicts(cur, plan, created_by_live_runs(cur))
    conflicts = conflicts or adoption.problems(cur, plan)
    status = FAILED if conflicts else PASSED
    return CheckResult("target_columns_free", "*", status, [], conflicts, conflicts[:10])
