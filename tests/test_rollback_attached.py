"""A rollback refuses while a real `run --workers 1 --wait` is attached to the run, running
or paused, and changes nothing; with --force it rolls back and the producer ends."""

from __future__ import annotations

import pytest

from .helpers import database_dump, scalar
from .recovery_support import (
    DEADLINE_S,
    build_clinic,
    cli,
    quick,
    slow_batches,
    start_producer,
    stop_if_running,
    wait_until,
    worker_family,
)

pytestmark = pytest.mark.e2e

REFUSAL = "uuid-migrate: error: a uuid-migrate producer is attached to this database"


def _batches(conn, status: str) -> int:
    if not scalar(conn, "SELECT to_regclass('uuid_migration.batches') IS NOT NULL"):
        return 0
    return scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = %s", (status,))


def _refused(settings) -> None:
    result = cli(settings, "rollback", "--yes")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(REFUSAL), result.stderr
    assert "paused or not" in result.stderr and "--force" in result.stderr


def test_rollback_refuses_while_a_producer_is_attached_running_or_paused(conn, settings):
    build_clinic(conn)
    slow_batches(conn, "users", 0.5)
    slow_batches(conn, "dashboards", 0.5)
    fast = quick(settings)
    before = database_dump(conn, settings.database_url)
    producer = start_producer(fast, "run", "--allow-triggers", "--plan", "clinic", "--workers", "1", "--wait")
    try:
        worker_family(producer, 1)
        wait_until(lambda: _batches(conn, "succeeded") >= 2, what="some batches done")

        _refused(fast)  # running
        assert scalar(conn, "SELECT status FROM uuid_migration.runs") == "running"
        assert cli(fast, "pause").returncode == 0
        wait_until(lambda: _batches(conn, "running") == 0, what="the current batch to end")
        paused = database_dump(conn, settings.database_url)
        _refused(fast)  # paused: no batch runs, the producer alone is the reason
        assert database_dump(conn, settings.database_url) == paused
        assert producer.poll() is None, "the producer is still attached"

        forced = cli(fast, "rollback", "--yes", "--force")
        out, err = producer.communicate(timeout=DEADLINE_S)
    finally:
        stop_if_running(producer)

    assert forced.returncode == 0, (forced.stdout, forced.stderr)
    assert "matches its snapshot" in forced.stdout
    assert producer.returncode == 1, (out[-2000:], err[-2000:])
    assert "rolling_back" in out or "rolled_back" in out
    assert database_dump(conn, settings.database_url) == before
