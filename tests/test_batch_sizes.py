"""Batch sizes when the user gives none: each table's own when planned, cut to a target
duration when run; a size the user gives is used as given."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from devtools import sample
from producer import commands
from uuid_migrate.execution.batch_cutting import BatchCutter
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import batch_sizes
from uuid_migrate.plan.model import Plan, Table
from uuid_migrate.plan.stages import stages

from .helpers import rows, scalar

TABLES = ("users", "clinics", "dashboards", "providers")


def _stage(plan: Plan):
    return stages(plan)[0]


def test_a_table_gets_at_least_its_share_of_batches_within_the_bounds():
    assert batch_sizes.default_size(0) == batch_sizes.SMALLEST
    assert batch_sizes.default_size(5_000) == batch_sizes.SMALLEST
    assert batch_sizes.default_size(200_000) == 12_500  # 16 batches
    assert batch_sizes.default_size(10**9) == batch_sizes.LARGEST
    # counting up to this many rows decides every size
    assert batch_sizes.default_size(batch_sizes.rows_to_count()) == batch_sizes.LARGEST


def test_a_batch_expected_past_the_target_is_cut_and_a_fast_one_is_not():
    plan = Plan("public", (Table("a", "id"),), ())
    stage = _stage(plan)
    cutter = BatchCutter(target_ms=1000, min_rows=10)
    assert cutter.should_cut(plan, stage, "r", 20_000) is None  # nothing learnt yet
    cutter.learn("r", stage.name, 10_000, 1_000)  # 0.1 ms a row
    assert cutter.should_cut(plan, stage, "r", 10_000) is None  # 1,000 ms: at the target
    reason = cutter.should_cut(plan, stage, "r", 20_000)
    assert reason and "20,000 rows expected to take 2,000 ms" in reason
    assert cutter.should_cut(plan, stage, "other-run", 20_000) is None
    # batches running faster again: the smoothed time per row falls, batches stay whole
    cutter.learn("r", stage.name, 20_000, 400)
    cutter.learn("r", stage.name, 20_000, 400)
    assert cutter.expected_ms("r", stage.name, 20_000) < 1000
    assert cutter.should_cut(plan, stage, "r", 20_000) is None


def test_given_sizes_tiny_batches_and_a_zero_target_are_never_cut():
    slow = BatchCutter(target_ms=1, min_rows=10)
    given = Plan("public", (Table("a", "id", batch_size=500),), ())
    whole = Plan("public", (Table("a", "id"),), (), 500)
    default = Plan("public", (Table("a", "id"),), ())
    for plan in (given, whole, default):
        slow.learn("r", _stage(plan).name, 100, 1_000)
    assert slow.should_cut(given, _stage(given), "r", 500) is None
    assert slow.should_cut(whole, _stage(whole), "r", 500) is None
    assert slow.should_cut(default, _stage(default), "r", 19) is None  # halves under min_rows
    assert slow.should_cut(default, _stage(default), "r", 20)
    off = BatchCutter(target_ms=0, min_rows=10)
    off.learn("r", _stage(default).name, 100, 1_000)
    assert off.should_cut(default, _stage(default), "r", 500) is None


def _migrated_exactly(conn) -> None:
    """Our own SQL: every row one UUID and one mapping, every reference its parent's UUID."""
    total = sum(scalar(conn, f"SELECT count(*) FROM {t}") for t in TABLES)
    assert scalar(conn, "SELECT count(DISTINCT (table_name, old_id)) FROM id_mappings") == total
    for table in TABLES:
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE uuid_id IS NULL") == 0
    assert scalar(
        conn,
        "SELECT count(*) FROM dashboards d JOIN users u ON u.id = d.user_id "
        "WHERE d.user_uuid_id IS DISTINCT FROM u.uuid_id",
    ) == 0


