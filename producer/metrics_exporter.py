"""`uuid-migrate metrics`: a Prometheus exporter that asks the ledger on every scrape.

Workers on many machines need no metrics port of their own: every batch is in the ledger, so
one exporter anywhere that reaches the database reports the whole run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from uuid_migrate import db
from uuid_migrate.progression import metrics

log = logging.getLogger("uuid_migrate.metrics")

PREFIX = "uuid_migrate"


class LedgerCollector(Collector):
    """Reads the latest run's metrics from the database at each scrape."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{PREFIX}_ledger_up", "1 if the last scrape could read the ledger")
        try:
            with db.connection(self.database_url) as conn, conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
                snapshot = metrics.collect(cur)
        except Exception as exc:  # a scrape reports the outage instead of failing
            log.warning("cannot read the ledger: %s", db.mask_secrets(str(exc).strip()))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        if snapshot is not None:
            yield from families(snapshot)


def families(run: metrics.RunMetrics) -> Iterator[Metric]:
    """The run's metrics as Prometheus families; labels never hold a connection string."""
    yield from _run_families(run)
    yield from _stage_families(run)


def _run_families(run: metrics.RunMetrics) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        f"{PREFIX}_run_info", "the latest run (1) and its status", labels=["run", "status"]
    )
    info.add_metric([run.run_id, run.status], 1)
    yield info
    yield _run_gauge(
        f"{PREFIX}_run_eta_seconds", "seconds left at the run's rate so far", run, run.eta_seconds
    )
    yield _run_gauge(
        f"{PREFIX}_run_rows_per_second",
        "average rows per second of the run",
        run,
        run.rows_per_second,
    )


def _stage_families(run: metrics.RunMetrics) -> Iterator[Metric]:
    labels = ["run", "stage", "table"]
    migrated = CounterMetricFamily(
        f"{PREFIX}_rows_migrated",
        "rows of finished batches (planned rows of succeeded batches)",
        labels=labels,
    )
    changed = CounterMetricFamily(
        f"{PREFIX}_rows_changed", "rows the succeeded batches updated", labels=labels
    )
    planned = GaugeMetricFamily(
        f"{PREFIX}_rows_planned", "rows planned for the stage", labels=labels
    )
    retries = CounterMetricFamily(
        f"{PREFIX}_batch_retries", "extra attempts of batches (attempts - 1)", labels=labels
    )
    batches = GaugeMetricFamily(f"{PREFIX}_batches", "batches by state", labels=[*labels, "state"])
    duration = HistogramMetricFamily(
        f"{PREFIX}_batch_duration_seconds",
        "duration of finished batches (last attempt)",
        labels=labels,
    )
    for stage in run.stages:
        values = [run.run_id, stage.stage, stage.table]
        migrated.add_metric(values, stage.rows_processed)
        changed.add_metric(values, stage.rows_changed)
        planned.add_metric(values, stage.total_rows)
        retries.add_metric(values, stage.retries)
        for state, count in stage.batches.items():
            batches.add_metric([*values, state], count)
        duration.add_metric(values, _buckets(stage), stage.duration_sum)
    yield from (migrated, changed, planned, retries, batches, duration)


def _run_gauge(name: str, doc: str, run: metrics.RunMetrics, value: float | None) -> Metric:
    gauge = GaugeMetricFamily(name, doc, labels=["run"])
    gauge.add_metric([run.run_id], math.nan if value is None else value)
    return gauge


def _buckets(stage: metrics.StageMetrics) -> list[tuple[str, Any]]:
    bounds = [floatToGoString(b) for b in metrics.DURATION_BOUNDS] + ["+Inf"]
    counts = stage.duration_buckets or (0,) * len(bounds)
    return list(zip(bounds, counts, strict=True))
