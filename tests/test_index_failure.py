"""A unique index on uuid_id that cannot be built never hangs the run: the table fails with
the rows that share a value named, nothing invalid is left behind, nothing tries again on
its own, and `retry` builds it once the values are fixed."""

from __future__ import annotations

import io
import time

import pytest

from producer import commands, status_command, validate_command
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus

from .helpers import rows, scalar
from .recovery_support import (
    assert_index_failed_on_u1_and_u2,
    cli,
    quick,
    share_u1s_uuid_with_u2,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _index_build_waiting(conn) -> bool:
    """The index build is waiting for the application's open transaction to end."""
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'",
        )
    )


def test_a_uuid_id_shared_by_two_rows_fails_the_table_with_their_ids_and_leaves_no_index(
    conn, settings, start_workers
):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY, name text);"
            "INSERT INTO users SELECT 'u' || i, 'n' || i FROM generate_series(1, 200) i"
        )
    fast = quick(settings)
    queued = commands.run(fast, out=io.StringIO())  # planned and queued, no worker yet
    app = db.connect(settings.database_url)  # the application, with a transaction open
    with app.cursor() as cur:
        cur.execute("UPDATE users SET name = name WHERE id = 'nobody'")  # holds its table lock
    start_workers(1, **fast.__dict__)
    wait_until(lambda: _index_build_waiting(conn), what="the index build waiting on the application")
    share_u1s_uuid_with_u2(app)

    assert_index_failed_on_u1_and_u2(conn, queued.run_id)
    shown = status_command.status(settings)
    assert "u1, u2" in shown["message"]
    users = next(t for t in shown["tables"] if t["table"] == "users")
    assert users["status"] == "failed"
    report = validate_command.validate(settings)
    shared = next(c for c in report["checks"] if c["name"] == "uuid_unique")
    assert shared["status"] == "failed" and shared["sample"] == ["u1", "u2"]
    time.sleep(2 * fast.reconcile_interval_s)  # nothing tries the build again on its own
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.errors WHERE row_id IS NULL") == 1
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.FAILED

    with conn.cursor() as cur:  # fixed: u2 gets back the uuid_id its mapping names
        cur.execute(
            "UPDATE users u SET uuid_id = m.new_id FROM id_mappings m "
            "WHERE m.table_name = 'users' AND m.old_id = u.id AND u.id = 'u2'"
        )
    retried = cli(fast, "retry", "--wait")

    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert rows(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_uuid_id_key'::regclass") == [
        (True,)
    ]
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.SUCCEEDED
