"""The throttle: one row budget for the whole run, kept by every worker together, and a rest
while the database is past a health threshold, shown by `status`; the run goes on after."""

from __future__ import annotations

import io
import time

import psycopg2
import pytest

from producer import commands, status_command
from uuid_migrate.execution.throttle import Limits, Throttle
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
