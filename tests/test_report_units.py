"""Pure logic of validation and rollback: report arithmetic, rendering, diffs, step order."""

from __future__ import annotations

from producer.report_view import render
from uuid_migrate.plan.model import ExtraColumn, Plan, Relation, Skipped, Table
from uuid_migrate.retrying import compute_backoff
from uuid_migrate.schema.apply import DDL_BACKOFF_MAX_MS, DDL_BACKOFF_MS
from uuid_migrate.schema.steps import AddColumn, CreateMappingTable, additive_steps, index_steps
from uuid_migrate.verification.report import (
    FAILED,
    PASSED,
    WARNING,
    build_report,
    info,
    left_alone,
    notice,
    verdict,
)
from uuid_migrate.verification.snapshot import _part_differences


def test_a_report_passes_with_warnings_and_fails_on_any_failed_check():
    checks = [
        verdict("rows_without_uuid", "users", 0, 0, ["ignored"]),
        notice("orphaned_references", "providers.clinic_id", 3, ["p1", "p2", "p3"]),
        info("row_count", "users", 10),
    ]
    report = build_report("pre", checks, {})
    assert report["overallStatus"] == PASSED
    assert report["summary"] == {"totalChecks": 3, "passed": 2, "failed": 0, "warnings": 1}
    assert report["checks"][0]["sample"] == []  # a passing check names nobody
    assert report["checks"][1]["status"] == WARNING

    broken = build_report("post", [*checks, verdict("uuid_unique", "users", 0, 2, ["a", "b"])], {})
    assert broken["overallStatus"] == FAILED and broken["summary"]["failed"] == 1
    assert broken["checks"][-1]["sample"] == ["a", "b"]


def test_the_readable_report_names_the_failed_check_and_its_ids():
    report = build_report(
        "post",
        [verdict("id_mappings_agree", "users", 0, 1, ["usr_1"])],
        {"users": {"total": 5, "migrated": 5, "failed": 0, "duration": 12}},
    )
    text = render(report)
    assert text.splitlines()[0].startswith("validation (post) at ")
    assert "FAILED" in text.splitlines()[0]
    line = next(ln for ln in text.splitlines() if ln.startswith("id_mappings_agree"))
    assert "failed" in line and "usr_1" in line


def test_snapshot_differences_name_what_changed():
    before = [["id", "text", True], ["email", "text", False]]
    assert _part_differences("column", before, before) == []
    now = [["id", "text", True], ["email", "varchar", False], ["uuid_id", "uuid", False]]
    assert _part_differences("column", before, now) == [
        "column uuid_id was not there before",
        "column email changed",
    ]
    assert _part_differences("index", [["users_pkey", "..."]], []) == ["index users_pkey is missing"]


def test_steps_go_parents_first_so_their_reverse_drops_children_first():
    plan = Plan(
        "public",
        (
            Table("dashboards", "id"),
            Table("users", "id", extra_columns=(ExtraColumn("auth_id"),)),
            Table("audit", "id", migrate=False),
        ),
        (Relation("dashboards", "user_id", "users"), Relation("audit", "actor", "users")),
    )
    steps = additive_steps(plan)
    assert isinstance(steps[0], CreateMappingTable)
    assert [(s.table, s.column) for s in steps if isinstance(s, AddColumn)] == [
        ("users", "uuid_id"),
        ("users", "auth_id"),
        ("dashboards", "uuid_id"),
        ("dashboards", "user_uuid_id"),
        ("audit", "actor_uuid_id"),
    ]
    indexes = index_steps(plan)
    assert [(i.table, i.column) for i in indexes] == [("dashboards", "uuid_id"), ("users", "uuid_id")]
    identities = [s.identity() for s in steps + indexes]
    assert len(set(identities)) == len(identities)  # each step known by what it is


def test_ddl_lock_backoff_is_the_one_backoff_doubling_from_half_a_second_and_capped():
    def ceiling(attempt: int) -> float:
        return compute_backoff(attempt, DDL_BACKOFF_MS, DDL_BACKOFF_MAX_MS, rand=lambda: 1.0) / 1000

    assert [ceiling(a) for a in range(1, 5)] == [0.5, 1.0, 2.0, 4.0]
    assert ceiling(10) == DDL_BACKOFF_MAX_MS / 1000


def test_the_readable_report_lists_what_is_not_migrated_with_the_whole_reason():
    reason = "order_items has a composite primary key (order_id, sku): not translated yet"
    plan = Plan("public", (Table("orders", "id"),), skipped=(Skipped("foreign_key", "fk", reason),))
    report = build_report("pre", left_alone(plan), {})
    assert report["overallStatus"] == PASSED and report["summary"]["warnings"] == 1
    assert f"  fk: {reason}" in render(report).splitlines()
