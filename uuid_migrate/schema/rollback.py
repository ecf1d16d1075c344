"""Undoing a migration: every step it recorded, reversed, newest first.

What to undo comes from the ledger's step records (each forward step knows its reverse, and
whether it created its object, so nothing that was there before is dropped). A rollback first
fences the runs (batches check the fence inside their transaction, so a queued or redelivered
batch writes nothing afterwards), removes the migration's rows from an id_mappings that was
there before it, then drops indexes, columns children first, and id_mappings if it created it.
The runs stay as `rolled_back`, with their reports and snapshots, as the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from uuid_migrate import db
from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger import added_mappings, figures, generated_values, runs, step_records
from uuid_migrate.plan.model import MAPPING_TABLE, Plan
from uuid_migrate.plan.plan_data import from_dict
from uuid_migrate.schema.apply import advisory_lock, reverse_step
from uuid_migrate.schema.mapping_table import mapping_indexes
from uuid_migrate.schema.steps import CreateMappingTable, Step, index_steps, step_from_dict

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
    #: Whether the batches noted the rows they added to the kept id_mappings; not when an
    #: earlier version began the migration.
    mapping_rows_noted: bool

    def describe(self) -> list[str]:
        lines = []
        table = f"{self.plan.schema}.{MAPPING_TABLE}"
        if self.mapping_table_kept and self.mapping_rows_noted:
            lines.append(f"delete the rows the migration added to {table} (every other row stays)")
        elif self.mapping_table_kept:
            lines.append(
                f"delete the rows of the migrated tables created since the run began from {table} "
                "(the run began under an earlier version, which noted no rows)"
            )
        return lines + [f"drop {step.describe()}" for step in self.steps]


def what_to_undo(cur: Any) -> Undo | None:
    """The live runs together, and the steps any of them created, newest first."""
    live = runs.live_runs(cur)
    if not live:
        return None
    run_ids = [r["run_id"] for r in live]
    steps = created_steps(step_records.of_runs(cur, run_ids))
    kept = not any(isinstance(s, CreateMappingTable) for s in steps)
    plan = from_dict(live[-1]["plan"], stored=True)
    noted = added_mappings.noting(cur, run_ids)
    return Undo(run_ids, plan, steps, figures.running_batches(cur, run_ids), kept, noted)


def created_steps(records: list[tuple[dict[str, Any], bool]]) -> list[Step]:
    """Each step known by what it is, kept if a run created it, newest first (in the order
    the creating records were applied, reversed)."""
    created: dict[str, Step] = {}
    for data, was_created in records:
        step = step_from_dict(data)
        if was_created:
            created.setdefault(step.identity(), step)
    return list(reversed(created.values()))


def fence(conn: Any, run_ids: list[str]) -> None:
    """Stop the runs: wait for batch transactions in flight, then no batch may write again."""
    with conn.cursor() as cur:
        runs.fence(cur, run_ids)
    conn.commit()


def wait_for_index_builds(index_conn: Any, plan: Plan) -> None:
    """After the fence: an index build in flight ends (and records itself) before we look."""
    with index_conn.cursor() as cur:
        for index in [*mapping_indexes(plan.schema), *index_steps(plan)]:
            with advisory_lock(cur, index.lock_key()):
                pass


def reverse_steps(conn: Any, index_conn: Any, undo: Undo, lock_timeout_ms: int) -> None:
    """The UUIDs written into an adopted uuid_id (which no step drops) and the migration's
    rows of a kept id_mappings first, while its indexes still serve those deletes; then
    drop what the steps created, an index concurrently, on the autocommit connection."""
    clear_generated(conn, undo.run_ids)
    if undo.mapping_table_kept:
        delete_mappings(conn, undo)
    for step in undo.steps:
        reverse_step(conn, index_conn, step, lock_timeout_ms)


def clear_generated(conn: Any, run_ids: list[str]) -> int:
    """Set back to NULL each adopted uuid_id the runs filled in, in short transactions, with
    the application's triggers silenced as in the batches; the application's values stay."""
    with conn.cursor() as cur:
        pairs = generated_values.tables_of(cur, run_ids)
        plans = {run: from_dict(runs.get_run(cur, run)["plan"], stored=True) for run, _ in pairs}
    conn.commit()
    silenced = _can_silence(conn)
    cleared = 0
    for run_id, table in pairs:
        plan = plans[run_id]
        target, key = plan.qualified(table), sql.Identifier(plan.table(table).key)
        while True:
            with conn.cursor() as cur:
                _silence(cur, silenced)
                count = generated_values.clear_chunk(cur, run_id, table, target, key, DELETE_CHUNK)
            conn.commit()
            cleared += count
            if count < DELETE_CHUNK:
                break
    return cleared


def _can_silence(conn: Any) -> bool:
    with conn.cursor() as cur:
        silenced = db.can_set_replication_role(cur)
    conn.commit()
    return silenced


def _silence(cur: Any, silenced: bool) -> None:
    """The rollback's own writes (clearing adopted values, deleting its mappings) keep the
    application's triggers off, as the batches did."""
    if silenced:
        cur.execute("SET LOCAL session_replication_role = replica")


def delete_mappings(conn: Any, undo: Undo) -> int:
    """The runs' rows of a pre-existing id_mappings, in short transactions: exactly those
    the batches noted, or, for a run begun by an earlier version, by that version's rule."""
    with conn.cursor() as cur:
        present = CreateMappingTable(undo.plan.schema).exists(cur)
    conn.commit()
    if not present:
        return 0
    if undo.mapping_rows_noted:
        return _delete_noted(conn, undo)
    return _delete_since_run_began(conn, undo)


def _delete_noted(conn: Any, undo: Undo) -> int:
    """Walks the notes in key order, DELETE_CHUNK per transaction; a row the application
    changed since is kept, with its note (validation reports it)."""
    mappings = qualified(undo.plan.schema, MAPPING_TABLE)
    after, removed = added_mappings.START, 0
    silenced = _can_silence(conn)
    while True:
        with conn.cursor() as cur:
            _silence(cur, silenced)
            seen, deleted, after = added_mappings.delete_chunk(
                cur, mappings, undo.run_ids, after, DELETE_CHUNK
            )
        conn.commit()
        removed += deleted
        if seen < DELETE_CHUNK:
            return removed


def _delete_since_run_began(conn: Any, undo: Undo) -> int:
    """What an earlier version did, for runs it began (they noted nothing): rows of the
    migrated tables created since the first run began, which takes the application's rows
    of those tables written meanwhile too."""
    with conn.cursor() as cur:
        since = runs.first_run_started(cur, undo.run_ids)
    conn.commit()
    mappings = qualified(undo.plan.schema, MAPPING_TABLE)
    names = [t.name for t in undo.plan.migrated()]
    removed = 0
    silenced = _can_silence(conn)
    while True:
        with conn.cursor() as cur:
            _silence(cur, silenced)
            cur.execute(
                sql.SQL(
                    "DELETE FROM {m} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {m} "
                    "WHERE table_name = ANY(%s) AND created_at >= %s LIMIT %s))"
                ).format(m=mappings),
                (names, since, DELETE_CHUNK),
            )
            count = cur.rowcount
        conn.commit()
        removed += count
        if count < DELETE_CHUNK:
            return removed
