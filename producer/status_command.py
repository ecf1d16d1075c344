"""`status` and `runs`: what the ledger says about one run, and the list of every run."""

from __future__ import annotations

import contextlib
from typing import Any

from config.settings import Settings
from uuid_migrate import db
from uuid_migrate.errors import ConnectionFailed, RunStateError
from uuid_migrate.ledger import reports, runs, stages, throttles
from uuid_migrate.plan.plan_data import from_dict
from uuid_migrate.progression import checkpoint
from uuid_migrate.redis_store import client, throttled
from uuid_migrate.schema import triggers
from uuid_migrate.timestamps import iso


def pick_run(cur: Any, run_id: str | None) -> dict[str, Any] | None:
    """The run named (or refused when unknown), else the latest one (None when none)."""
    if run_id is None:
        return runs.latest_run(cur)
    run = runs.get_run(cur, run_id)
    if run is None:
        raise RunStateError(f"no run {run_id} in this database; `uuid-migrate runs` lists them")
    return run


def status(settings: Settings, run_id: str | None = None) -> dict[str, Any]:
    """The run's status, its checkpoint per stage and its newest validation report, and why
    its workers are throttled now, if they are."""
    found = status_for_url(settings.require_database(), run_id)
    if found["run"] is not None:
        with contextlib.suppress(ConnectionFailed):  # Redis away: nothing to say
            found["throttled"] = throttled(client(settings.redis_url), found["run"])
    return found


def status_for_url(url: str, run_id: str | None = None) -> dict[str, Any]:
    with db.connection(url) as conn, conn.cursor() as cur:
        run = pick_run(cur, run_id)
        if run is None:
            return {"run": None, "status": "none", "tables": [], "triggers": []}
        run_id = run["run_id"]
        checkpoints = [checkpoint.build(cur, run_id, s) for s in stages.stages(cur, run_id)]
        report = reports.latest(cur, run_id)
        budget = throttles.rate_of(cur, run_id)
        kept_in_step = triggers.installed(cur, from_dict(run["plan"], stored=True))
    paused = runs.is_active(run) and run["paused"]
    return {
        "run": run_id,
        "status": "paused" if paused else run["status"],
        "message": run["message"],
        "startedAt": iso(run["created_at"]),
        "finishedAt": iso(run["finished_at"]),
        "tables": checkpoints,
        "triggers": kept_in_step,
        "validation": report,
        "maxRowsPerSecond": budget or None,
        "throttled": None,
    }


def list_runs(settings: Settings) -> list[dict[str, Any]]:
    """Every run, newest first: id, state, tables, rows done of planned, start and end."""
    with db.connection(settings.require_database()) as conn, conn.cursor() as cur:
        found = runs.all_runs(cur)
    return [
        {
            "run": r["run_id"],
            "status": "paused" if runs.is_active(r) and r["paused"] else r["status"],
            "tables": [t["name"] for t in r["plan"].get("tables", [])],
            "rowsDone": r["rows_done"],
            "rowsPlanned": r["rows_planned"],
            "startedAt": iso(r["created_at"]),
            "finishedAt": iso(r["finished_at"]),
            "message": r["message"],
        }
        for r in found
    ]
