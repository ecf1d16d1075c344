"""The run's last step: its post-migration report, built once the rows its scans find unswept
are swept, and the run closed by its verdict.

A stage that no other stage waits for is not swept when it closes (`sweep.swept_at_close`):
its table's scan here counts the same rows the sweep's look would find (rows without a UUID,
translations that differ from their parent's, orphans without their record), usually none,
so one pass over the table does both. When a scan counts some, in any table (a row that raced
with the triggers after its table's own sweep too), the stages of those tables are swept, with
every stage depending on them (a parent's new UUIDs make its children's translations stale),
and the report is built again, once: what is left then is the report's to name, a row the
application kept locked through the sweep's tries too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2

from uuid_migrate.execution import sweep
from uuid_migrate.execution.attempt import plan_of_run
from uuid_migrate.ledger import reports, runs
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage
from uuid_migrate.verification import scan_settings
from uuid_migrate.verification.report import FAILED, POST
from uuid_migrate.verification.validation import post_migration_report

#: The checks that fail on rows a stage's statement would still write: the sweep's rows.
SWEPT_CHECKS = ("rows_without_uuid", "id_mappings_one_per_row")
SWEPT_REFERENCE_CHECKS = ("references_translated", "orphans_recorded")


def finish_validation(
    conn: Any, run_id: str, lock_timeout_ms: int = sweep.SWEEP_LOCK_TIMEOUT_MS,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:  # fmt: skip
    """Build and store the post-migration report, then close the run by its verdict; None
    for a duplicate delivery or a run rolled back meanwhile."""
    with conn.cursor() as cur:
        known = plan_of_run(cur, run_id)
    conn.commit()
    if known is not None:  # before the run's lock: its own short transaction
        scan_settings.refresh_mapping_statistics(conn, known[0])
    swept = False
    while True:
        with conn.cursor() as cur:
            runs.lock_run(cur, run_id)
            run = runs.get_run(cur, run_id)
            known = plan_of_run(cur, run_id)
            if known is None or run["status"] != RunStatus.VALIDATING:
                conn.rollback()
                return None
            plan, stage_map = known
            report = post_migration_report(cur, plan, run_id)
            owed = [] if swept else unswept_stages(plan, stage_map, report)
            if not owed:
                reports.store(cur, run_id, POST, report)
                runs.finish_validation(cur, run_id, passed=report["overallStatus"] == "passed")
                conn.commit()
                return report
        conn.rollback()  # the run's lock is not held while the sweeps wait for row locks
        if not _sweep(conn, plan, owed, run_id, lock_timeout_ms, sleep):
            return None  # rolled back meanwhile
        swept = True


def _sweep(
    conn: Any, plan: Plan, owed: list[Stage], run_id: str, lock_timeout_ms: int,
    sleep: Callable[[float], None],
) -> bool:  # fmt: skip
    """Sweep each stage; False once a rollback fenced the run. A stage whose rows stay locked
    through every try is left as it is, for the report to name."""
    for stage in owed:
        try:
            if sweep.sweep_stage(conn, plan, stage, run_id, lock_timeout_ms, sleep) is None:
                return False
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
    return True


def unswept_stages(plan: Plan, stage_map: dict[str, Stage], report: dict[str, Any]) -> list[Stage]:
    """The stages, in their order, of the tables whose checks failed on rows to sweep, and
    every stage depending on one of them."""
    by_reference = {f"{r.table}.{r.column}": r.table for r in plan.relations}
    tables = set()
    for check in report["checks"]:
        if check["status"] != FAILED:
            continue
        if check["name"] in SWEPT_CHECKS:
            tables.add(check["table"])
        elif check["name"] in SWEPT_REFERENCE_CHECKS and check["table"] in by_reference:
            tables.add(by_reference[check["table"]])
    owed: list[Stage] = []
    for stage in stage_map.values():  # parents first: one pass reaches every dependent
        if stage.table in tables or any(s.name in stage.depends_on for s in owed):
            owed.append(stage)
    return owed