def _planned_middles_are_medians(conn, run_id: str) -> None:
    """Our own SQL: each planned batch closed above has half its planned rows up to its middle
    key (the sample's keys are text under the default collation)."""
    planned = rows(
        conn,
        "SELECT s.table_name, b.lower_bound, m.middle_bound, b.upper_bound, b.planned_rows "
        "FROM uuid_migration.batches b JOIN uuid_migration.stages s USING (run_id, stage) "
        "LEFT JOIN uuid_migration.batch_middles m USING (run_id, stage, batch_no) "
        "WHERE b.run_id = %s AND b.parent_no IS NULL AND s.kind = 'backfill'",
        (run_id,),
    )
    bounded = [p for p in planned if p[3] is not None]
    assert bounded and all(p[2] is not None for p in bounded), planned
    assert all(p[2] is None for p in planned if p[3] is None), "the open last batch has none"
    for table, lower, middle, upper, planned_rows in bounded:
        below = scalar(
            conn,
            f"SELECT count(*) FROM {table} WHERE (%s::text IS NULL OR id > %s) AND id <= %s",
            (lower, lower, middle),
        )
        assert below == planned_rows // 2, (table, lower, middle, upper)


@pytest.mark.e2e
def test_default_sized_batches_expected_past_the_target_are_cut_before_they_run(conn, settings):
    clinic = conn
    with conn.cursor() as cur:  # tables of a few default-sized batches: the first one teaches
        sample.build(cur, sample.SampleSize.for_users(6_000))
    cutting = replace(settings, batch_size=None, batch_target_ms=1, min_split_rows=1_000)
    result = commands.run(cutting, plan_file="clinic", workers=1, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    cut = rows(
        clinic,
        "SELECT planned_rows, last_error FROM uuid_migration.batches "
        "WHERE run_id = %s AND status = 'split'",
        (result.run_id,),
    )
    assert cut, "no batch was cut"
    assert all(reason.startswith("cut before it ran") for _, reason in cut), cut
    assert all(planned >= 2 * cutting.min_split_rows for planned, _ in cut), cut
    _planned_middles_are_medians(clinic, result.run_id)
    # a planned batch is cut at the middle its planning found, not walked again at run time
    cut_at = rows(
        clinic,
        "SELECT m.middle_bound, h.upper_bound FROM uuid_migration.batches p "
        "JOIN uuid_migration.batches h ON (h.run_id, h.stage, h.parent_no) = "
        "(p.run_id, p.stage, p.batch_no) AND h.lower_bound IS NOT DISTINCT FROM p.lower_bound "
        "LEFT JOIN uuid_migration.batch_middles m "
        "ON (m.run_id, m.stage, m.batch_no) = (p.run_id, p.stage, p.batch_no) "
        "WHERE p.run_id = %s AND p.status = 'split' AND p.parent_no IS NULL "
        "AND p.upper_bound IS NOT NULL",
        (result.run_id,),
    )
    assert cut_at and all(middle is not None and middle == cut for middle, cut in cut_at), cut_at
    # the halves did the work: none of them is cut below what MIN_SPLIT_ROWS allows
    smallest = scalar(
        clinic,
        "SELECT min(planned_rows) FROM uuid_migration.batches "
        "WHERE run_id = %s AND parent_no IS NOT NULL AND status = 'succeeded'",
        (result.run_id,),
    )
    assert smallest >= cutting.min_split_rows
    # planned per table: the smallest default size, the tables being small
    assert scalar(
        clinic,
        "SELECT max(planned_rows) FROM uuid_migration.batches "
        "WHERE run_id = %s AND parent_no IS NULL",
        (result.run_id,),
    ) == batch_sizes.SMALLEST
    _migrated_exactly(clinic)


@pytest.mark.e2e
def test_a_size_the_user_gives_is_used_as_given_and_never_cut(clinic, settings):
    given = replace(settings, batch_size=400, batch_target_ms=1, min_split_rows=10)
    result = commands.run(given, plan_file="clinic", workers=1, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    planned = rows(
        clinic,
        "SELECT status, max(planned_rows) FROM uuid_migration.batches WHERE run_id = %s "
        "GROUP BY status",
        (result.run_id,),
    )
    assert planned == [("succeeded", 400)]
    _migrated_exactly(clinic)
