"""Redis flushed mid-run (a private server: never the shared one), and a producer killed
after writing the ledger but before it enqueued everything."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
import redis

from devtools import services
from producer import commands
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.progression.live import Progress

from .helpers import rows, scalar
from .recovery_support import (
    DEADLINE_S,
    assert_intact,
    build_clinic,
    cli,
    environment,
    quick,
    slow_batches,
    wait_until,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_redis(tmp_path):
    stops = []
    url = services.start_redis(tmp_path, stops.append)
    yield url
    for stop in stops:
        stop()


def _succeeded(conn) -> int:
    if not scalar(conn, "SELECT to_regclass('uuid_migration.batches') IS NOT NULL"):
        return 0
    return scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'succeeded'")


def test_flushall_mid_run_completes_from_the_ledger_and_status_is_right_again(
    conn, settings, private_redis, start_workers
):
    before = build_clinic(conn)
    slow_batches(conn, "users", 0.3)
    slow_batches(conn, "dashboards", 0.3)
    fast = quick(settings, redis_url=private_redis, broker_url=private_redis)
    start_workers(2, **fast.__dict__)
    producer = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "run", "--allow-triggers", "--plan", "clinic", "--wait"],
        env=environment(fast),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _succeeded(conn) >= 8, what="some progress")
        redis.Redis.from_url(private_redis).flushall()
        out, err = producer.communicate(timeout=DEADLINE_S)
    finally:
        if producer.poll() is None:
            producer.kill()

    assert producer.returncode == 0, (out[-2000:], err[-2000:])
    run_id = scalar(conn, "SELECT run_id FROM uuid_migration.runs")
    assert_intact(conn, before, run_id)
    status = json.loads(cli(fast, "status", "--json").stdout)
    assert status["status"] == "succeeded"
    for checkpoint in status["tables"]:
        assert checkpoint["status"] == "completed"
        assert checkpoint["processedCount"] == checkpoint["totalCount"] > 0
    progress = Progress(redis.Redis.from_url(private_redis, decode_responses=True), run_id)
    for stage, total in rows(conn, "SELECT stage, total_rows FROM uuid_migration.stages"):
        counters = progress.stage(stage)
        assert counters["total"] == total and counters["processed"] == total, (stage, counters)
        assert progress.checkpoint(stage)["totalCount"] == total


@contextlib.contextmanager
def black_hole():
    """A TCP port that accepts connections and never answers: a broker that hangs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def test_a_producer_killed_before_enqueueing_resumes_with_run_again(
    conn, settings, start_workers
):
    before = build_clinic(conn)
    fast = quick(settings)
    with black_hole() as port:
        hung = replace(fast, broker_url=f"redis://127.0.0.1:{port}/0")
        producer = subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "run", "--allow-triggers", "--plan", "clinic"],
            env=environment(hung),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _stages_claimed(conn), what="the producer to claim stages")
        finally:
            os.kill(producer.pid, signal.SIGKILL)
            producer.wait(timeout=30)
    run_id = scalar(conn, "SELECT run_id FROM uuid_migration.runs")
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.batches") > 30  # the ledger is written
    assert _succeeded(conn) == 0

    start_workers(2, **fast.__dict__)
    again = commands.run(fast, plan_file="clinic", wait=True, out=io.StringIO(), allow_triggers=True)

    assert (again.run_id, again.resumed, again.status) == (run_id, True, RunStatus.SUCCEEDED)
    assert_intact(conn, before, run_id)
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.runs") == 1
    assert scalar(conn, "SELECT max(attempts) FROM uuid_migration.batches") == 1  # none redone


def _stages_claimed(conn) -> bool:
    if not scalar(conn, "SELECT to_regclass('uuid_migration.stages') IS NOT NULL"):
        return False
    return bool(
        scalar(conn, "SELECT count(*) FROM uuid_migration.stages WHERE status = 'running'")
    )
