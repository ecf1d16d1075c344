"""Our tasks keep to their own queue: an application's Celery workers on the same broker
never take them, and ours never take the application's. Callbacks and control tasks have a
queue of their own beside it, which a worker started with `--queues <queue>` consumes too."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys

import pytest

from config.celery import make_app as our_app
from devtools import sample
from producer import commands
from uuid_migrate.ledger.states import RunStatus
from worker import dispatch

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


def test_control_tasks_wait_in_their_own_queue_for_workers_started_later(
    conn, settings, start_workers, redis_conn
):
    """Batches alone in the run's queue; `retry` (sent by name, as from Flower) and the
    reconciler in the control queue, where workers started afterwards with `--queues <queue>`
    take them; the pages' callbacks go there too, or the run would not end."""
    with conn.cursor() as cur:
        sample.build(cur, sample.SampleSize.for_users(300))
    queued = commands.run(settings, plan_file="clinic", out=io.StringIO())
    control = dispatch.control_queue(settings.queue)
    sent = our_app(settings).send_task(dispatch.RETRY_TASK, kwargs={"run_id": queued.run_id}, queue=control)

    def names(queue: str) -> set[str]:
        return {json.loads(m)["headers"]["task"] for m in redis_conn.lrange(queue, 0, -1)}

    assert names(settings.queue) == {dispatch.BATCH_TASK}
    assert names(control) == {dispatch.RETRY_TASK, dispatch.RECONCILE_TASK}
    start_workers(2)

    wait_for(sent.ready, "the retry task's result")  # kept in Redis, read without pub/sub
    assert sent.result == {"run_id": queued.run_id, "resent": []}
    final = commands.watch(settings, redis_conn, queued.run_id, io.StringIO(), resumed=False)
    assert final.status == RunStatus.SUCCEEDED
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status <> 'succeeded'") == 0


def test_control_tasks_sent_by_name_alone_are_routed_to_the_control_queue():
    from worker.celery_app import app, settings

    for name in dispatch.CONTROL_TASKS:
        route = app.amqp.router.route({}, name)
        assert route["queue"].name == dispatch.control_queue(settings.queue), name
    assert app.amqp.router.route({}, dispatch.BATCH_TASK)["queue"].name == settings.queue
