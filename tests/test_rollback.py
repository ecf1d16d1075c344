"""Rollback against real services: after a full run, a partial one, with batches in flight.

Every test judges the rollback from the outside: pg_dump's schema and ordered checksums of
every table before the migration, compared with the same after migration plus rollback.
"""

from __future__ import annotations

import io
import re
import time

import pytest

from config.celery import make_app
from producer import commands, rollback_command, validate_command
from uuid_migrate.ledger.states import RunStatus

from .helpers import (
    CLINIC_TABLES,
    assert_fully_migrated,
    database_dump,
    rows,
    run_clinic,
    scalar,
)
from .test_cli_and_batches import uuid_migrate
from .test_discovery import ODD_SCHEMA, fill

pytestmark = pytest.mark.e2e

#: Makes every batch that touches this dashboard fail, as a bad row in production would.
FAILING_TRIGGER = """
CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = (SELECT min(id) FROM dashboards) THEN RAISE EXCEPTION 'bad row %', NEW.id; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_one BEFORE UPDATE ON dashboards FOR EACH ROW EXECUTE FUNCTION refuse_one();
ALTER TABLE dashboards ENABLE ALWAYS TRIGGER refuse_one;
"""

SLOW_TRIGGER = """
CREATE FUNCTION take_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$;
CREATE TRIGGER take_time BEFORE UPDATE ON dashboards FOR EACH ROW EXECUTE FUNCTION take_time();
ALTER TABLE dashboards ENABLE ALWAYS TRIGGER take_time;
"""


def rollback(settings, **kwargs) -> rollback_command.RollbackOutcome:
    return rollback_command.rollback(settings, yes=True, out=io.StringIO(), **kwargs)


def test_rollback_after_a_full_run_restores_everything_and_a_second_one_does_nothing(
    clinic, settings, redis_conn
):
    before = database_dump(clinic, settings.database_url)
    first = run_clinic(settings)
    assert first.status == RunStatus.SUCCEEDED
    assert redis_conn.keys(f"uuid_migrate:{first.run_id}:*")

    outcome = rollback(settings)

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed"
    assert database_dump(clinic, settings.database_url) == before
    assert redis_conn.keys(f"uuid_migrate:{first.run_id}:*") == []
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.batches") == 0
    assert validate_command.validate(settings)["phase"] == "rolled_back"
    again = uuid_migrate("rollback", "--yes", DATABASE_URL=settings.database_url)
    assert again.returncode == 0 and "nothing to roll back" in again.stdout
    assert database_dump(clinic, settings.database_url) == before

    rerun = run_clinic(settings)  # and the migration can start afresh

    assert rerun.status == RunStatus.SUCCEEDED and rerun.run_id != first.run_id
    for table in CLINIC_TABLES:
        assert_fully_migrated(clinic, table)
    assert validate_command.validate(settings)["overallStatus"] == "passed"
    assert rollback(settings).report["overallStatus"] == "passed"
    assert database_dump(clinic, settings.database_url) == before


def test_rollback_after_a_partial_run_with_workers_stopped(clinic, settings):
    with clinic.cursor() as cur:
        cur.execute(FAILING_TRIGGER)  # part of the original schema: it must survive
    before = database_dump(clinic, settings.database_url)
    result = run_clinic(settings, allow_triggers=True)
    assert result.status == RunStatus.FAILED
    stages = dict(rows(clinic, "SELECT stage, status FROM uuid_migration.stages"))
    assert stages["users"] == "succeeded" and stages["dashboards"] == "failed"

    cli = uuid_migrate("rollback", "--yes", DATABASE_URL=settings.database_url)

    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "matches its snapshot" in cli.stdout
    assert database_dump(clinic, settings.database_url) == before


def test_rollback_asks_first_and_refuses_while_batches_run(clinic, settings):
    run_clinic(settings)
    migrated = database_dump(clinic, settings.database_url)

    declined = uuid_migrate("rollback", DATABASE_URL=settings.database_url, input_text="no\n")
    assert declined.returncode == 1 and "drop column public.users.uuid_id" in declined.stdout
    with clinic.cursor() as cur:
        cur.execute("UPDATE uuid_migration.batches SET status = 'running' WHERE batch_no = 2")
    refused = uuid_migrate("rollback", "--yes", DATABASE_URL=settings.database_url)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert database_dump(clinic, settings.database_url) == migrated


