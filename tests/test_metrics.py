"""Prometheus metrics: the arithmetic, and the real exporter counting a real run over HTTP."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from devtools import sample
from producer import commands
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.progression.metrics import DURATION_BOUNDS, cumulative_buckets, eta_seconds

from .helpers import rows, scalar
from .watch import (
    cli_server,
    free_port,
    http_get,
    secret_password,
    server_ready,
    wait_for,
    with_password,
)

SIZE = sample.SampleSize.for_users(300)


def test_buckets_are_cumulative_and_inclusive_of_their_bound():
    bounds = (0.1, 1.0, 10.0)
    # keyed by how many bounds are >= the duration: 3 -> <= 0.1, 1 -> in (1, 10], 0 -> above all
    assert cumulative_buckets(bounds, {3: 2, 1: 5, 0: 1}) == (2, 2, 7, 8)
    assert cumulative_buckets(bounds, {}) == (0, 0, 0, 0)


def test_eta_is_the_rest_at_the_average_rate_and_zero_when_done():
    assert eta_seconds(total=1000, done=250, elapsed_s=10, finished=False) == 30
    assert eta_seconds(total=1000, done=0, elapsed_s=10, finished=False) is None
    assert eta_seconds(total=1000, done=10, elapsed_s=1, finished=True) == 0


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    found = [v for (n, ls), v in metrics.items() if n == name and wanted <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.mark.e2e
def test_the_exporter_counts_the_rows_and_batches_of_a_real_run(conn, settings, tmp_path):
    with conn.cursor() as cur:
        sample.build(cur, SIZE)
    password = secret_password()
    url = with_password(settings.database_url, password)
    result = commands.run(
        replace(settings, database_url=url), plan_file="clinic", workers=2, out=io.StringIO()
    )
    assert result.status == RunStatus.SUCCEEDED
    port = free_port()
    log = tmp_path / "metrics.log"

    with cli_server(["metrics", "--port", str(port)], {"DATABASE_URL": url}, log) as server:
        endpoint = f"http://127.0.0.1:{port}/metrics"
        wait_for(server_ready(server, endpoint, log), "the metrics exporter to answer")
        status, body = http_get(endpoint)

    assert status == 200 and password not in body and password not in log.read_text()
    metrics = samples(body)
    run = {"run": result.run_id}
    assert value(metrics, "uuid_migrate_ledger_up") == 1
    for table, count in (("users", SIZE.users), ("dashboards", SIZE.dashboards)):
        assert value(metrics, "uuid_migrate_rows_migrated_total", table=table, **run) == count
        assert value(metrics, "uuid_migrate_rows_changed_total", table=table, **run) == count
        assert value(metrics, "uuid_migrate_rows_planned", table=table, **run) == count
    for stage, succeeded in rows(
        conn, "SELECT stage, count(*) FROM uuid_migration.batches GROUP BY stage"
    ):
        labels = {"stage": stage, **run}
        assert value(metrics, "uuid_migrate_batches", state="succeeded", **labels) == succeeded
        assert value(metrics, "uuid_migrate_batches", state="failed", **labels) == 0
        assert value(metrics, "uuid_migrate_batch_duration_seconds_count", **labels) == succeeded
        assert (
            value(metrics, "uuid_migrate_batch_duration_seconds_bucket", le="+Inf", **labels)
            == succeeded
        )
        assert value(metrics, "uuid_migrate_batch_retries_total", **labels) == 0
    longest = scalar(
        conn,
        "SELECT max(extract(epoch FROM finished_at - started_at))::float8 FROM uuid_migration.batches",
    )
    first_covering = next(b for b in DURATION_BOUNDS if b >= longest)
    le_total = sum(
        v
        for (n, ls), v in metrics.items()
        if n == "uuid_migrate_batch_duration_seconds_bucket"
        and ("le", floatToGoString(first_covering)) in ls
    )
    assert le_total == scalar(conn, "SELECT count(*) FROM uuid_migration.batches")
    assert value(metrics, "uuid_migrate_run_eta_seconds", **run) == 0
    assert value(metrics, "uuid_migrate_run_info", status="succeeded", **run) == 1
    assert not math.isnan(value(metrics, "uuid_migrate_run_rows_per_second", **run))


@pytest.mark.e2e
def test_the_exporter_reports_an_unreachable_ledger_instead_of_failing(tmp_path):
    port = free_port()
    log = tmp_path / "metrics.log"
    env = {"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"}

    with cli_server(["metrics", "--port", str(port)], env, log) as server:
        endpoint = f"http://127.0.0.1:{port}/metrics"
        wait_for(server_ready(server, endpoint, log), "the metrics exporter to answer")
        status, body = http_get(endpoint)

    assert status == 200 and "uuid_migrate_ledger_up 0.0" in body
    assert "hunter2" not in body and "hunter2" not in log.read_text()
