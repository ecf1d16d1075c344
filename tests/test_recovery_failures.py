"""Batches that fail: for good (then `retry`), by timing out (split), by a UUID collision,
and so often that the circuit breaker stops the run."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from config.celery import make_app
from devtools import sample
from producer import commands, status_command
from uuid_migrate.ledger import transitions
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.progression.live import Progress
from uuid_migrate.redis_store import client
from worker import dispatch

from .helpers import rows, scalar
from .recovery_support import (
    assert_intact,
    build_clinic,
    cli,
    quick,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _worker_logs(stdout: str) -> Path:
    """The folder `--workers N` named for its workers' logs."""
    found = re.search(r"their logs: (\S+)", stdout)
    assert found, stdout
    return Path(found.group(1))


def _bad_row_trigger(conn, table: str, condition: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF {condition} THEN RAISE EXCEPTION 'row % refused by a trigger', NEW.id; END IF; "
            f"RETURN NEW; END $$; CREATE TRIGGER refuse BEFORE UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION refuse(); "
            f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER refuse"  # fires on the batches too
        )


def test_a_batch_failing_every_time_holds_its_dependents_then_retry_completes_everything(
    conn, settings
):
    before = build_clinic(conn)
    bad_id = scalar(conn, "SELECT id FROM users ORDER BY id OFFSET 120 LIMIT 1")
    _bad_row_trigger(conn, "users", f"NEW.id = '{bad_id}'")
    fast = quick(settings)

    first = cli(fast, "run", "--allow-triggers", "--plan", "clinic", "--workers", "2", "--wait")

    assert first.returncode == 1, first.stderr
    run_id = scalar(conn, "SELECT run_id FROM uuid_migration.runs")
    assert run_status(conn, run_id) == RunStatus.FAILED
    stages = dict(rows(conn, "SELECT stage, status FROM uuid_migration.stages"))
    assert stages["users"] == "failed" and stages["clinics"] == "succeeded"
    assert stages["dashboards"] == "pending"  # held: it needs users' UUIDs
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.reports WHERE kind = 'post'") == 0  # no validation
    failed = rows(
        conn,
        "SELECT batch_no, last_error FROM uuid_migration.batches WHERE status = 'failed'",
    )
    assert len(failed) == 1 and "refused by a trigger" in failed[0][1]
    summary = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("  {")]
    assert summary[0]["table"] == "users" and summary[0]["batch"] == failed[0][0]
    assert set(summary[0]) >= {"table", "id", "error", "timestamp", "range"}
    assert "uuid-migrate retry" in first.stdout
    logs = _worker_logs(first.stdout)
    assert f"worker logs kept in {logs}" in first.stdout
    assert sorted(p.name for p in logs.glob("worker-*.log")) == ["worker-1.log", "worker-2.log"]
    # Redis says what the ledger says: the failed stage, its error record, the held stage.
    live = Progress(client(fast.redis_url), run_id)
    users = live.checkpoint("users")
    assert users["status"] == "failed" and users["errorCount"] == 1
    assert "refused by a trigger" in users["errors"][0]["error"]
    assert live.checkpoint("clinics")["status"] == "completed"
    assert live.checkpoint("dashboards")["status"] == "pending"

    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER refuse ON users")
    again = cli(fast, "retry", "--table", "users", "--workers", "2", "--wait")

    assert again.returncode == 0, (again.stdout, again.stderr)
    assert not _worker_logs(again.stdout).exists()  # a run that succeeded leaves no folder
    assert all(live.checkpoint(s)["status"] == "completed" for s in ("users", "dashboards"))
    assert_intact(conn, before, run_id)
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.runs") == 1  # the same run
    status = json.loads(cli(fast, "status", "--json").stdout)
    assert status["status"] == "succeeded" and status["validation"]["overallStatus"] == "passed"


def test_a_statement_timeout_splits_the_batch_and_the_halves_complete(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    # A statement writing more than 30 rows of clinics sleeps past the timeout; 25 do not.
    with conn.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION too_much() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF (SELECT count(*) FROM changed) > 30 THEN PERFORM pg_sleep(60); END IF; "
            "RETURN NULL; END $$; CREATE TRIGGER too_much AFTER UPDATE ON clinics "
            "REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION too_much(); "
            "ALTER TABLE clinics ENABLE ALWAYS TRIGGER too_much"
        )
    fast = quick(settings, statement_timeout_ms=1500, min_split_rows=10)
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    start_workers(2, **fast.__dict__)

    assert wait_for_end(conn, queued.run_id) == RunStatus.SUCCEEDED
    assert_intact(conn, before, queued.run_id)
    splits = rows(
        conn,
        "SELECT batch_no, last_error FROM uuid_migration.batches "
        "WHERE stage = 'clinics' AND status = 'split'",
    )
    assert splits and all("statement timeout" in e for _, e in splits), splits
    halves = rows(
        conn,
        "SELECT parent_no, count(*), sum(planned_rows), bool_and(status = 'succeeded') "
        "FROM uuid_migration.batches WHERE stage = 'clinics' AND parent_no IS NOT NULL "
        "GROUP BY parent_no ORDER BY 1",
    )
    assert [h[0] for h in halves] == [s[0] for s in splits]
    assert all(count == 2 and ok for _, count, _, ok in halves)
    status = status_command.status(fast)
    clinics = next(t for t in status["tables"] if t["table"] == "clinics")
    assert clinics["processedCount"] == clinics["totalCount"] == 60
    assert clinics["batches"]["split"] == len(splits)


