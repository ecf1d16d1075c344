"""Signals to a real `run --workers 2 --wait`: its workers stop with it, whatever the signal,
and a later `run` finishes the run. Every process is counted by its pid.

The batches are slow (0.5 s) only until the signal, so that it hits a run mid-way; the `run`
that resumes it then goes at full speed."""

from __future__ import annotations

import signal

import pytest

from .helpers import scalar
from .recovery_support import (
    ORIGINAL_COLUMNS,
    assert_intact,
    build_clinic,
    cli,
    fast_batches,
    pid_alive,
    quick,
    slow_batches,
    start_producer,
    stop_if_running,
    wait_until,
    worker_family,
)

pytestmark = pytest.mark.e2e

#: The grace of the test that waits it out (the default 20 s would only cost time).
COLD_GRACE_S = 3


def _batches(conn, status: str) -> int:
    if not scalar(conn, "SELECT to_regclass('uuid_migration.batches') IS NOT NULL"):
        return 0
    return scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = %s", (status,))


def _slow_clinic(conn) -> dict[str, str]:
    """The sample, with batches slow enough (0.5 s each) that the run is mid-way when hit."""
    before = build_clinic(conn)
    slow_batches(conn, "users", 0.5)
    slow_batches(conn, "dashboards", 0.5)
    return before


def _all_gone(pids: list[int], timeout: float, what: str) -> None:
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, what)


def _resume_finishes(conn, settings, before: dict[str, str], run_id: str, tmp_path) -> None:
    """A plain `run --wait` afterwards resumes the same run and migrates every row."""
    fast_batches(conn, "users", "dashboards")
    again = cli(settings, "run", "--workers", "2", "--wait", "--worker-logs", str(tmp_path / "again"))
    assert again.returncode == 0, (again.stdout[-2000:], again.stderr[-2000:])
    assert f"resuming run {run_id}" in again.stdout
    for table in ORIGINAL_COLUMNS:
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE uuid_id IS NULL") == 0, table
    assert _batches(conn, "pending") == _batches(conn, "running") == 0
    assert_intact(conn, before, run_id)


def _run_id(conn) -> str:
    return scalar(conn, "SELECT run_id FROM uuid_migration.runs")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_or_sighup_stops_the_workers_like_ctrl_c_and_the_run_resumes(
    conn, settings, tmp_path, signum
):
    before = _slow_clinic(conn)
    fast = quick(settings)
    producer = start_producer(fast, "run", "--allow-triggers", "--plan", "clinic", "--workers", "2", "--wait")
    try:
        family = worker_family(producer, 2)
        wait_until(lambda: _batches(conn, "succeeded") >= 3, what="some batches done")
        producer.send_signal(signum)
        out, err = producer.communicate(timeout=fast.worker_stop_grace_s + 60)
    finally:
        stop_if_running(producer)

    assert producer.returncode == 128 + signum, (out[-2000:], err[-2000:])
    assert err.strip().splitlines()[-1] == (
        f"uuid-migrate: error: interrupted by {signum.name}; "
        "`uuid-migrate run` resumes the same run"
    )
    assert "Traceback" not in err
    assert "worker logs kept in" in out
    _all_gone(family, 10, "the workers and their pool processes to end")
    assert _batches(conn, "pending") > 0, "the run was cut short, not finished"
    _resume_finishes(conn, fast, before, _run_id(conn), tmp_path)


def test_a_producer_killed_with_sigkill_leaves_no_worker_behind(conn, settings, tmp_path):
    before = _slow_clinic(conn)
    fast = quick(settings)
    logs = tmp_path / "logs"
    producer = start_producer(
        fast, "run", "--allow-triggers", "--plan", "clinic", "--workers", "2", "--wait", "--worker-logs", str(logs)
    )
    try:
        family = worker_family(producer, 2)
        wait_until(lambda: _batches(conn, "succeeded") >= 3, what="some batches done")
        producer.kill()
        producer.communicate(timeout=30)
    finally:
        stop_if_running(producer)

    # Warm: each finishes the batch it holds (0.5 s), well before the cold stop (a cold stop
    # is waited for too, so that the log below says it happened rather than a timeout here).
    _all_gone(family, fast.worker_stop_grace_s + 30, "the orphaned workers and their pools to end")
    text = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert text.count(f"the uuid-migrate producer (pid {producer.pid}) is gone") == 2
    assert "stopping now" not in text  # no cold stop was needed
    assert _batches(conn, "pending") > 0
    _resume_finishes(conn, fast, before, _run_id(conn), tmp_path)


def test_a_worker_that_cannot_finish_its_batch_is_killed_after_the_grace_with_its_pool(
    conn, settings, tmp_path
):
    # Paused, a worker holds its message and waits: a warm shutdown never ends, the cold
    # one after the grace (short here: it is waited out) must take the worker and its pool.
    before = _slow_clinic(conn)
    fast = quick(settings, worker_stop_grace_s=COLD_GRACE_S)
    logs = tmp_path / "logs"
    producer = start_producer(
        fast, "run", "--allow-triggers", "--plan", "clinic", "--workers", "1", "--wait", "--worker-logs", str(logs)
    )
    try:
        family = worker_family(producer, 1)
        wait_until(lambda: _batches(conn, "succeeded") >= 2, what="some batches done")
        assert cli(fast, "pause").returncode == 0
        wait_until(lambda: _batches(conn, "running") == 0, what="the current batch to end")
        producer.kill()
        producer.communicate(timeout=30)
    finally:
        stop_if_running(producer)

    _all_gone(family, COLD_GRACE_S + 30, "the cold stop of the worker and its pool process")
    text = (logs / "worker-1.log").read_text()
    assert f"still running {COLD_GRACE_S} s later: stopping now" in text
    assert cli(fast, "resume").returncode == 0
    _resume_finishes(conn, fast, before, _run_id(conn), tmp_path)
