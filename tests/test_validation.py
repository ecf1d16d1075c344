"""Validation reports before, during and after a run, against real services.

Each post-migration check is broken on purpose, exactly where it looks, and must fail naming
the offending id; repaired, the report passes again.
"""

from __future__ import annotations

import io
import json

import pytest

from producer import commands, status_command, validate_command
from uuid_migrate import db
from uuid_migrate.execution import batch_run
from uuid_migrate.execution.attempt import plan_of_run
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.verification import scan_settings, table_scan

from .helpers import SIZE, rows, run_clinic, scalar
from .test_cli_and_batches import uuid_migrate

pytestmark = pytest.mark.e2e


def check(report: dict, name: str, table: str) -> dict:
    found = [c for c in report["checks"] if c["name"] == name and c["table"] == table]
    assert len(found) == 1, (name, table, [c["name"] for c in report["checks"]])
    return found[0]


def failing(report: dict) -> set[tuple[str, str]]:
    return {(c["name"], c["table"]) for c in report["checks"] if c["status"] == "failed"}


def test_the_baseline_passes_lists_the_orphans_and_changes_nothing(clinic, settings):
    report = validate_command.validate(settings, "clinic")

    assert report["phase"] == "pre" and report["overallStatus"] == "passed"
    orphans = check(report, "orphaned_references", "providers.clinic_id")
    assert orphans["status"] == "warning" and orphans["actual"] == SIZE.orphans
    expected = rows(
        clinic,
        "SELECT p.id FROM providers p WHERE NOT EXISTS "
        "(SELECT 1 FROM clinics c WHERE c.id = p.clinic_id) ORDER BY p.id",
    )
    assert orphans["sample"] == [r[0] for r in expected]
    assert check(report, "row_count", "dashboards")["actual"] == SIZE.dashboards
    assert report["tables"]["users"]["total"] == SIZE.users
    assert set(report["summary"]) >= {"totalChecks", "passed", "failed"}
    assert scalar(clinic, "SELECT count(*) FROM pg_namespace WHERE nspname = 'uuid_migration'") == 0


def test_the_baseline_fails_on_what_would_stop_a_migration(clinic, settings, tmp_path):
    with clinic.cursor() as cur:
        cur.execute("CREATE TABLE counters (n integer PRIMARY KEY)")
        cur.execute("ALTER TABLE clinics ADD COLUMN uuid_id text")
        cur.execute("INSERT INTO users (id, email) VALUES ('', 'a@x'), ('Bob', 'b@x'), (' bob', 'c@x')")
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[tables]]\nname = "users"\n[[tables]]\nname = "clinics"\n'
        '[[tables]]\nname = "counters"\n[[tables]]\nname = "ghosts"\n'
    )

    result = uuid_migrate("validate", "--plan", str(plan), "--json", DATABASE_URL=settings.database_url)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert failing(report) == {
        ("primary_key", "counters"),
        ("primary_key", "ghosts"),
        ("target_columns_free", "*"),
    }
    assert "clinics.uuid_id already exists and was not added by uuid-migrate" in check(
        report, "target_columns_free", "*"
    )["sample"][0]
    suspicious = check(report, "suspicious_ids", "users")
    assert suspicious["status"] == "warning" and suspicious["sample"] == ["", " bob", "Bob"]


def test_the_post_report_passes_after_a_run_and_is_what_status_shows(clinic, settings, tmp_path):
    result = run_clinic(settings)
    out = tmp_path / "post.json"

    cli = uuid_migrate("validate", "--output", str(out), DATABASE_URL=settings.database_url)

    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "validation (post)" in cli.stdout and "PASSED" in cli.stdout
    report = json.loads(out.read_text())
    assert report["phase"] == "post" and report["summary"]["failed"] == 0
    users = report["tables"]["users"]
    assert users["total"] == users["migrated"] == SIZE.users and users["failed"] == 0
    assert isinstance(users["duration"], int) and users["duration"] >= 0
    stored = status_command.status(settings)["validation"]  # the chord's own final report
    assert stored["overallStatus"] == "passed" and stored["phase"] == "post"
    assert {c["name"] for c in stored["checks"]} == {c["name"] for c in report["checks"]}
    assert result.status == RunStatus.SUCCEEDED
    # the run's validation analyzed the id_mappings it filled (the planner knew it empty)
    assert scalar(
        clinic,
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'id_mappings'",
    )


