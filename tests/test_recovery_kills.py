"""Killed workers and killed database sessions, with real processes and real signals."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest

from producer import commands
from uuid_migrate.ledger import transitions
from uuid_migrate.ledger.states import RunStatus

from .helpers import rows, scalar
from .recovery_support import (
    DEADLINE_S,
    assert_intact,
    batch_ports,
    build_clinic,
    environment,
    extra_attempts,
    pid_alive,
    pool_process_mid_batch,
    quick,
    slow_batches,
    terminate_sessions,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_sigkill_of_a_worker_mid_transaction_three_times_and_the_run_completes(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    slow_batches(conn, "users", 0.5)
    slow_batches(conn, "dashboards", 0.5)
    fast = quick(settings)
    # planned, no worker yet
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    workers = start_workers(2, **fast.__dict__)
    mains = [p.pid for p in workers.processes]

    killed = []
    for _ in range(3):
        pid = wait_until(lambda: pool_process_mid_batch(conn, mains), what="a batch mid-statement")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        wait_until(lambda p=pid: not pid_alive(p), 30, "the pool process to die")

    assert wait_for_end(conn, queued.run_id) == RunStatus.SUCCEEDED
    assert len(set(killed)) == 3
    assert extra_attempts(conn, queued.run_id) >= 3  # each killed batch was claimed again
    assert_intact(conn, before, queued.run_id)


def test_a_whole_worker_node_killed_is_recovered_by_its_missing_heartbeat(
    conn, settings, start_workers
):
    # The killed node's unacknowledged message would come back only after the broker's
    # visibility timeout (an hour); the heartbeat and the reconciler must not need it.
    before = build_clinic(conn)
    slow_batches(conn, "users", 1.0)
    fast = quick(settings)
    queued = commands.run(fast, plan_file="clinic", out=io.StringIO(), allow_triggers=True)
    node = start_workers(1, **fast.__dict__)
    mains = [p.pid for p in node.processes]
    wait_until(lambda: pool_process_mid_batch(conn, mains), what="a batch mid-statement")
    stuck = rows(
        conn,
        "SELECT stage, batch_no FROM uuid_migration.batches WHERE run_id = %s "
        "AND status = 'running'",
        (queued.run_id,),
    )
    os.killpg(node.processes[0].pid, signal.SIGKILL)  # main process and pool, no goodbye
    node.processes[0].wait(timeout=30)

    start_workers(1, **fast.__dict__)
    assert wait_for_end(conn, queued.run_id) == RunStatus.SUCCEEDED

    assert_intact(conn, before, queued.run_id)
    with conn.cursor() as cur:
        history = transitions.history(cur, queued.run_id, *stuck[0])
    assert any(
        h["from"] == "running" and h["to"] == "pending" and "stale" in (h["error"] or "")
        for h in history
    ), history
    assert history[-1]["to"] == "succeeded"


def test_terminating_the_tools_postgres_sessions_mid_run_and_the_run_completes(conn, settings):
    before = build_clinic(conn)
    slow_batches(conn, "users", 0.3)
    slow_batches(conn, "dashboards", 0.3)
    fast = quick(settings)
    producer = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "run", "--allow-triggers", "--plan", "clinic",
         "--workers", "2", "--wait"],
        env=environment(fast),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        terminated = 0
        for round_ in range(3):
            wait_until(lambda r=round_: _succeeded(conn) > 4 * r + 1, what="progress")
            wait_until(lambda: batch_ports(conn), what="a batch mid-statement")
            terminated += terminate_sessions(conn)
        out, err = producer.communicate(timeout=DEADLINE_S)
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 0, (out[-2000:], err[-2000:])
    assert terminated >= 6  # workers' and the producer's sessions, three times
    run_id = scalar(conn, "SELECT run_id FROM uuid_migration.runs")
    assert_intact(conn, before, run_id)
    errors = rows(
        conn, "SELECT error FROM uuid_migration.transitions WHERE to_status = 'pending'"
    )
    assert any("terminat" in (e or "") or "closed" in (e or "") for (e,) in errors), errors


def _succeeded(conn) -> int:
    if not scalar(conn, "SELECT to_regclass('uuid_migration.batches') IS NOT NULL"):
        return 0
    return scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'succeeded'")
