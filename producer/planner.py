"""Plan -> checks -> additive DDL -> key ranges -> ledger, all before anything is enqueued.

Each step commits on its own and is recorded, so a producer killed at any point resumes the
same run: DDL already applied is skipped, a stage whose planning was cut short is planned again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from uuid_migrate.errors import PlanError, RunStateError
from uuid_migrate.ledger import (
    batch_middles,
    batches,
    runs,
    snapshots,
    stages,
    step_records,
    tables,
    throttles,
)
from uuid_migrate.ledger.added_mappings import SNAPSHOT_NAME
from uuid_migrate.plan import batch_sizes
from uuid_migrate.plan.cuts import Cut, cut_of
from uuid_migrate.plan.keywalk import rows_in, walk_ranges
from uuid_migrate.plan.model import MAPPING_TABLE, Plan
from uuid_migrate.plan.plan_data import from_dict, to_dict
from uuid_migrate.plan.ranges import KeyRange
from uuid_migrate.plan.stages import stages as plan_stages
from uuid_migrate.schema import adoption
from uuid_migrate.schema.apply import apply_step, created_by_live_runs
from uuid_migrate.schema.steps import (
    CreateMappingTable,
    additive_steps,
    step_from_dict,
    target_conflicts,
)
from uuid_migrate.verification import guards, snapshot

#: Batches written to the ledger per commit while walking a key.
LEDGER_CHUNK = 1000


def check_before_any_change(cur: Any, plan: Plan, allow_triggers: bool = False) -> None:
    """Refuse, before changing anything (the ledger included), what would make the migration
    wrong or stuck: columns in the way, triggers, row-level security, publications, privileges."""
    conflicts = target_conflicts(cur, plan, created_by_live_runs(cur))
    conflicts = conflicts or adoption.problems(cur, plan)  # values of a column of the right type
    if conflicts:
        raise PlanError(conflicts[0])
    refused = guards.refusal(guards.obstacles(cur, plan, allow_triggers))
    if refused:
        raise PlanError(refused)


def set_budget(conn: Any, run_id: str, rows_per_second: int) -> None:
    """The run's row budget from now on, for every worker (0: none)."""
    with conn.cursor() as cur:
        throttles.set_rate(cur, run_id, rows_per_second)
    conn.commit()


def live_home(cur: Any) -> str | None:
    """The plan schema (where id_mappings is) of the runs not rolled back, if any: a new run
    must share it, or the same table would have two names and two sets of mappings."""
    live = runs.live_runs(cur)
    return str(live[-1]["plan"].get("schema", "public")) if live else None


def open_run(
    conn: Any, plan: Plan | None, batch_size: int | None, allow_triggers: bool = False
) -> tuple[str, Plan, bool]:
    """The active run to resume, or a new one for `plan`; returns (run id, plan, resumed).

    `batch_size`: the size the user gave (a flag, the environment), kept in a new run's plan
    unless the plan names its own; None leaves each table its default size."""
    with conn.cursor() as cur:
        if tables.ledger_exists(cur):
            tables.ensure_schema(cur)  # a ledger of an older version gains what it lacks
        active = runs.latest_run(cur) if tables.ledger_exists(cur) else None
        if runs.is_active(active):
            stored = from_dict(active["plan"], stored=True)
            accepted = (
                replace(
                    plan,
                    allow_user_triggers=stored.allow_user_triggers,
                    batch_size=plan.batch_size or stored.batch_size,
                )
                if plan
                else None
            )
            if accepted is not None and to_dict(accepted) != to_dict(stored):
                raise RunStateError(
                    f"run {active['run_id']} is still in progress with another plan; "
                    "let it finish (uuid-migrate run resumes it) before changing the plan"
                )
            # looked at again: a trigger, a policy or a privilege may have changed meanwhile
            refused = guards.refusal(guards.obstacles(cur, stored, allow_triggers))
            if refused:
                raise PlanError(refused)
            conn.commit()
            return active["run_id"], stored, True
        if plan is None:
            raise RunStateError("no run in progress and no plan given")
        home = live_home(cur)
        if home is not None and plan.schema != home:
            raise PlanError(
                f"the plan's schema is {plan.schema!r}, but the runs not rolled back keep "
                f"id_mappings in {home!r}: use schema = {home!r}, or roll them back first"
            )
        check_before_any_change(cur, plan, allow_triggers)
        # accepted for the run, so its workers (also under another role) act on it
        plan = replace(plan, allow_user_triggers=plan.allow_user_triggers or allow_triggers)
        if plan.batch_size is None:
            plan = plan.with_batch_size(batch_size)
        tables.ensure_schema(cur)
        run_id = runs.new_run_id()
        runs.create_run(cur, run_id, to_dict(plan), plan.batch_size or batch_sizes.LARGEST)
        for position, stage in enumerate(plan_stages(plan)):
            stages.add_stage(cur, run_id, position, stage)
    conn.commit()
    return run_id, plan, False