def test_the_scans_get_a_larger_work_mem_for_their_transaction_never_a_smaller_one(settings):
    conn = db.connect(settings.database_url)  # a transaction, as the validation's
    try:
        with conn.cursor() as cur:
            scan_settings.for_scans(cur)
            cur.execute("SELECT current_setting('work_mem'), current_setting('jit')")
            assert cur.fetchone() == (scan_settings.SCAN_WORK_MEM, "off")
            conn.rollback()
            cur.execute("SELECT current_setting('work_mem')")
            assert cur.fetchone()[0] != scan_settings.SCAN_WORK_MEM  # for that transaction only
            cur.execute("SET work_mem = '256MB'")
            scan_settings.for_scans(cur)
            cur.execute("SELECT current_setting('work_mem')")
            assert cur.fetchone()[0] == "256MB"
    finally:
        conn.close()


def test_each_post_check_fails_on_exactly_what_it_breaks_and_names_the_id(clinic, settings):
    run_clinic(settings)
    users = [r[0] for r in rows(clinic, "SELECT id FROM users ORDER BY id LIMIT 3")]
    dash = scalar(clinic, "SELECT id FROM dashboards WHERE user_id IS NOT NULL ORDER BY id LIMIT 1")

    def broken(statements: list[str], repair: list[str]) -> dict:
        with clinic.cursor() as cur:
            for statement in statements:
                cur.execute(statement, {"u0": users[0], "u1": users[1], "d": dash})
        report = validate_command.validate(settings)
        with clinic.cursor() as cur:
            for statement in repair:
                cur.execute(statement, {"u0": users[0], "u1": users[1], "d": dash})
        return report

    report = broken(
        ["CREATE TEMP TABLE kept AS SELECT * FROM id_mappings WHERE old_id = %(u0)s",
         "DELETE FROM id_mappings WHERE table_name = 'users' AND old_id = %(u0)s"],
        ["INSERT INTO id_mappings SELECT * FROM kept", "DROP TABLE kept"],
    )
    assert failing(report) == {("id_mappings_agree", "users"), ("id_mappings_one_per_row", "users")}
    assert check(report, "id_mappings_agree", "users")["sample"] == [users[0]]

    report = broken(
        ["CREATE TEMP TABLE kept AS SELECT uuid_id FROM users WHERE id = %(u0)s",
         "UPDATE users SET uuid_id = NULL WHERE id = %(u0)s"],
        ["UPDATE users SET uuid_id = (SELECT uuid_id FROM kept) WHERE id = %(u0)s", "DROP TABLE kept"],
    )
    assert ("rows_without_uuid", "users") in failing(report)
    assert check(report, "rows_without_uuid", "users")["sample"] == [users[0]]

    report = broken(
        ["DROP INDEX users_uuid_id_key",
         "CREATE TEMP TABLE kept AS SELECT uuid_id FROM users WHERE id = %(u1)s",
         "UPDATE users SET uuid_id = (SELECT uuid_id FROM users WHERE id = %(u0)s) WHERE id = %(u1)s"],
        ["UPDATE users SET uuid_id = (SELECT uuid_id FROM kept) WHERE id = %(u1)s", "DROP TABLE kept",
         "CREATE UNIQUE INDEX users_uuid_id_key ON users (uuid_id)"],
    )
    assert {("uuid_unique", "users"), ("uuid_index_valid", "users")} <= failing(report)
    assert check(report, "uuid_unique", "users")["sample"] == users[:2]

    report = broken(
        ["CREATE TEMP TABLE kept AS SELECT user_uuid_id FROM dashboards WHERE id = %(d)s",
         "UPDATE dashboards SET user_uuid_id = (SELECT uuid_id FROM users WHERE id <> user_id "
         "ORDER BY id LIMIT 1) WHERE id = %(d)s"],
        ["UPDATE dashboards SET user_uuid_id = (SELECT user_uuid_id FROM kept) WHERE id = %(d)s",
         "DROP TABLE kept"],
    )
    assert failing(report) == {("references_translated", "dashboards.user_id")}
    assert check(report, "references_translated", "dashboards.user_id")["sample"] == [dash]

    report = broken(
        ["UPDATE uuid_migration.batches SET status = 'failed' WHERE stage = 'users' AND batch_no = 3"],
        ["UPDATE uuid_migration.batches SET status = 'succeeded' WHERE stage = 'users' AND batch_no = 3"],
    )
    assert failing(report) == {("batches_finished", "*")}
    assert check(report, "batches_finished", "*")["sample"][0].startswith("users#3 failed (")

    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_during_a_run_the_report_is_in_progress_and_fails_only_on_failures(clinic, settings):
    queued = commands.run(settings, plan_file="clinic", out=io.StringIO())  # no workers
    work = db.connect(settings.database_url)
    ctx = batch_run.Context(connect=lambda: work, reset=lambda: None, worker="test")
    for batch_no in range(3):
        batch_run.run_batch(ctx, queued.run_id, "users", batch_no)
    work.close()

    report = validate_command.validate(settings)

    assert report["phase"] == "in_progress" and report["overallStatus"] == "passed"
    assert report["tables"]["users"]["migrated"] == 3 * settings.batch_size
    assert ("rows_without_uuid", "users") not in {(c["name"], c["table"]) for c in report["checks"]}
    with clinic.cursor() as cur:
        cur.execute("UPDATE uuid_migration.batches SET status = 'failed' WHERE batch_no = 5")
    assert failing(validate_command.validate(settings)) == {("batches_finished", "*")}


