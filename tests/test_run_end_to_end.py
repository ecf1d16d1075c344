"""The whole path against real PostgreSQL, Redis and Celery worker processes."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from devtools import sample
from producer import commands, status_command, watching
from producer.progress_view import render
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.progression.live import Progress

from .helpers import (
    CLINIC_TABLES,
    SIZE,
    assert_fully_migrated,
    assert_references_translated,
    rows,
    run_clinic,
    scalar,
    table_checksum,
)

pytestmark = pytest.mark.e2e



def test_full_run_gives_every_row_a_uuid_translates_references_and_records_orphans(
    clinic, broker_settings, redis_conn
):
    result = run_clinic(broker_settings)

    assert result.status == RunStatus.SUCCEEDED
    for table in CLINIC_TABLES:
        assert_fully_migrated(clinic, table)
    assert scalar(clinic, "SELECT count(DISTINCT new_id) FROM id_mappings") == scalar(
        clinic, "SELECT count(*) FROM id_mappings"
    )
    assert (
        assert_references_translated(clinic, "dashboards", "user_id", "users", "user_uuid_id") == 0
    )
    columns = rows(clinic, "SELECT column_name FROM information_schema.columns WHERE table_name = 'dashboards'")
    assert "clinic_uuid_id" not in {c for (c,) in columns}  # the guide's dashboards reference users only
    orphans = assert_references_translated(
        clinic, "providers", "clinic_id", "clinics", "clinic_uuid_id"
    )
    assert orphans == SIZE.orphans
    recorded = rows(
        clinic, "SELECT table_name, row_id, error FROM uuid_migration.errors ORDER BY row_id"
    )
    assert len(recorded) == SIZE.orphans
    assert all(t == "providers" and "orphaned reference" in e for t, _, e in recorded)
    assert scalar(clinic, "SELECT count(*) FROM users WHERE auth_id IS NOT NULL") == 0
    assert (
        scalar(
            clinic,
            "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s",
            (result.run_id,),
        )
        > 24
    ), "the test needs dozens of batches"
    assert scalar(clinic, "SELECT count(DISTINCT worker) FROM uuid_migration.batches") >= 2


def test_children_start_only_after_their_parents_batches_and_sweep(clinic, settings):
    result = run_clinic(settings)

    for child, parent in (
        ("dashboards", "users"),
        ("providers", "clinics"),
    ):
        first_child_start = scalar(
            clinic,
            "SELECT min(started_at) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s",
            (result.run_id, child),
        )
        handed_off, parent_done = rows(
            clinic,
            "SELECT handed_off_at, finished_at FROM uuid_migration.stages "
            "WHERE run_id = %s AND stage = %s",
            (result.run_id, parent),
        )[0]
        last_parent_batch = scalar(
            clinic,
            "SELECT max(finished_at) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s",
            (result.run_id, parent),
        )
        assert last_parent_batch <= handed_off < first_child_start, (child, parent)
        assert handed_off <= parent_done, "a table is done once its unique index is built"


def test_unique_indexes_are_built_and_valid_after_the_backfill(clinic, settings):
    run_clinic(settings)

    valid = rows(
        clinic,
        "SELECT t.relname, i.indisvalid, i.indisunique FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        "WHERE c.relname LIKE '%%_uuid_id_key' ORDER BY 1",
    )
    assert valid == [(t, True, True) for t in sorted(CLINIC_TABLES)]


def test_a_second_run_changes_nothing(clinic, settings):
    first = run_clinic(settings)
    before = {t: table_checksum(clinic, t) for t in (*CLINIC_TABLES, "id_mappings")}

    second = run_clinic(settings)

    assert second.status == RunStatus.SUCCEEDED and second.run_id != first.run_id
    after = {t: table_checksum(clinic, t) for t in (*CLINIC_TABLES, "id_mappings")}
    assert after == before
    changed = scalar(
        clinic, "SELECT sum(rows) FROM uuid_migration.batches WHERE run_id = %s", (second.run_id,)
    )
    assert changed == 0


def test_rows_inserted_after_planning_are_migrated_even_outside_the_planned_bounds(
    clinic, settings, start_workers
):
    queued = run_clinic(settings, workers=0)  # planned and enqueued; no worker yet
    assert queued.status == RunStatus.RUNNING
    bounds = rows(
        clinic,
        "SELECT min(upper_bound), max(upper_bound) FROM uuid_migration.batches WHERE stage = 'users'",
    )[0]
    new_ids = ["", " ", "!", "usr_0", "usr_8", "~~~~", "\u00ff\u00ff"]
    with clinic.cursor() as cur:
        for new_id in new_ids:
            cur.execute("INSERT INTO users (id, email) VALUES (%s, 'late@example.com')", (new_id,))
        cur.execute("INSERT INTO dashboards (id, user_id, title) VALUES ('', '', 'late')")
    assert min(new_ids) < bounds[0] and max(new_ids) > bounds[1]

    with clinic.cursor() as cur:  # no worker yet: the view says work waits on our queue
        waiting = watching.read_progress(cur, queued.run_id, settings.queue)
    assert waiting.work_waiting and waiting.idle_s is not None and waiting.idle_s >= 0
    assert sum(s.total for s in waiting.stages if ":" not in s.stage) == scalar(
        clinic, "SELECT sum(total_rows) FROM uuid_migration.stages WHERE kind = 'backfill'"
    )
    later = render(replace(waiting, idle_s=waiting.idle_s + 15))
    assert any(f"queue '{settings.queue}'" in line for line in later)

    start_workers(2)
    final = watching.wait_for_run(clinic, queued.run_id, io.StringIO(), queue=settings.queue)

    assert final == RunStatus.SUCCEEDED
    assert_fully_migrated(clinic, "users")
    assert_fully_migrated(clinic, "dashboards")
    assert scalar(
        clinic,
        "SELECT user_uuid_id = (SELECT uuid_id FROM users WHERE id = '') "
        "FROM dashboards WHERE id = ''",
    )


def test_status_and_redis_report_the_same_checkpoint_per_table_as_the_ledger(
    clinic, settings, redis_conn
):
    result = run_clinic(settings)

    status = status_command.status(settings)
    assert status["run"] == result.run_id and status["status"] == RunStatus.SUCCEEDED
    by_table = {cp["table"]: cp for cp in status["tables"]}
    users = by_table["users"]
    assert set(users) >= {
        "phase",
        "table",
        "lastProcessedId",
        "processedCount",
        "totalCount",
        "status",
        "errors",
    }
    assert users["phase"] == "uuid_migration"
    assert users["processedCount"] == users["totalCount"] == SIZE.users
    assert users["status"] == "completed"
    assert users["lastProcessedId"] == scalar(
        clinic,
        "SELECT upper_bound FROM uuid_migration.batches WHERE stage = 'users' "
        "AND upper_bound IS NOT NULL ORDER BY batch_no DESC LIMIT 1",
    )
    providers = by_table["providers"]
    assert providers["errorCount"] == SIZE.orphans
    assert {e["table"] for e in providers["errors"]} == {"providers"}
    assert all(set(e) >= {"table", "id", "error", "timestamp"} for e in providers["errors"])
    assert status["validation"]["overallStatus"] == "passed"
    assert json.loads(json.dumps(status, default=str))["tables"][0]["table"] == "users"

    progress = Progress(redis_conn, result.run_id)
    counters = progress.stage("dashboards")
    assert counters["processed"] == counters["total"] == SIZE.dashboards
    checkpoint = progress.checkpoint("dashboards")
    assert checkpoint["table"] == "dashboards" and checkpoint["totalCount"] == SIZE.dashboards
    # What Redis holds after the run is what the ledger says, table by table.
    recorded = scalar(clinic, "SELECT count(*) FROM uuid_migration.errors WHERE table_name = 'providers'")
    assert recorded == SIZE.orphans
    for cp in status["tables"]:
        cached = progress.checkpoint(cp["stage"])
        assert cached["status"] == "completed", cp["stage"]
        assert cached["processedCount"] == cp["processedCount"]
        assert cached["errorCount"] == cp["errorCount"]
    cached = progress.checkpoint("providers")
    assert cached["errorCount"] == recorded
    assert len(cached["errors"]) == min(recorded, 20)
    assert {e["id"] for e in cached["errors"]} <= set(
        r[0] for r in rows(clinic, "SELECT row_id FROM uuid_migration.errors WHERE table_name = 'providers'")
    )
    progress.forget()


def test_a_run_planned_by_an_older_version_resumes_with_the_ledger_columns_it_lacked(
    conn, settings
):
    """A ledger from before the hand-off and planned middles: the producer resuming the run
    adds the column and the table, and batches cut before they run find no middle and walk
    their range."""
    clinic = conn
    with conn.cursor() as cur:  # tables of a few default-sized batches: the first one teaches
        sample.build(cur, sample.SampleSize.for_users(6_000))
    cutting = replace(settings, batch_size=None, batch_target_ms=1, min_split_rows=1_000)
    queued = commands.run(cutting, plan_file="clinic", out=io.StringIO())  # planned, no worker
    with clinic.cursor() as cur:
        cur.execute("ALTER TABLE uuid_migration.stages DROP COLUMN handed_off_at")
        cur.execute("DROP TABLE uuid_migration.batch_middles")
    clinic.commit()

    resumed = commands.run(cutting, workers=2, out=io.StringIO())

    assert resumed.run_id == queued.run_id and resumed.status == RunStatus.SUCCEEDED
    for table in CLINIC_TABLES:
        assert_fully_migrated(clinic, table)
    assert assert_references_translated(clinic, "dashboards", "user_id", "users", "user_uuid_id") == 0
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'split'") > 0
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.batch_middles") == 0
    assert scalar(clinic, "SELECT count(handed_off_at) FROM uuid_migration.stages") > 0
