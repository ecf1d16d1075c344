"""Validation reports in the seed's shape, built from set-based checks.

Each check is one SQL statement over a whole table; a report is the list of their results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql

from uuid_migrate import ledger
from uuid_migrate.batch_sql import qualified
from uuid_migrate.plan import UUID_COLUMN, Plan

#: Offending ids shown per failed check.
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class CheckResult:
    """One check: what was expected, what was found, and a few offending ids when it failed."""

    name: str
    table: str
    status: str
    expected: Any
    actual: Any
    sample: list[str] = field(default_factory=list)


def rows_without_uuid(cur: Any, plan: Plan, table: str) -> CheckResult:
    spec = plan.table(table)
    names = {
        "k": sql.Identifier(spec.key),
        "t": qualified(plan, table),
        "u": sql.Identifier(UUID_COLUMN),
    }
    cur.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {u} IS NULL").format(**names))
    missing = cur.fetchone()[0]
    sample: list[str] = []
    if missing:
        cur.execute(
            sql.SQL("SELECT {k}::text FROM {t} WHERE {u} IS NULL ORDER BY {k} LIMIT %s").format(
                **names
            ),
            (SAMPLE_SIZE,),
        )
        sample = [row[0] for row in cur.fetchall()]
    status = "passed" if missing == 0 else "failed"
    return CheckResult("rows_without_uuid", table, status, 0, missing, sample)


def table_summary(cur: Any, plan: Plan, run_id: str | None, table: str) -> dict[str, Any]:
    """The seed's per-table figures: total, migrated, failed, duration (ms)."""
    cur.execute(
        sql.SQL("SELECT count(*), count({u}) FROM {t}").format(
            u=sql.Identifier(UUID_COLUMN), t=qualified(plan, table)
        )
    )
    total, migrated = cur.fetchone()
    return {
        "total": total,
        "migrated": migrated,
        "failed": total - migrated,
        "duration": _duration_ms(cur, run_id, table),
    }


def _duration_ms(cur: Any, run_id: str | None, table: str) -> int | None:
    if run_id is None:
        return None
    cur.execute(
        "SELECT extract(epoch FROM max(b.finished_at) - min(b.started_at)) * 1000 "
        "FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "ON s.run_id = b.run_id AND s.stage = b.stage WHERE b.run_id = %s AND s.table_name = %s",
        (run_id, table),
    )
    value = cur.fetchone()[0]
    return int(value) if value is not None else None


def build_report(phase: str, checks: list[CheckResult], tables: dict[str, Any]) -> dict[str, Any]:
    """The seed's report: timestamp, overallStatus, summary, and our checks and tables."""
    passed = sum(1 for c in checks if c.status == "passed")
    return {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "phase": phase,
        "overallStatus": "passed" if passed == len(checks) else "failed",
        "summary": {"totalChecks": len(checks), "passed": passed, "failed": len(checks) - passed},
        "checks": [asdict(c) for c in checks],
        "tables": tables,
    }


def post_migration_report(cur: Any, plan: Plan, run_id: str | None) -> dict[str, Any]:
    """Checks after a run: here every migrated row has a UUID (issue 3 widens the set)."""
    tables = [t.name for t in plan.migrated()]
    checks = [rows_without_uuid(cur, plan, t) for t in tables]
    summary = {t: table_summary(cur, plan, run_id, t) for t in tables}
    return build_report("post", checks, summary)


def validate_run(cur: Any, run_id: str, plan: Plan) -> dict[str, Any]:
    """The chord's final step: build, store and return the post-migration report."""
    report = post_migration_report(cur, plan, run_id)
    ledger.store_report(cur, run_id, "post", report)
    return report
