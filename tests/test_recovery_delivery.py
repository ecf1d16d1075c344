"""The same batch delivered twice at once, and pause / resume holding work without losing it."""

from __future__ import annotations

import io
import json
import time

import pytest

from config.celery import make_app
from producer import commands
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus
from worker import dispatch

from .helpers import rows, scalar
from .recovery_support import (
    assert_intact,
    build_clinic,
    cli,
    plan_only,
    quick,
    slow_batches,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _both_at_once(conn) -> bool:
    """One session inside the batch statement while another waits for its ledger row."""
    found = rows(
        conn,
        "SELECT count(*) FILTER (WHERE query LIKE 'WITH upd AS (UPDATE%%'), "
        "count(*) FILTER (WHERE wait_event_type = 'Lock') FROM pg_stat_activity "
        "WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()",
    )[0]
    return found[0] >= 1 and found[1] >= 1


def test_the_same_batch_delivered_twice_at_once_is_done_by_one_and_left_alone_by_the_other(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    slow_batches(conn, "users", 2.0)
    # No reconciler pass while the two deliveries run: the workers' first one would start the
    # planned stages of this run, nothing enqueued yet, and their batches would write too.
    fast = quick(settings, reconcile_interval_s=120)
    work = db.connect(fast.database_url)
    run_id = plan_only(work, fast)
    work.close()
    start_workers(2, **fast.__dict__)
    app = make_app(fast)
    sent = [
        app.send_task(dispatch.BATCH_TASK, args=(run_id, "users", 3), queue=fast.queue)
        for _ in range(2)
    ]

    wait_until(lambda: _both_at_once(conn), what="both deliveries in flight together")
    wait_until(lambda: all(r.ready() for r in sent), what="both deliveries to finish")

    outcomes = sorted((r.result["status"], r.result["rows"]) for r in sent)
    assert outcomes == [("skipped", 0), ("succeeded", 50)]
    batch = rows(
        conn,
        "SELECT status, attempts, rows FROM uuid_migration.batches "
        "WHERE stage = 'users' AND batch_no = 3",
    )
    # The second delivery either waited at its claim (attempts 1) or claimed just before the
    # first took the row (attempts 2); either way it wrote nothing.
    assert batch in ([("succeeded", 1, 50)], [("succeeded", 2, 50)])
    assert scalar(conn, "SELECT count(*) FROM id_mappings") == 50
    assert scalar(conn, "SELECT count(*) FROM users WHERE uuid_id IS NOT NULL") == 50

    finished = commands.run(fast, wait=True, out=io.StringIO(), allow_triggers=True)  # the rest of the run
    assert finished.status == RunStatus.SUCCEEDED and finished.run_id == run_id
    assert_intact(conn, before, run_id)


def test_pause_holds_the_work_without_dropping_it_and_resume_finishes_the_run(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    slow_batches(conn, "users", 0.3)
    slow_batches(conn, "dashboards", 0.3)
    # No reconciler may re-send anything here: the held messages alone must finish the run.
    fast = quick(settings, heartbeat_timeout_s=3600)
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    start_workers(2, **fast.__dict__)
    wait_until(lambda: _succeeded(conn) >= 3, what="some progress")

    paused = cli(fast, "pause")
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert json.loads(cli(fast, "status", "--json").stdout)["status"] == "paused"
    wait_until(lambda: not _running(conn), what="current batches to finish")
    held = _succeeded(conn)
    time.sleep(3)  # nothing may move while paused, however long we look
    assert _succeeded(conn) == held and not _running(conn)
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'pending'")

    assert cli(fast, "resume").returncode == 0
    assert wait_for_end(conn, queued.run_id) == RunStatus.SUCCEEDED
    assert_intact(conn, before, queued.run_id)
    resent = scalar(
        conn,
        "SELECT count(*) FROM uuid_migration.transitions WHERE error LIKE 'stale%%' "
        "OR error LIKE 'requeued%%'",
    )
    assert resent == 0


def _succeeded(conn) -> int:
    return scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'succeeded'")


def _running(conn) -> bool:
    return bool(
        scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'running'")
    )
