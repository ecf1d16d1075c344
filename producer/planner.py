"""Plan -> checks -> additive DDL -> key ranges -> ledger, all before anything is enqueued.

Each step commits on its own and is recorded, so a producer killed at any point resumes the
same run: DDL already applied is skipped, a stage whose planning was cut short is planned again.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2.extras import Json

from uuid_migrate import ledger
from uuid_migrate.ddl import AddColumn, CreateMappingTable, Step, additive_steps, step_to_dict
from uuid_migrate.errors import LockBusy, PlanError, RunStateError
from uuid_migrate.keywalk import walk_ranges
from uuid_migrate.plan import Plan, from_dict, to_dict
from uuid_migrate.stages import stages

#: Tries to take a DDL lock before giving up; each waits lock_timeout, then backs off.
DDL_LOCK_ATTEMPTS = 5
#: Batches written to the ledger per commit while walking a key.
LEDGER_CHUNK = 1000


def column_types(plan: Plan) -> dict[tuple[str, str], str]:
    return {(t.name, c.name): c.type for t in plan.tables for c in t.extra_columns}


def check_targets(cur: Any, plan: Plan) -> None:
    """Refuse, before changing anything, columns that already exist with another type."""
    for step in additive_steps(plan, column_types(plan)):
        if isinstance(step, AddColumn):
            found = step.existing_type(cur)
            if found is not None and not _same_type(cur, found, step.type):
                raise PlanError(
                    f"column {step.table}.{step.column} already exists as {found}, not {step.type}"
                )
        elif isinstance(step, CreateMappingTable) and step.exists(cur):
            _check_mapping_table(cur, plan.schema)


def _same_type(cur: Any, found: str, wanted: str) -> bool:
    cur.execute(
        "SELECT format_type(to_regtype(%s), NULL) = format_type(to_regtype(%s), NULL)",
        (found, wanted),
    )
    return bool(cur.fetchone()[0])


def _check_mapping_table(cur: Any, schema: str) -> None:
    cur.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'id_mappings' AND column_name IN ('table_name', 'old_id', 'new_id')",
        (schema,),
    )
    if cur.fetchone()[0] != 3:
        raise PlanError(
            f"{schema}.id_mappings exists but is not a (table_name, old_id, new_id) table"
        )


def open_run(conn: Any, plan: Plan | None, batch_size: int) -> tuple[str, Plan, bool]:
    """The active run to resume, or a new one for `plan`; returns (run id, plan, resumed)."""
    with conn.cursor() as cur:
        ledger.ensure_schema(cur)
        active = ledger.latest_run(cur)
        if active and active["status"] in ledger.ACTIVE_RUN_STATES:
            stored = from_dict(active["plan"])
            if plan is not None and to_dict(plan) != to_dict(stored):
                raise RunStateError(
                    f"run {active['run_id']} is still in progress with another plan; "
                    "let it finish (uuid-migrate run resumes it) before changing the plan"
                )
            conn.commit()
            return active["run_id"], stored, True
        if plan is None:
            raise RunStateError("no run in progress and no plan given")
        check_targets(cur, plan)
        run_id = ledger.new_run_id()
        ledger.create_run(cur, run_id, to_dict(plan), batch_size)
        for position, stage in enumerate(stages(plan)):
            ledger.add_stage(cur, run_id, position, stage)
    conn.commit()
    return run_id, plan, False


def apply_additive_ddl(conn: Any, run_id: str, plan: Plan, lock_timeout_ms: int) -> None:
    """Every additive step, each in its own short transaction with its ledger record."""
    with conn.cursor() as cur:
        cur.execute("SELECT position FROM uuid_migration.ddl_steps WHERE run_id = %s", (run_id,))
        done = {row[0] for row in cur.fetchall()}
    conn.commit()
    for position, step in enumerate(additive_steps(plan, column_types(plan))):
        if position not in done:
            _apply_step(conn, run_id, position, step, lock_timeout_ms)


def _apply_step(conn: Any, run_id: str, position: int, step: Step, lock_timeout_ms: int) -> None:
    for attempt in range(DDL_LOCK_ATTEMPTS):
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = %s", (lock_timeout_ms,))
                created = not step.exists(cur)
                cur.execute(step.forward())
                cur.execute(
                    "INSERT INTO uuid_migration.ddl_steps (run_id, position, step, created) "
                    "VALUES (%s, %s, %s, %s)",
                    (run_id, position, Json(step_to_dict(step)), created),
                )
            conn.commit()
            return
        except psycopg2.errors.LockNotAvailable:
            conn.rollback()
            time.sleep(min(2**attempt * 0.5, 8))
    target = getattr(step, "table", "id_mappings")
    raise LockBusy(
        f"could not lock {target} within {lock_timeout_ms} ms after {DDL_LOCK_ATTEMPTS} tries: "
        "a long transaction holds it; run again when it has finished"
    )


def plan_batches(conn: Any, run_id: str, plan: Plan, default_size: int) -> None:
    """Walk each stage's table key into ranges and write them, unless already planned."""
    with conn.cursor() as cur:
        pending = [s for s in ledger.stages(cur, run_id) if not s["planned"]]
    conn.commit()
    for stage in pending:
        _plan_stage(conn, run_id, plan, stage["stage"], stage["table"], default_size)


def _plan_stage(conn: Any, run_id: str, plan: Plan, stage: str, table: str, default: int) -> None:
    spec = plan.table(table)
    size = plan.batch_size_of(table, default)
    with conn.cursor() as cur:
        ledger.reset_unplanned_stage(cur, run_id, stage)
        count, total, chunk = 0, 0, []
        for key_range, rows in walk_ranges(cur, plan.schema, table, spec.key, size):
            chunk.append((key_range, rows))
            total += rows
            if len(chunk) >= LEDGER_CHUNK:
                ledger.add_batches(cur, run_id, stage, count, chunk)
                conn.commit()  # no long transaction holding back vacuum while walking
                count += len(chunk)
                chunk = []
        ledger.add_batches(cur, run_id, stage, count, chunk)
        ledger.mark_stage_planned(cur, run_id, stage, count + len(chunk), total)
    conn.commit()


def mark_running(conn: Any, run_id: str) -> None:
    with conn.cursor() as cur:
        ledger.set_run_status(cur, run_id, ledger.RUNNING, expect=(ledger.PLANNING,))
    conn.commit()
