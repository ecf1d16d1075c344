"""`uuid-migrate validate`: the report for the phase the database is in, stored in the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config.settings import Settings
from producer.planner import live_home
from producer.status_command import pick_run
from uuid_migrate import db
from uuid_migrate.ledger import reports
from uuid_migrate.plan import catalog, discovery, plan_file
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.plan_data import from_dict
from uuid_migrate.verification import scan_settings
from uuid_migrate.verification.report import PRE
from uuid_migrate.verification.validation import phase_of, validate_database


def validate(
    settings: Settings,
    plan_path: str | None = None,
    schemas: Sequence[str] | None = None,
    run_id: str | None = None,
) -> dict:
    """Validate the database as it is now, for the run (the latest one by default); the
    report is stored when the ledger exists."""
    with db.connection(settings.require_database()) as conn:
        with conn.cursor() as cur:
            run = pick_run(cur, run_id)
            plan = plan_to_check(cur, run, plan_path, schemas)
        conn.commit()
        scan_settings.refresh_mapping_statistics(conn, plan)
        with conn.cursor() as cur:
            report = validate_database(cur, plan, run)
            if run is not None:
                reports.store(cur, run["run_id"], report["phase"], report)
    return report


def plan_to_check(
    cur: Any, run: dict[str, Any] | None, plan_path: str | None, schemas: Sequence[str] | None
) -> Plan:
    """The plan named, else the run's, else the one discovered from the catalog."""
    if plan_path:
        return catalog.complete(cur, plan_file.load(plan_path))
    if run is not None and phase_of(run) != PRE:
        return from_dict(run["plan"], stored=True)
    return discovery.discover(cur, schemas, live_home(cur))
