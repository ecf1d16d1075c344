"""Validation reports for every phase a database can be in, from set-based checks.

`pre`: nothing migrated yet (baseline). `in_progress`: a run is planning, running or rolling
back. `post`: the latest run ended (succeeded or failed). `rolled_back`: the latest run was
undone. The chord's last task and `uuid-migrate validate` build the same reports.
"""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger import added_mappings, figures, runs, snapshots, stages
from uuid_migrate.ledger.states import BatchStatus, RunStatus, StageStatus
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan, Relation
from uuid_migrate.schema.steps import CreateMappingTable
from uuid_migrate.verification import post_checks as post
from uuid_migrate.verification import scan_settings, snapshot
from uuid_migrate.verification.baseline_checks import baseline_checks
from uuid_migrate.verification.check_sql import column_exists, count_rows
from uuid_migrate.verification.report import (
    IN_PROGRESS,
    POST,
    PRE,
    ROLLED_BACK,
    SAMPLE_SIZE,
    CheckResult,
    build_report,
    left_alone,
    notice,
    verdict,
)
from uuid_migrate.verification.table_scan import TableScan, scan_table

_PHASE_OF_STATUS = {
    RunStatus.SUCCEEDED: POST,
    RunStatus.FAILED: POST,
    RunStatus.ROLLED_BACK: ROLLED_BACK,
}
#: Batch states that fail the report: after a run, anything unfinished; during one, failures.
_UNFINISHED = (BatchStatus.PENDING, BatchStatus.RUNNING, BatchStatus.FAILED)


def phase_of(run: dict[str, Any] | None) -> str:
    if run is None:
        return PRE
    return _PHASE_OF_STATUS.get(run["status"], IN_PROGRESS)


def baseline_report(cur: Any, plan: Plan) -> dict[str, Any]:
    checks, present = baseline_checks(cur, plan)
    tables = {
        t.name: _figures(cur, t.name, _counted(cur, plan, t.name), None)
        for t in plan.migrated()
        if t.name in present
    }
    return build_report(PRE, checks, tables)


def post_migration_report(
    cur: Any, plan: Plan, run_id: str | None, finished: set[str] | None = None
) -> dict[str, Any]:
    """Checks after a run; with `finished`, of a run in progress whose finished stages those are."""
    scan_settings.for_scans(cur)
    checks: list[CheckResult] = []
    done = {t.name for t in plan.tables} if finished is None else finished
    checked = [r for r in plan.relations if r.table in done and _references_done(plan, r.table, done)]
    scans = _scans(cur, plan, checked)
    for table in plan.migrated():
        complete = table.name in done
        checks += _uuid_checks(cur, plan, table.name, scans[table.name], complete)
    for rel in checked:
        counts = scans[rel.table].relations[_position(plan, rel, checked)]
        checks += [
            post.references_translated(cur, plan, rel, counts.untranslated),
            post.orphans_recorded(cur, plan, rel, counts.unrecorded),
        ]
    if run_id is not None:
        states = _UNFINISHED if finished is None else (BatchStatus.FAILED,)
        checks.append(post.batches_finished(cur, run_id, states))
    tables = {t.name: _figures(cur, t.name, scans[t.name], run_id) for t in plan.migrated()}
    phase = POST if finished is None else IN_PROGRESS
    return build_report(phase, checks + left_alone(plan), tables)


def _scans(cur: Any, plan: Plan, checked: list[Relation]) -> dict[str, TableScan]:
    """One scan of each migrated table, and of each table with a reference to check."""
    names = [t.name for t in plan.migrated()]
    names += [r.table for r in checked if r.table not in names]
    scans = {}
    for name in dict.fromkeys(names):
        with_uuid = plan.table(name).migrate and column_exists(cur, *plan.where(name), UUID_COLUMN)
        relations = tuple(r for r in checked if r.table == name)
        scans[name] = scan_table(cur, plan, name, with_uuid, relations)
    return scans


def _position(plan: Plan, rel: Relation, checked: list[Relation]) -> int:
    """Where a reference's counts are among its table's scan."""
    return [r for r in checked if r.table == rel.table].index(rel)


def rolled_back_report(cur: Any, plan: Plan, run_ids: list[str]) -> dict[str, Any]:
    """Nothing the migration added is left, and each table matches its snapshot (a
    pre-existing id_mappings too)."""
    checks = _mapping_rows_removed(cur, plan, run_ids)
    names = {t.name for t in plan.tables} | {added_mappings.SNAPSHOT_NAME}
    for table, snap in sorted(snapshots.oldest(cur, run_ids).items()):
        where = snapshot.where_of(snap) or (_where(plan, table) if table in names else None)
        found = (
            snapshot.differences(cur, *where, snap)
            if where
            else ["not in the last run's plan, and its snapshot does not say where it is"]
        )
        checks.append(verdict("restored_as_before", table, [], found, found[:10]))
    tables = {t.name: {"total": count_rows(cur, plan, t.name)} for t in plan.tables}
    return build_report(ROLLED_BACK, checks, tables)