def take_snapshots(conn: Any, run_id: str, plan: Plan) -> None:
    """Before the first change: each table's snapshot, unless an earlier live run holds one
    (that one shows the tables before the migration began), each committed on its own.

    An id_mappings the migration has not touched yet is the application's: its snapshot is
    what rollback restores, and the batches note the rows they add to it while it is held.
    """
    with conn.cursor() as cur:
        live = [r["run_id"] for r in runs.live_runs(cur)]
        have = set(snapshots.oldest(cur, live))
        targets = [(t.name, *plan.where(t.name)) for t in plan.tables]
        if _mapping_table_untouched(cur, plan, live):
            targets.append((SNAPSHOT_NAME, plan.schema, MAPPING_TABLE))
    conn.commit()
    for name, schema, table in targets:
        if name not in have:
            with conn.cursor() as cur:
                snapshot.capture(cur, run_id, schema, table, name)
            conn.commit()


def _mapping_table_untouched(cur: Any, plan: Plan, live: list[str]) -> bool:
    """id_mappings exists and no live run has applied its step (created or found it)."""
    step = CreateMappingTable(plan.schema)
    applied = {step_from_dict(data).identity() for data, _ in step_records.of_runs(cur, live)}
    return step.exists(cur) and step.identity() not in applied


def apply_additive_ddl(conn: Any, run_id: str, plan: Plan, lock_timeout_ms: int) -> None:
    """Every additive step not yet applied by the run, each in its own short transaction with
    its record; steps are known by what they are, so a resumed run skips exactly those done."""
    with conn.cursor() as cur:
        done = {step_from_dict(data).identity() for data, _ in step_records.of_runs(cur, [run_id])}
    conn.commit()
    for step in additive_steps(plan):
        if step.identity() not in done and not apply_step(conn, run_id, step, lock_timeout_ms):
            raise RunStateError(f"run {run_id} was stopped by a rollback; nothing more was changed")


def plan_batches(conn: Any, run_id: str, plan: Plan) -> None:
    """Walk each stage's table key into ranges and write them, unless already planned."""
    with conn.cursor() as cur:
        pending = [s for s in stages.stages(cur, run_id) if not s["planned"]]
    conn.commit()
    for stage in pending:
        _plan_stage(conn, run_id, plan, stage["stage"], stage["table"])


def _refuse_if_fenced(cur: Any, run_id: str) -> None:
    """A rollback (run with --force) stopped this run while we planned it: change nothing more.

    Under the same FOR KEY SHARE as a batch, so the rollback waits for this transaction.
    """
    if runs.run_is_fenced(cur, run_id):
        raise RunStateError(f"run {run_id} was stopped by a rollback; nothing more was changed")


def _plan_stage(conn: Any, run_id: str, plan: Plan, stage: str, table: str) -> None:
    cut = cut_of(plan.table(table))
    with conn.cursor() as cur:
        _refuse_if_fenced(cur, run_id)
        batches.clear_stage(cur, run_id, stage)
        batch_middles.clear_stage(cur, run_id, stage)
        size = plan.batch_size_of(table, 0) or _default_size(cur, plan, table, cut)
        count, total, chunk = 0, 0, []
        for key_range, rows, middle in walk_ranges(cur, *plan.where(table), cut, size):
            chunk.append((key_range, rows, middle))
            total += rows
            if len(chunk) >= LEDGER_CHUNK:
                _add_batches(cur, run_id, stage, count, chunk)
                conn.commit()  # no long transaction holding back vacuum while walking
                count += len(chunk)
                chunk = []
        _add_batches(cur, run_id, stage, count, chunk)
        stages.mark_planned(cur, run_id, stage, count + len(chunk), total)
    conn.commit()


def _add_batches(
    cur: Any, run_id: str, stage: str, first_no: int, chunk: list[tuple[KeyRange, int, str | None]]
) -> None:
    batches.add_batches(cur, run_id, stage, first_no, [(r, rows) for r, rows, _ in chunk])
    batch_middles.add(cur, run_id, stage, first_no, [middle for _, _, middle in chunk])


def _default_size(cur: Any, plan: Plan, table: str, cut: Cut) -> int:
    """The table's default batch size, from its rows (counted up to what decides it)."""
    everything = KeyRange(None, None)
    rows = rows_in(cur, *plan.where(table), cut, everything, batch_sizes.rows_to_count())
    return batch_sizes.default_size(rows)


def mark_running(conn: Any, run_id: str) -> None:
    with conn.cursor() as cur:
        runs.start_running(cur, run_id)
    conn.commit()
