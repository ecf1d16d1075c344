"""The command line on bad input, and one batch's idempotency, against real services."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys

import pytest

from devtools import sample
from producer import commands
from uuid_migrate.execution import batch_run

from .helpers import scalar, table_checksum

pytestmark = pytest.mark.e2e


def uuid_migrate(*args: str, input_text: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=environment,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_database_url_is_one_line_and_a_nonzero_exit():
    result = uuid_migrate("plan", DATABASE_URL="mysql://root:hunter2@localhost/app")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "postgresql://" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_an_unreachable_server_is_one_line_and_a_nonzero_exit():
    result = uuid_migrate("status", DATABASE_URL="postgresql://u:hunter2@127.0.0.1:1/db")
    assert result.returncode == 2
    assert result.stderr.startswith("uuid-migrate: error: cannot connect to PostgreSQL")
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_a_plan_for_a_missing_table_changes_nothing(database_url, tmp_path, conn):
    plan = tmp_path / "plan.toml"
    plan.write_text('[[tables]]\nname = "nope"\n')
    result = uuid_migrate("run", "--plan", str(plan), DATABASE_URL=database_url)
    assert result.returncode == 2 and "nope" in result.stderr
    assert scalar(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'uuid_migration'") == 0
    assert scalar(conn, "SELECT to_regclass('public.id_mappings') IS NULL")


def test_plan_prints_the_discovered_plan_as_toml(database_url, conn):
    with conn.cursor() as cur:
        sample.create_schema(cur)
    result = uuid_migrate("plan", DATABASE_URL=database_url)
    assert result.returncode == 0, result.stderr
    assert (
        '[[relations]]\ntable = "dashboards"\ncolumn = "user_id"\nparent = "users"' in result.stdout
    )


def test_a_batch_run_twice_changes_nothing_the_second_time(conn, settings):
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(200))
    queued = commands.run(settings, plan_file="clinic", out=io.StringIO())  # planned, no workers
    work = db_connection(settings)
    ctx = batch_run.Context(connect=lambda: work, reset=lambda: None, worker="test")
    [first] = batch_run.run_batch(ctx, queued.run_id, "users", 1)
    snapshot = table_checksum(conn, "users"), table_checksum(conn, "id_mappings")
    [again] = batch_run.run_batch(ctx, queued.run_id, "users", 1)
    assert (first.status, first.rows) == ("succeeded", 50)
    assert again.status == "skipped"
    with conn.cursor() as cur:  # even forced back to pending, a rerun writes nothing new
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'pending' "
            "WHERE stage = 'users' AND batch_no = 1"
        )
    [forced] = batch_run.run_batch(ctx, queued.run_id, "users", 1)
    assert (forced.status, forced.rows, forced.mappings) == ("succeeded", 0, 0)
    assert (table_checksum(conn, "users"), table_checksum(conn, "id_mappings")) == snapshot
    work.close()


def db_connection(settings):
    from uuid_migrate import db

    return db.connect(settings.database_url)


def test_version_prints_the_installed_version():
    result = uuid_migrate("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"uuid-migrate {importlib.metadata.version('uuid-migrate')}"


def test_runs_lists_every_run_and_each_command_takes_one_by_its_id(conn, settings, database_url):
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(200))
    first = commands.run(settings, plan_file="clinic", out=io.StringIO())  # queued, no workers
    env = {"DATABASE_URL": database_url, "UUID_MIGRATE_QUEUE": settings.queue}

    listed = json.loads(uuid_migrate("runs", "--json", **env).stdout)
    assert [r["run"] for r in listed] == [first.run_id]
    assert listed[0]["status"] == "running" and listed[0]["rowsDone"] == 0
    assert listed[0]["tables"] == ["users", "clinics", "dashboards", "providers"]
    assert listed[0]["rowsPlanned"] == scalar(
        conn, "SELECT sum(total_rows) FROM uuid_migration.stages WHERE kind = 'backfill'"
    )
    for command in (["status"], ["validate"], ["retry"], ["rollback", "--yes"], ["pause"]):
        refused = uuid_migrate(*command, "--run", "run-nope", **env)
        assert refused.returncode == 2, (command, refused.stdout, refused.stderr)
        assert refused.stderr.count("\n") == 1 and "run-nope" in refused.stderr, command
    assert uuid_migrate("pause", "--run", first.run_id, **env).stdout.strip() == (
        f"run {first.run_id} paused"
    )
    shown = json.loads(uuid_migrate("status", "--run", first.run_id, "--json", **env).stdout)
    assert (shown["run"], shown["status"]) == (first.run_id, "paused")

    undone = uuid_migrate("rollback", "--run", first.run_id, "--yes", "--force", **env)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    second = commands.run(settings, plan_file="clinic", out=io.StringIO())
    listed = json.loads(uuid_migrate("runs", "--json", **env).stdout)
    assert [(r["run"], r["status"]) for r in listed] == [
        (second.run_id, "running"),
        (first.run_id, "rolled_back"),
    ]
    table = uuid_migrate("runs", **env).stdout
    assert first.run_id in table and "rolled_back" in table
    old = json.loads(uuid_migrate("validate", "--run", first.run_id, "--json", **env).stdout)
    assert old["phase"] == "rolled_back"
    again = uuid_migrate("rollback", "--run", first.run_id, "--yes", **env)
    assert again.returncode == 0 and f"run {first.run_id} was rolled back" in again.stdout
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.runs WHERE status = 'running'") == 1
