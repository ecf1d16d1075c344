"""Our tasks keep to their own queue: an application's Celery workers on the same broker
never take them, and ours never take the application's."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys

import pytest

from devtools import sample
from producer import commands
from uuid_migrate.ledger.states import RunStatus

from .foreign_app import WHOAMI, make_app
from .helpers import scalar
from .watch import ROOT, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def foreign_worker(settings, tmp_path):
    """A real worker of another Celery app, consuming its own queue on our broker."""
    queue = f"app_test.{secrets.token_hex(5)}"
    env = {**os.environ, "BROKER_URL": settings.broker_url, "REDIS_URL": settings.redis_url}
    env["FOREIGN_QUEUE"] = queue
    log = tmp_path / "foreign.log"
    name = f"foreign-{secrets.token_hex(3)}@%h"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.foreign_app", "worker", "--queues", queue,
             "--concurrency", "1", "--pool", "solo", "--hostname", name, "--loglevel", "INFO",
             "--without-gossip", "--without-mingle"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield make_app(settings.broker_url, settings.redis_url, queue), log
    proc.terminate()
    proc.wait(timeout=30)


def test_a_shared_broker_keeps_our_tasks_and_an_applications_tasks_apart(
    conn, settings, start_workers, foreign_worker
):
    foreign_app, foreign_log = foreign_worker
    whoami = foreign_app.signature(WHOAMI)
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(300))
    ours = start_workers(2)
    before = whoami.apply_async()  # sent while our workers listen

    result = commands.run(settings, plan_file="clinic", out=io.StringIO(), wait=True)
    after = whoami.apply_async()

    assert result.status == RunStatus.SUCCEEDED
    assert (
        scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status <> 'succeeded'") == 0
    )
    assert before.get(timeout=90).startswith("foreign-")
    assert after.get(timeout=90).startswith("foreign-")
    wait_for(lambda: foreign_log.read_text().count("succeeded in") >= 2, "the foreign tasks' log")
    foreign_text = foreign_log.read_text()
    assert "uuid_migrate." not in foreign_text, "the application's worker saw one of our tasks"
    for path in ours.log_dir.glob("worker-*.log"):
        assert "foreign_app" not in path.read_text(), "our worker saw the application's task"