def test_validate_says_what_is_wrong_in_one_line(settings):
    result = uuid_migrate("validate", "--plan", "/nonexistent.toml", DATABASE_URL=settings.database_url)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_the_scan_compares_pairs_by_checksum_and_counts_exactly_when_they_differ(clinic, settings):
    """A table's scan takes its mapping counts from two checksums when they agree, and from
    the join when not: either way the counts are those our own SQL finds."""
    result = run_clinic(settings)
    with clinic.cursor() as cur:
        plan = plan_of_run(cur, result.run_id)[0]
    relations = tuple(plan.relations_of("dashboards"))

    def scanned() -> tuple[table_scan.TableScan, tuple[int, int, int]]:
        with clinic.cursor() as cur:
            found = table_scan.scan_table(cur, plan, "dashboards", True, relations)
            assert found == table_scan._exact(cur, plan, "dashboards", relations)
        own = rows(
            clinic,
            "SELECT count(*) FILTER (WHERE m.new_id IS DISTINCT FROM d.uuid_id), count(m.old_id), "
            "(SELECT count(*) FROM id_mappings WHERE table_name = 'dashboards') "
            "FROM dashboards d LEFT JOIN id_mappings m "
            "ON m.table_name = 'dashboards' AND m.old_id = d.id",
        )[0]
        return found, own

    found, own = scanned()
    assert (found.disagreeing, found.mapped, found.mappings) == own == (0, SIZE.dashboards, SIZE.dashboards)
    first, second, third = [r[0] for r in rows(clinic, "SELECT id FROM dashboards ORDER BY id LIMIT 3")]
    with clinic.cursor() as cur:  # one mapping names another UUID, a row is deleted (its
        # mapping stays), a row lost its UUID: as many rows in the pairs as mappings less one
        cur.execute("UPDATE id_mappings SET new_id = gen_random_uuid() WHERE old_id = %s", (first,))
        cur.execute("DELETE FROM dashboards WHERE id = %s", (second,))
        cur.execute("UPDATE dashboards SET uuid_id = NULL WHERE id = %s", (third,))
    found, own = scanned()
    assert (found.disagreeing, found.mapped, found.mappings) == own
    assert own == (2, SIZE.dashboards - 1, SIZE.dashboards)
    assert found.migrated == found.total - 1 == SIZE.dashboards - 2

    report = validate_command.validate(settings)
    assert check(report, "id_mappings_of_deleted_rows", "dashboards")["actual"] == 1
    assert check(report, "id_mappings_agree", "dashboards")["sample"] == sorted([first, third])
