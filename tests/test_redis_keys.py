"""Redis holds nothing per batch after a run: no Celery result key per batch or per page."""

from __future__ import annotations

import re

import pytest

from uuid_migrate.ledger.states import RunStatus

from .helpers import run_clinic, scalar

pytestmark = pytest.mark.e2e

#: A finished task's id in a worker's log line (Celery's format, or config.logs' text format).
TASK_ID = re.compile(r"Task uuid_migrate\.(\w+)\[([0-9a-f-]{36})\] succeeded")


def test_a_run_leaves_no_result_key_per_batch_or_page(clinic, settings, redis_conn, tmp_path):
    result = run_clinic(settings, worker_logs=tmp_path)

    assert result.status == RunStatus.SUCCEEDED
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
    ids: dict[str, list[str]] = {}
    for task, task_id in TASK_ID.findall(logs):
        ids.setdefault(task, []).append(task_id)
    batches = scalar(
        clinic, "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s", (result.run_id,)
    )
    assert len(ids["batch"]) >= batches > 24, "the test needs dozens of batches, each logged"
    assert ids["page_done"], "the run's pages each end in a callback"
    per_batch_or_page = ids["batch"] + ids["page_done"] + ids.get("reconcile", [])
    kept = [i for i in per_batch_or_page if redis_conn.exists(f"celery-task-meta-{i}")]
    assert kept == []
    # The run's one validation keeps its result (a day), so results are stored at all.
    assert all(redis_conn.exists(f"celery-task-meta-{i}") for i in ids["validate"])
    assert 0 < redis_conn.ttl(f"celery-task-meta-{ids['validate'][0]}") <= 24 * 3600