def validate_database(cur: Any, plan: Plan, run: dict[str, Any] | None) -> dict[str, Any]:
    """The report for whatever phase the database is in."""
    phase = phase_of(run)
    if phase == PRE:
        return baseline_report(cur, plan)
    if phase == ROLLED_BACK:
        return rolled_back_report(cur, plan, runs.runs_ended_with(cur, run))
    if phase == POST:
        return post_migration_report(cur, plan, run["run_id"])
    return post_migration_report(cur, plan, run["run_id"], _finished_tables(cur, run["run_id"]))


def _uuid_checks(
    cur: Any, plan: Plan, table: str, scan: TableScan, complete: bool
) -> list[CheckResult]:
    """The checks of a table's `uuid_id` and mappings, from its scan; those of completeness
    only when the table is finished."""
    if scan.mapped is None:
        return [verdict("uuid_column", table, UUID_COLUMN, "missing", [UUID_COLUMN])]
    checks = [
        post.uuid_unique(cur, plan, table, all_agree=scan.disagreeing == 0),
        post.mappings_agree(cur, plan, table, scan.disagreeing),
    ]
    if complete:
        rows = scan.total
        checks += [
            post.rows_without_uuid(cur, plan, table, rows - scan.migrated),
            post.mappings_one_per_row(cur, plan, table, rows, scan.mapped),
            post.mappings_of_deleted_rows(cur, plan, table, scan.mappings - scan.mapped),
            post.uuid_index_valid(cur, plan, table),
            *post.extra_columns_present(cur, plan, table),
        ]
    return checks


def _references_done(plan: Plan, table: str, done: set[str]) -> bool:
    """A table's translations are final once it and every parent of its relations finished."""
    return all(r.parent in done for r in plan.relations_of(table))


def _finished_tables(cur: Any, run_id: str) -> set[str]:
    """Tables all of whose stages succeeded."""
    by_table: dict[str, bool] = {}
    for stage in stages.stages(cur, run_id):
        ok = stage["status"] == StageStatus.SUCCEEDED
        by_table[stage["table"]] = by_table.get(stage["table"], True) and ok
    return {table for table, ok in by_table.items() if ok}


def _counted(cur: Any, plan: Plan, table: str) -> TableScan:
    """Rows, and rows with a `uuid_id` (none without the column), before any mapping."""
    has_uuid = column_exists(cur, *plan.where(table), UUID_COLUMN)
    counted = sql.Identifier(UUID_COLUMN) if has_uuid else sql.SQL("NULL")
    cur.execute(
        sql.SQL("SELECT count(*), count({}) FROM {}").format(counted, plan.qualified(table))
    )
    total, migrated = (int(v) for v in cur.fetchone())
    return TableScan(total, migrated)


def _figures(cur: Any, table: str, scan: TableScan, run_id: str | None) -> dict[str, Any]:
    """Per table: total, migrated, failed (rows of failed batches), duration (ms)."""
    return {
        "total": scan.total,
        "migrated": scan.migrated or 0,
        "failed": None if run_id is None else figures.table_failed_rows(cur, run_id, table),
        "duration": None if run_id is None else figures.table_duration_ms(cur, run_id, table),
    }


def _where(plan: Plan, snapshot_name: str) -> tuple[str, str]:
    """(schema, table) of a snapshot: a table of the plan, or the plan's id_mappings."""
    if snapshot_name == added_mappings.SNAPSHOT_NAME:
        return plan.schema, MAPPING_TABLE
    return plan.where(snapshot_name)


def _mapping_rows_removed(cur: Any, plan: Plan, run_ids: list[str]) -> list[CheckResult]:
    """id_mappings is gone if the migration created it, else holds none of the rows the
    runs noted as they wrote them; those the application changed since were kept (a
    warning). A run begun by an earlier version noted none: its rows are counted by that
    version's rule, created since the run began."""
    if not CreateMappingTable(plan.schema).exists(cur):
        return [verdict("id_mappings_removed", MAPPING_TABLE, 0, 0, [])]
    mappings = qualified(plan.schema, MAPPING_TABLE)
    if added_mappings.noting(cur, run_ids):
        found = added_mappings.left_over(cur, mappings, run_ids, SAMPLE_SIZE)
        (left, sample), (kept, changed) = found
        return [
            verdict("id_mappings_removed", MAPPING_TABLE, 0, left, sample),
            notice("id_mappings_changed_kept", MAPPING_TABLE, kept, changed),
        ]
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE table_name = ANY(%s) AND created_at >= %s").format(
            mappings
        ),
        ([t.name for t in plan.migrated()], runs.first_run_started(cur, run_ids)),
    )
    left = int(cur.fetchone()[0])
    return [verdict("id_mappings_removed", MAPPING_TABLE, 0, left, [])]