def test_a_duplicate_uuid_on_the_unique_index_is_retried_with_fresh_uuids(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    victim = scalar(conn, "SELECT id FROM users ORDER BY id OFFSET 70 LIMIT 1")
    taken = "00000000-0000-4000-8000-000000000001"
    # The first time only (a sequence does not roll back), the victim draws a UUID that
    # id_mappings already holds: the real unique index refuses it.
    with conn.cursor() as cur:
        cur.execute(
            "CREATE SEQUENCE collide; CREATE FUNCTION collide() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = %s AND NEW.uuid_id IS NOT NULL "
            "AND nextval('collide') = 1 THEN NEW.uuid_id := %s; END IF; RETURN NEW; END $$",
            (victim, taken),
        )
    fast = quick(settings)
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)  # adds the columns
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO id_mappings (table_name, old_id, new_id) VALUES ('legacy', 'x', %s); "
            "CREATE TRIGGER collide BEFORE UPDATE ON users FOR EACH ROW "
            "EXECUTE FUNCTION collide(); ALTER TABLE users ENABLE ALWAYS TRIGGER collide",
            (taken,),
        )
    start_workers(2, **fast.__dict__)

    assert wait_for_end(conn, queued.run_id) == RunStatus.SUCCEEDED
    with conn.cursor() as cur:
        cur.execute("DELETE FROM id_mappings WHERE table_name = 'legacy'")
    assert_intact(conn, before, queued.run_id)
    assert scalar(conn, "SELECT nextval('collide')") > 2  # the trigger did fire again
    assert scalar(conn, "SELECT uuid_id::text FROM users WHERE id = %s", (victim,)) != taken
    retried = rows(
        conn,
        "SELECT error FROM uuid_migration.transitions WHERE stage = 'users' "
        "AND to_status = 'pending' AND error LIKE %s",
        ("%id_mappings_new_id_key%",),
    )
    assert len(retried) == 1


def test_the_circuit_breaker_stops_a_broken_run_and_the_retry_task_finishes_it(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    _bad_row_trigger(conn, "dashboards", "true")  # every dashboards batch fails
    fast = quick(settings, batch_size=20)  # 60 dashboards batches, 30 users, 3 clinics
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    start_workers(2, **fast.__dict__)

    assert wait_for_end(conn, queued.run_id) == RunStatus.FAILED
    message = scalar(conn, "SELECT message FROM uuid_migration.runs")
    assert "circuit breaker" in message
    counts = dict(
        rows(
            conn,
            "SELECT status, count(*) FROM uuid_migration.batches WHERE stage = 'dashboards' "
            "GROUP BY status",
        )
    )
    assert counts["failed"] >= 17 and counts.get("pending", 0) > 0  # it stopped early

    with conn.cursor() as cur:
        cur.execute("DROP TRIGGER refuse ON dashboards")
    # What Flower's API does: send the task by name.
    make_app(fast).send_task(dispatch.RETRY_TASK, kwargs={}, queue=fast.queue)

    assert wait_until(lambda: run_status(conn, queued.run_id) == RunStatus.SUCCEEDED)
    assert_intact(conn, before, queued.run_id)
    with conn.cursor() as cur:
        history = transitions.history(cur, queued.run_id, "dashboards", 0)
    assert [h["to"] for h in history][-3:] == ["pending", "running", "succeeded"]


def run_status(conn, run_id: str) -> str:
    return scalar(conn, "SELECT status FROM uuid_migration.runs WHERE run_id = %s", (run_id,))


def test_worker_logs_in_a_folder_the_user_names_stay_after_a_run_that_succeeded(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(100))
    folder = tmp_path / "logs"

    done = cli(
        settings, "run", "--allow-triggers", "--plan", "clinic", "--workers", "1", "--wait",
        "--worker-logs", str(folder),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"their logs: {folder}" in done.stdout and f"worker logs kept in {folder}" in done.stdout
    assert "batch run=" in (folder / "worker-1.log").read_text()
