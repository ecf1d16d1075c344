"""The benchmark's own logic: phases from log lines, rates for the figure, the limit named in
the scale-out, and the plain SQL on a small clinic database checked with our own SQL."""

from __future__ import annotations

from devtools import bench_data, bench_plain
from devtools.bench_phases import READY_LINE, busy, task_times
from devtools.bench_plot import rates
from devtools.bench_sampler import Samples
from devtools.bench_scale import limit

from .helpers import SIZE, scalar

LOGS = (
    "2026-12-02 22:35:36,453 INFO MainProcess celery.apps.worker: uuid-migrate-1-17662@vm ready.\n"
    "2026-12-02 22:35:36,325 INFO MainProcess celery.apps.worker: uuid-migrate-2-17662@vm ready.\n"
    "2026-12-02 22:35:43,326 INFO ForkPoolWorker-1 celery.app.trace: Task uuid_migrate.validate"
    "[6f17ce18-c799-455c-b621-0c0ea4cdd233] succeeded in 0.5s: {'run_id': 'r'}\n"
)


def test_busy_counts_overlapping_intervals_once():
    assert busy([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)]) == 3.0
    assert busy([]) == 0.0


def test_log_lines_give_each_worker_ready_and_each_task_start_and_end():
    assert [s[-6:] for s in READY_LINE.findall(LOGS)] == ["36,453", "36,325"]
    [(start, end)] = task_times(LOGS)["validate"]
    assert round(end - start, 3) == 0.5


def test_rates_spread_a_batch_over_its_own_time():
    xs, ys = rates([("users", 0.0, 1.0, 100), ("clinics", 0.0, 1.0, 7)], "users", 0.5, 1.5)
    assert xs == [0.0, 0.5, 1.0, 1.5]
    assert ys == [100.0, 100.0, 0.0, 0.0]


def test_the_limit_named_is_the_one_measured():
    assert limit(Samples(machine_busy=0.97, polls=10), 2).startswith("CPU")
    assert limit(Samples(machine_busy=0.5, polls=10, lock_waits=20), 2).startswith("Lock waits")
    assert limit(Samples(machine_busy=0.5, polls=10, other_waits={"IO": 30}), 2).startswith("IO")
    assert limit(Samples(machine_busy=0.5, polls=10), 2).startswith("no limit")


def test_plain_sql_waves_follow_the_references():
    names = [[s.table for s in wave] for wave in bench_plain.waves(bench_plain.CLINIC)]
    assert names == [["users", "clinics"], ["dashboards", "providers"]]


def test_plain_sql_migrates_every_row_once_in_ranges_of_the_batch_size(clinic, database_url):
    with clinic.cursor() as cur:
        ranges = bench_plain.boundaries(cur, "dashboards", rows=300)
    assert len(ranges) == -(-SIZE.dashboards // 300) and ranges[0][0] is None
    assert all(lo == prev_hi for (lo, _), (_, prev_hi) in zip(ranges[1:], ranges, strict=False))

    done = bench_plain.migrate(database_url, 2)

    bench_data.check(database_url, bench_data.counts_of(SIZE), SIZE.orphans)  # exits if wrong
    assert sum(rows for *_, rows in done["batches"]) == sum(bench_data.counts_of(SIZE).values())
    assert scalar(clinic, "SELECT count(DISTINCT new_id) FROM id_mappings") == scalar(
        clinic, "SELECT count(*) FROM id_mappings"
    )
