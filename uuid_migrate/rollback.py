"""Undoing a migration: every step it recorded, reversed, newest first.

What to undo comes from the ledger's step records (each forward step knows its reverse, and
whether it created its object, so nothing that was there before is dropped). A rollback first
fences the runs (batches check the fence inside their transaction, so a queued or redelivered
batch writes nothing afterwards), then drops indexes, columns children first, and id_mappings.
The runs stay as `rolled_back`, with their reports and snapshots, as the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate import ledger
from uuid_migrate.ddl import (
    CreateMappingTable,
    Step,
    UniqueIndex,
    index_steps,
    qualified,
    step_from_dict,
)
from uuid_migrate.ddl_runner import run_ddl, take_advisory_lock
from uuid_migrate.plan import MAPPING_TABLE, Plan, from_dict

#: Mapping rows deleted per transaction when id_mappings was there before the migration.
DELETE_CHUNK = 10_000


@dataclass(frozen=True)
class Undo:
    """What a rollback will do: the runs it ends, and the steps to reverse, in order."""

    run_ids: list[str]
    plan: Plan
    steps: list[Step]
    running_batches: int
    mapping_table_kept: bool

    def describe(self) -> list[str]:
        lines = [f"drop {step.describe()}" for step in self.steps]
        if self.mapping_table_kept:
            lines.append(f"delete the migration's rows from {self.plan.schema}.{MAPPING_TABLE}")
        return lines


def live_runs(cur: Any) -> list[dict[str, Any]]:
    """Runs not rolled back yet, oldest first: together they are the migration to undo."""
    if not ledger.ledger_exists(cur):
        return []
    cur.execute(
        "SELECT run_id, status, plan, created_at FROM uuid_migration.runs "
        "WHERE status <> %s ORDER BY created_at, run_id",
        (ledger.ROLLED_BACK,),
    )
    keys = ("run_id", "status", "plan", "created_at")
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def what_to_undo(cur: Any) -> Undo | None:
    runs = live_runs(cur)
    if not runs:
        return None
    run_ids = [r["run_id"] for r in runs]
    cur.execute(
        "SELECT DISTINCT ON (step) step, created, position FROM uuid_migration.ddl_steps "
        "WHERE run_id = ANY(%s) ORDER BY step, created DESC",
        (run_ids,),
    )
    records = sorted(cur.fetchall(), key=lambda r: r[2], reverse=True)
    steps = [step_from_dict(step) for step, created, _ in records if created]
    mapping_created = any(isinstance(s, CreateMappingTable) for s in steps)
    cur.execute(
        "SELECT count(*) FROM uuid_migration.batches WHERE run_id = ANY(%s) AND status = %s",
        (run_ids, ledger.RUNNING),
    )
    plan = from_dict(runs[-1]["plan"])
    return Undo(run_ids, plan, steps, int(cur.fetchone()[0]), not mapping_created)


def fence(conn: Any, run_ids: list[str]) -> None:
    """Stop the runs: wait for batch transactions in flight, then no batch may write again."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM uuid_migration.runs WHERE run_id = ANY(%s) FOR UPDATE", (run_ids,)
        )
        cur.execute(
            "UPDATE uuid_migration.runs SET status = %s, message = %s WHERE run_id = ANY(%s)",
            (ledger.ROLLING_BACK, "rollback in progress", run_ids),
        )
    conn.commit()


def wait_for_index_builds(index_conn: Any, plan: Plan) -> None:
    """After the fence: an index build in flight ends (and records itself) before we look."""
    with index_conn.cursor() as cur:
        for _, index in index_steps(plan):
            take_advisory_lock(cur, index.lock_key())
            cur.execute("SELECT pg_advisory_unlock(%s)", (index.lock_key(),))


def reverse_steps(conn: Any, index_conn: Any, undo: Undo, lock_timeout_ms: int) -> None:
    """Drop what the steps created; an index concurrently, on the autocommit connection."""
    for step in undo.steps:
        target = index_conn if isinstance(step, UniqueIndex) else conn
        run_ddl(target, lambda cur, s=step: cur.execute(s.reverse()), lock_timeout_ms, step.describe())
    if undo.mapping_table_kept:
        delete_mappings(conn, undo)


def delete_mappings(conn: Any, undo: Undo) -> int:
    """The runs' rows of a pre-existing id_mappings, in short transactions."""
    with conn.cursor() as cur:
        present = CreateMappingTable(undo.plan.schema).exists(cur)
    conn.commit()
    if not present:
        return 0
    mappings = qualified(undo.plan.schema, MAPPING_TABLE)
    tables = [t.name for t in undo.plan.migrated()]
    removed = 0
    while True:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "DELETE FROM {m} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {m} "
                    "WHERE table_name = ANY(%s) AND created_at >= (SELECT min(created_at) "
                    "FROM uuid_migration.runs WHERE run_id = ANY(%s)) LIMIT %s))"
                ).format(m=mappings),
                (tables, undo.run_ids, DELETE_CHUNK),
            )
            count = cur.rowcount
        conn.commit()
        removed += count
        if count < DELETE_CHUNK:
            return removed


def forget_progress(cur: Any, run_ids: list[str]) -> None:
    """The runs' batches (and their transition log), stages and error records; runs, reports,
    snapshots and steps stay."""
    for table in ("batches", "transitions", "stages", "errors"):
        cur.execute("SELECT to_regclass(%s)", (f"{ledger.LEDGER_SCHEMA}.{table}",))
        if cur.fetchone()[0] is None:
            continue  # a ledger written by an older version
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE run_id = ANY(%s)").format(
                qualified(ledger.LEDGER_SCHEMA, table)
            ),
            (run_ids,),
        )


def close_runs(cur: Any, run_ids: list[str], report: dict[str, Any]) -> None:
    ledger.store_report(cur, run_ids[-1], report["phase"], report)
    message = "rolled back" + ("" if report["overallStatus"] == "passed" else "; verification failed")
    cur.execute(
        "UPDATE uuid_migration.runs SET status = %s, message = %s, finished_at = now() "
        "WHERE run_id = ANY(%s)",
        (ledger.ROLLED_BACK, message, run_ids),
    )
