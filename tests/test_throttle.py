"""The throttle: one row budget for the whole run, kept by every worker together, and a rest
while the database is past a health threshold, shown by `status`; the run goes on after."""

from __future__ import annotations

import io
import threading
import time

import psycopg2
import pytest

from producer import commands, status_command
from uuid_migrate.execution.throttle import MAX_REST_S, Limits, Throttle
from uuid_migrate.ledger.states import RunStatus

from .helpers import rows, scalar
from .recovery_support import quick, wait_for_end, wait_until

pytestmark = pytest.mark.e2e

BUDGET = 1500  # rows per second; the clinic sample writes 3,400 rows in all


def _rate(conn, run_id: str) -> tuple[int, float]:
    """(rows written, seconds from the first batch's start to the last one's end)."""
    return rows(
        conn,
        "SELECT sum(rows)::int, extract(epoch FROM max(finished_at) - min(started_at))::float "
        "FROM uuid_migration.batches WHERE run_id = %s AND status = 'succeeded'",
        (run_id,),
    )[0]


def test_two_workers_share_one_row_budget(clinic, settings):
    result = commands.run(
        settings, plan_file="clinic", workers=2, out=io.StringIO(), max_rows_per_second=BUDGET
    )

    assert result.status == RunStatus.SUCCEEDED
    written, seconds = _rate(clinic, result.run_id)
    # every batch but each worker's first is paid for before the next starts
    assert written / seconds <= BUDGET * 1.1, (written, seconds)
    assert seconds >= (written - 2 * settings.batch_size) / BUDGET
    assert status_command.status(settings)["maxRowsPerSecond"] == BUDGET


def test_workers_rest_while_a_transaction_holds_back_cleanup_and_status_says_why(
    clinic, settings, start_workers
):
    fast = quick(settings, throttle_oldest_transaction_s=1.0)
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO())  # queued, no worker yet
    app = psycopg2.connect(settings.database_url, application_name="the-application")
    with app.cursor() as cur:
        cur.execute("SELECT txid_current()")  # an open transaction with an id: cleanup waits
    time.sleep(1.5)  # older than the threshold before the first batch
    try:
        start_workers(1, **fast.__dict__)
        reason = wait_until(
            lambda: status_command.status(fast)["throttled"], timeout=30,
            what="status to say it is throttled",
        )
        assert "holds back cleanup" in reason
        assert scalar(
            clinic,
            "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s AND status = 'succeeded'",
            (queued.run_id,),
        ) == 0
    finally:
        app.rollback()
        app.close()

    assert wait_for_end(clinic, queued.run_id) == RunStatus.SUCCEEDED
    assert scalar(clinic, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0


def test_workers_pace_themselves_while_the_application_works_and_status_says_so(
    clinic, settings, start_workers
):
    paced = quick(settings, throttle_application_rest=3.0)
    queued = commands.run(paced, plan_file="clinic", out=io.StringIO())  # queued, no worker yet
    stop = threading.Event()

    def application() -> None:
        app = psycopg2.connect(settings.database_url, application_name="the-application")
        app.autocommit = True
        with app.cursor() as cur:
            while not stop.wait(0.1):
                cur.execute("SELECT count(*) FROM clinics")
        app.close()

    thread = threading.Thread(target=application)
    thread.start()
    try:
        start_workers(1, **paced.__dict__)
        reason = wait_until(
            lambda: status_command.status(paced)["throttled"], timeout=30,
            what="status to say it is throttled",
        )
        assert reason == "the application is active (1 session): resting 3 x each batch's time"
    finally:
        stop.set()
        thread.join(10)

    assert wait_for_end(clinic, queued.run_id) == RunStatus.SUCCEEDED
    assert scalar(clinic, "SELECT count(*) FROM dashboards WHERE uuid_id IS NULL") == 0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_health_signal_trips_past_its_threshold_only():
    clock = _Clock()
    throttle = Throttle(None, Limits(replication_lag_s=1.5, oldest_transaction_s=60, wal_mb_per_s=10), clock)

    assert throttle._judge(2.0, 0, 0, clock.now).startswith("replication lag 2.0 s")
    assert throttle._judge(1.0, 61, 0, clock.now).startswith("a transaction open for 61 s")
    clock.now = 1.0
    assert throttle._judge(1.0, 10, 5e6, clock.now) is None  # 5 MB in a second
    clock.now = 2.0
    assert throttle._judge(1.0, 10, 25e6, clock.now).startswith("WAL 20.0 MB/s")
    off = Throttle(None, Limits(0, 0, 0), clock)
    assert off._judge(99, 9999, 1e12, clock.now) is None


def test_workers_rest_a_share_of_each_batch_only_while_the_application_is_active():
    clock = _Clock()
    throttle = Throttle(None, Limits(application_sessions=2, application_rest=0.5), clock)
    throttle._rates["run"] = (0, float("inf"))  # no row budget, known for good: no reads

    assert throttle.book(None, "run", 0) == 0  # the first batch: nothing measured yet
    clock.now = 0.2  # that batch took 0.2 s; nobody else uses the database
    assert throttle.book(None, "run", 0) == 0
    throttle._sessions = 1  # one session is below the threshold of 2
    clock.now = 0.4
    assert throttle.book(None, "run", 0) == 0
    throttle._sessions = 3
    clock.now = 0.8  # a batch of 0.4 s: rest half of it, then start the next
    assert throttle.book(None, "run", 0) == pytest.approx(0.2)
    clock.now = 1.0 + 0.1  # let go at 1.0, that batch took 0.1 s
    assert throttle.book(None, "run", 0) == pytest.approx(0.05)
    assert throttle.pacing() == "the application is active (3 sessions): resting 0.5 x each batch's time"
    clock.now = 100.0  # an idle gap between tasks is no batch: the rest stays bounded
    assert throttle.book(None, "run", 0) == MAX_REST_S
    throttle._sessions = 1
    assert throttle.pacing().startswith("the application is active (1 session): ")
    off = Throttle(None, Limits(application_sessions=2, application_rest=0), clock)
    off._sessions, off._started = 5, 0.0
    assert off.rest(clock.now) == 0
    off = Throttle(None, Limits(application_sessions=0, application_rest=1), clock)
    off._sessions, off._started = 5, 0.0
    assert off.rest(clock.now) == 0


def test_the_application_signal_counts_other_sessions_of_this_database_only(database_url):
    """Sessions of the tool (its application_name) and of other databases are not the
    application; one that just ran a statement here is, and an idle one stops counting."""
    throttle = Throttle(None, Limits(), clock=iter(range(0, 1000, 10)).__next__)
    tool = psycopg2.connect(database_url, application_name="uuid-migrate")
    tool.autocommit = True  # the activity statistics are read once per transaction
    with tool.cursor() as cur:
        other_db = psycopg2.connect(database_url.rsplit("/", 1)[0] + "/postgres",
                                    application_name="elsewhere")  # fmt: skip
        other_db.cursor().execute("SELECT 1")
        throttle.reason(cur)
        assert throttle._sessions == 0
        app = psycopg2.connect(database_url, application_name="the-application")
        app.cursor().execute("SELECT 1")
        throttle.reason(cur)
        assert throttle._sessions == 1
        time.sleep(1.2)  # idle for longer than a second: no longer active
        throttle.reason(cur)
        assert throttle._sessions == 0
        app.close()
        other_db.close()
    tool.close()
