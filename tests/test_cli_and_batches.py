"""The command line on bad input, and one batch's idempotency, against real services."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from producer import commands
from uuid_migrate import runner, sample

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
    ctx = runner.Context(connect=lambda: work, reset=lambda: None, worker="test")
    [first] = runner.run_batch(ctx, queued.run_id, "users", 1)
    snapshot = table_checksum(conn, "users"), table_checksum(conn, "id_mappings")
    [again] = runner.run_batch(ctx, queued.run_id, "users", 1)
    assert (first.status, first.rows) == ("succeeded", 50)
    assert again.status == "skipped"
    with conn.cursor() as cur:  # even forced back to pending, a rerun writes nothing new
        cur.execute(
            "UPDATE uuid_migration.batches SET status = 'pending' "
            "WHERE stage = 'users' AND batch_no = 1"
        )
    [forced] = runner.run_batch(ctx, queued.run_id, "users", 1)
    assert (forced.status, forced.rows, forced.mappings) == ("succeeded", 0, 0)
    assert (table_checksum(conn, "users"), table_checksum(conn, "id_mappings")) == snapshot
    work.close()


def db_connection(settings):
    from uuid_migrate import db

    return db.connect(settings.database_url)