def test_a_forced_rollback_revokes_a_live_run_and_no_batch_writes_after_it(
    clinic, settings, start_workers, tmp_path
):
    with clinic.cursor() as cur:
        cur.execute(SLOW_TRIGGER)  # dashboards batches take ~0.25 s: the rollback lands mid-stage
    before = database_dump(clinic, settings.database_url)
    # enqueued, no worker
    queued = commands.run(settings, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    start_workers(2)
    wait_until(lambda: batches_done(clinic, queued.run_id, "dashboards") >= 3)

    outcome = rollback(settings, force=True)

    assert outcome.report["overallStatus"] == "passed", outcome.report
    wait_until(lambda: workers_idle(settings))
    assert database_dump(clinic, settings.database_url) == before
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.errors") == 0
    assert scalar(clinic, "SELECT status FROM uuid_migration.runs") == RunStatus.ROLLED_BACK
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert "Discarding revoked task: uuid_migrate.batch" in logs, "queued batches were revoked"


def batches_done(conn, run_id: str, stage: str) -> int:
    return scalar(
        conn,
        "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "AND status = 'succeeded'",
        (run_id, stage),
    )


def workers_idle(settings) -> bool:
    """Nothing queued and nothing being worked on: every delivered batch has had its say."""
    app = make_app(settings)
    with app.connection_for_write() as conn:
        queued = conn.default_channel.queue_declare(settings.queue).message_count
    active = app.control.inspect(timeout=1.0).active() or {}
    return queued == 0 and bool(active) and not any(active.values())


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_an_odd_schema_validates_and_rolls_back_exactly(conn, settings):
    """Quoted names, char(n) keys, a self-reference, a cycle, a reference-only child."""
    odd = conn
    with odd.cursor() as cur:
        cur.execute(ODD_SCHEMA)
        fill(cur)
        cur.execute('CREATE INDEX "Org Units title" ON "Org Units" (lower(title))')
        cur.execute("ALTER TABLE employees ADD CONSTRAINT badge_shape CHECK (badge <> 'x')")
    before = database_dump(odd, settings.database_url)
    assert validate_command.validate(settings)["overallStatus"] == "passed"
    result = commands.run(settings, workers=2, out=io.StringIO())
    assert result.status == RunStatus.SUCCEEDED

    post = validate_command.validate(settings)

    assert post["phase"] == "post" and post["overallStatus"] == "passed", post
    assert ("references_translated", "employees.manager_id") in {
        (c["name"], c["table"]) for c in post["checks"]
    }
    assert rollback(settings).report["overallStatus"] == "passed"
    assert database_dump(odd, settings.database_url) == before


def test_a_rollback_that_cannot_restore_exactly_says_what_differs_and_exits_1(clinic, settings):
    run_clinic(settings)
    user = scalar(clinic, "SELECT min(id) FROM users")
    with clinic.cursor() as cur:  # someone changed original data and schema meanwhile
        cur.execute("UPDATE users SET name = 'changed' WHERE id = %s", (user,))
        cur.execute("CREATE INDEX clinics_name_idx ON clinics (name)")

    cli = uuid_migrate("rollback", "--yes", DATABASE_URL=settings.database_url)

    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "verification FAILED" in cli.stdout
    report = validate_command.validate(settings)
    assert report["phase"] == "rolled_back" and report["overallStatus"] == "failed"
    found = {c["table"]: c["actual"] for c in report["checks"] if c["status"] == "failed"}
    assert found == {
        "users": ["data differs: 1000 rows before, 1000 now, checksum differs"],
        "clinics": ["index clinics_name_idx was not there before"],
    }
    assert scalar(clinic, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'uuid_id'") == 0


def test_batches_a_worker_never_heard_revoked_are_stopped_by_the_fence(clinic, settings, start_workers, tmp_path):
    """Revocation only reaches live workers: one started after the rollback must still write nothing."""
    before = database_dump(clinic, settings.database_url)
    commands.run(settings, plan_file="clinic", out=io.StringIO())  # enqueued, no worker yet

    assert rollback(settings, force=True).report["overallStatus"] == "passed"
    start_workers(2)
    wait_until(lambda: workers_idle(settings))

    assert database_dump(clinic, settings.database_url) == before
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.errors") == 0
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    assert re.search(r"status=(skipped|cancelled)", logs), "queued batches ran as no-ops"
