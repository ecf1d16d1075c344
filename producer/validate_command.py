"""`uuid-migrate validate`: the report for the phase the database is in, stored in the ledger."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from uuid_migrate import catalog, db, ledger, planfile
from uuid_migrate.plan import Plan, from_dict
from uuid_migrate.report import PRE
from uuid_migrate.validation import phase_of, validate_database


def validate(settings: Settings, plan_file: str | None = None, schema: str = "public") -> dict:
    """Validate the database as it is now; the report is stored when the ledger exists."""
    with db.connection(settings.require_database()) as conn, conn.cursor() as cur:
        run = ledger.latest_run(cur)
        plan = plan_to_check(cur, run, plan_file, schema)
        report = validate_database(cur, plan, run)
        if run is not None:
            ledger.store_report(cur, run["run_id"], report["phase"], report)
    return report


def plan_to_check(cur: Any, run: dict[str, Any] | None, plan_file: str | None, schema: str) -> Plan:
    """The plan named, else the latest run's, else the one discovered from the catalog."""
    if plan_file:
        return catalog.complete(cur, planfile.load(plan_file))
    if run is not None and phase_of(run) != PRE:
        return from_dict(run["plan"])
    return catalog.discover(cur, schema)
