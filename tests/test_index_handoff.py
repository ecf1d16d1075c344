"""A table hands off to the tables depending on it once its batches and final sweep are done:
they run while its unique index is built, which can take hours on a large table. The table
is done only once its index is valid, and an index that cannot be built still fails the run."""

from __future__ import annotations

import io
import threading

import pytest

from config.celery import make_app
from producer import commands
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus, StageStatus
from uuid_migrate.progression import closing
from uuid_migrate.redis_store import client
from worker import reconciling

from .helpers import rows, scalar
from .recovery_support import (
    assert_index_failed_on_u1_and_u2,
    cli,
    quick,
    share_u1s_uuid_with_u2,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.e2e

USERS, DASHBOARDS = 300, 900


def _build(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY, name text);"
            "CREATE TABLE dashboards (id text PRIMARY KEY, user_id text REFERENCES users (id));"
            f"INSERT INTO users SELECT 'u' || i, 'n' || i FROM generate_series(1, {USERS}) i;"
            f"INSERT INTO dashboards SELECT 'd' || i, 'u' || (1 + i % {USERS}) "
            f"FROM generate_series(1, {DASHBOARDS}) i"
        )


def _stage(conn, run_id: str, stage: str) -> tuple:
    """(status, handed_off_at) of a stage."""
    return rows(
        conn,
        "SELECT status, handed_off_at FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
        (run_id, stage),
    )[0]


def _hold_users(settings):
    """The application, with a transaction open that holds its lock on users: a concurrent
    index build on users waits for it to end."""
    app = db.connect(settings.database_url)
    with app.cursor() as cur:
        cur.execute("UPDATE users SET name = name WHERE id = 'nobody'")
    return app


def _dashboards_done_while_the_users_index_waits(conn, settings, start_workers) -> tuple:
    """A run queued, the application holding users, two workers: once the users index build
    waits on the application and dashboards finished; (settings, run, application)."""
    _build(conn)
    fast = quick(settings)
    queued = commands.run(fast, out=io.StringIO())  # planned and queued, no worker yet
    app = _hold_users(settings)
    start_workers(2, **fast.__dict__)
    wait_until(lambda: _users_index_waiting(conn), what="the users index build waiting")
    wait_until(
        lambda: _stage(conn, queued.run_id, "dashboards")[0] == StageStatus.SUCCEEDED,
        what="dashboards done while the users index waits",
    )
    return fast, queued, app


def _users_index_waiting(conn) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%%users%%' AND wait_event_type = 'Lock'",
        )
    )


def _build_users_index(url: str, run_id: str) -> None:
    """What a second delivery of the users index task does."""
    with db.connection(url) as conn:
        nxt = closing.build_stage_index(
            conn, lambda: db.connect(url, autocommit=True), None, run_id, "users", 10
        )
    assert nxt.pages == [] and not nxt.validate


def _untranslated(conn) -> int:
    return scalar(
        conn,
        "SELECT count(*) FROM dashboards d JOIN users u ON u.id = d.user_id "
        "WHERE d.user_uuid_id IS DISTINCT FROM u.uuid_id OR d.uuid_id IS NULL",
    )


def test_a_parents_unique_index_is_built_while_its_children_run(
    conn, settings, start_workers
):
    fast, queued, app = _dashboards_done_while_the_users_index_waits(conn, settings, start_workers)
    status, handed_off = _stage(conn, queued.run_id, "users")
    assert status == StageStatus.RUNNING and handed_off is not None
    assert rows(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_uuid_id_key'::regclass") == [
        (False,)
    ]
    assert _untranslated(conn) == 0
    # A reconciler pass (as `run --wait` makes them) sends the owed build again; that task,
    # as any second caller, finds it under way and returns at once instead of holding a
    # worker until it ends.
    with db.connection(fast.database_url) as live:
        reconciling.reconcile_and_send(make_app(fast), fast, live, client(fast.redis_url), queued.run_id)
    second = threading.Thread(
        target=_build_users_index, args=(fast.database_url, queued.run_id), daemon=True
    )
    second.start()
    second.join(timeout=20)
    assert not second.is_alive(), "a second build of the users index waited for the first"
    assert _users_index_waiting(conn)
    assert _stage(conn, queued.run_id, "users")[0] == StageStatus.RUNNING
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.RUNNING

    app.commit()
    status = wait_for_end(conn, queued.run_id)

    assert status == RunStatus.SUCCEEDED
    assert rows(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_uuid_id_key'::regclass") == [
        (True,)
    ]
    assert _untranslated(conn) == 0
    started = scalar(
        conn,
        "SELECT min(started_at) FROM uuid_migration.batches WHERE run_id = %s AND stage = 'dashboards'",
        (queued.run_id,),
    )
    users_done = scalar(
        conn,
        "SELECT finished_at FROM uuid_migration.stages WHERE run_id = %s AND stage = 'users'",
        (queued.run_id,),
    )
    assert started < users_done


def test_a_parents_index_failing_after_its_children_started_fails_the_run_and_retry_ends_it(
    conn, settings, start_workers
):
    fast, queued, app = _dashboards_done_while_the_users_index_waits(conn, settings, start_workers)
    share_u1s_uuid_with_u2(app)

    assert_index_failed_on_u1_and_u2(conn, queued.run_id)
    assert _stage(conn, queued.run_id, "users")[0] == StageStatus.FAILED
    assert _stage(conn, queued.run_id, "dashboards")[0] == StageStatus.SUCCEEDED

    with conn.cursor() as cur:  # fixed by hand: u2 gets a UUID of its own, and its mapping
        cur.execute(
            "WITH fresh AS (UPDATE users SET uuid_id = gen_random_uuid() WHERE id = 'u2' "
            "RETURNING uuid_id) UPDATE id_mappings SET new_id = (SELECT uuid_id FROM fresh) "
            "WHERE table_name = 'users' AND old_id = 'u2'"
        )
    assert _untranslated(conn) == DASHBOARDS // USERS  # u2's dashboards name its old UUID
    retried = cli(fast, "retry", "--wait")

    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.SUCCEEDED
    assert rows(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_uuid_id_key'::regclass") == [
        (True,)
    ]
    assert _untranslated(conn) == 0
