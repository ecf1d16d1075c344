"""Online benchmark: an application's latency before and during `uuid-migrate run`, the run's
rate with the default throttle and without, the rows it left behind, and the triggers' cost.

    python -m devtools.bench_online [--users N] [--workers N] [--rest R ...] [--output FILE]

DATABASE_URL names the server (scratch databases are created there and dropped), REDIS_URL the
broker. Every phase runs on its own file copy of one pristine database (CREATE DATABASE ...
TEMPLATE), with the application (devtools.bench_workload) writing throughout; `--rest R` adds a
phase run with THROTTLE_APPLICATION_REST=R, to show the trade between latency and speed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devtools import bench_plain, bench_triggers, sample
from devtools.bench_data import pristine, scratch_db
from devtools.bench_workload import MAX_SECONDS, Timings, Workload, percentile
from uuid_migrate import db
from uuid_migrate.ledger import runs, throttles

CLI = Path(sys.executable).with_name("uuid-migrate")
BEFORE_S = 15.0  # the application alone, before each run
WARM_UP_S = 2.0  # the application runs this long before anything is measured
#: Every brake of the throttle off.
UNTHROTTLED = {
    "THROTTLE_APPLICATION_REST": "0",
    "THROTTLE_REPLICATION_LAG_S": "0",
    "THROTTLE_OLDEST_TRANSACTION_S": "0",
}
TABLES = ("users", "clinics", "dashboards", "providers")
REFERENCES = (("dashboards", "user_id", "users", "user_uuid_id"),
              ("providers", "clinic_id", "clinics", "clinic_uuid_id"))  # fmt: skip


def log(message: str) -> None:
    print(f"[online {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Phase:
    """One run with the application writing throughout: its latency in the BEFORE_S before
    the run (same copy, same moment's machine load) and while the run lasted."""

    name: str
    before: tuple[int, float, float] = (0, 0.0, 0.0)  # operations, p50 ms, p99 ms
    during: tuple[int, float, float] = (0, 0.0, 0.0)
    batching: tuple[int, float, float] = (0, 0.0, 0.0)  # first batch's start to last's end
    run_s: float = 0.0
    rows_per_s: float = 0.0
    app_writes: int = 0
    not_migrated: int = 0
    load: float = 0.0
    errors: int = 0


def latency(timings: Timings, start: float, end: float) -> tuple[int, float, float]:
    values = timings.latencies(start, end)
    return len(values), percentile(values, 50) * 1000, percentile(values, 99) * 1000


def during_run(url: str, name: str, env: dict[str, str], redis_url: str, workers: int) -> Phase:
    """The application alone for BEFORE_S, then throughout `uuid-migrate run --workers N
    --wait`; the run's rate and what it left behind."""
    command = [str(CLI), "run", "--plan", "clinic", "--workers", str(workers), "--wait"]
    run_env = dict(os.environ, DATABASE_URL=url, REDIS_URL=redis_url, **env)
    run_env["UUID_MIGRATE_QUEUE"] = f"uuid_migrate.online.{secrets.token_hex(4)}"

    def migrate() -> None:
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(command, env=run_env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=MAX_SECONDS - 60)  # fmt: skip
            if proc.returncode != 0:
                out.seek(0)
                raise SystemExit(f"bench: uuid-migrate failed:\n{out.read().decode()[-3000:]}")

    phase, timings = with_application(url, name, migrate)
    phase.rows_per_s, first, last = batch_rate(url)
    phase.batching = _span_latency(timings, first, last)
    phase.not_migrated = not_migrated(url)
    return phase


def during_plain(url: str, processes: int) -> Phase:
    """The same, around the plain SQL of the speed benchmark in `processes` processes: how
    much any migration writing this fast costs the application here. It installs no
    triggers, so what the application writes meanwhile is left unmigrated (not counted)."""
    found: dict[str, Any] = {}
    # Its DDL first, with nobody writing: without a lock timeout it can deadlock with the
    # application (what the tool's own DDL avoids), and the batches are what is measured.
    with db.connection(url) as conn, conn.cursor() as cur:
        bench_plain.add_columns(cur)

    def migrate() -> None:
        found.update(bench_plain.migrate(url, processes, ddl=False))

    name = f"plain SQL, {processes} process{'es' if processes > 1 else ''}"
    phase, timings = with_application(url, name, migrate)
    batches = found["batches"]
    first, last = min(b[1] for b in batches), max(b[2] for b in batches)
    phase.rows_per_s = sum(b[3] for b in batches) / max(last - first, 1e-9)
    phase.batching = _span_latency(timings, first, last)
    phase.not_migrated = -1
    return phase


def with_application(url: str, name: str, migrate: Callable[[], None]) -> tuple[Phase, Timings]:
    """The application alone for BEFORE_S, then throughout `migrate()`: its latency in both."""
    phase = Phase(name, load=os.getloadavg()[0])
    workload = Workload(url).start()
    try:
        time.sleep(WARM_UP_S)
        before = time.monotonic()
        time.sleep(BEFORE_S)
        start = time.monotonic()
        migrate()
        end = time.monotonic()
    finally:
        timings = workload.stop()
    phase.before, phase.during = latency(timings, before, start), latency(timings, start, end)
    phase.app_writes, phase.errors = timings.writes(start, end), len(timings.errors)
    if timings.errors:
        log(f"{name}: application errors, first: {timings.errors[0]}")
    phase.run_s = end - start
    return phase, timings


def _span_latency(timings: Timings, first: float, last: float) -> tuple[int, float, float]:
    """Latency from the first batch's start to the last one's end (epoch seconds)."""
    to_monotonic = time.monotonic() - time.time()
    return latency(timings, first + to_monotonic, last + to_monotonic)


def batch_rate(url: str) -> tuple[float, float, float]:
    """Rows the run's batches wrote per second, first batch's start to last batch's end
    (epoch seconds: the ledger's times are the server's clock, and the server is this
    machine, 127.0.0.1)."""
    with db.connection(url) as conn, conn.cursor() as cur:
        run = runs.latest_run(cur)
        rows, first, last = throttles.batch_span(cur, run["run_id"])
    seconds = (last - first).total_seconds()
    return rows / seconds if seconds > 0 else 0.0, first.timestamp(), last.timestamp()


def not_migrated(url: str) -> int:
    """Rows without a uuid_id, without their one mapping, or with a stale translation."""
    with db.connection(url) as conn, conn.cursor() as cur:
        total = 0
        for table in TABLES:
            cur.execute(
                f"SELECT count(*) FROM {table} t WHERE t.uuid_id IS NULL OR NOT EXISTS "
                "(SELECT 1 FROM id_mappings m WHERE m.table_name = %s AND m.old_id = t.id "
                "AND m.new_id = t.uuid_id)",
                (table,),
            )
            total += cur.fetchone()[0]
        for child, column, parent, target in REFERENCES:
            cur.execute(
                f"SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON p.id = c.{column} "
                f"WHERE c.{target} IS DISTINCT FROM p.uuid_id"
            )
            total += cur.fetchone()[0]
        return total


def online_section(server: str, redis_url: str, users: int = 200_000, workers: int = 2,
                   rests: tuple[float, ...] = (), command: str = "") -> str:  # fmt: skip
    """Build the data, run every phase, and return BENCHMARKS.md's online section."""
    size = sample.SampleSize.for_users(users)
    runs = [("default settings", {}), ("unthrottled", UNTHROTTLED)]
    runs += [(f"THROTTLE_APPLICATION_REST={r:g}", {"THROTTLE_APPLICATION_REST": str(r)}) for r in rests]
    log(f"building {users:,} users ({size.users + size.clinics + size.dashboards + size.providers:,} rows)")
    with pristine(server, size) as (source, _):
        phases: list[Phase] = []
        for name, env in runs:
            with scratch_db(server, f"{source}_{len(phases)}", template=source) as copy:
                log(f"the application before and during a run, {name}")
                phases.append(during_run(copy, name, env, redis_url, workers))
                log(f"{name}: {phases[-1]}")
                if len(phases) == 2:  # the unthrottled run's copy: same data, triggers installed
                    log("the triggers' cost")
                    costs = bench_triggers.cost(copy)
        for processes in sorted({1, workers}):
            with scratch_db(server, f"{source}_{len(phases)}", template=source) as copy:
                log(f"the application before and during plain SQL in {processes} processes")
                phases.append(during_plain(copy, processes))
                log(f"plain SQL: {phases[-1]}")
    return render(phases, costs, users, workers, command)


def render(phases: list[Phase], costs: dict[str, tuple[float, float]], users: int,
           workers: int, command: str) -> str:  # fmt: skip
    unthrottled = phases[1]
    lines = [
        "## Online: migrating while the application writes", "",
        f"`{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {os.cpu_count()} cores). "
        f"{users:,} users of the clinic schema; an application of 4 threads, each one operation "
        "every 5 ms in turn (insert a user, insert a dashboard, update a user, read a "
        "dashboard; keys in every range), autocommit. Each phase is its own copy of the same "
        f"data: the application alone for {BEFORE_S:g} s (before), then throughout "
        f"`uuid-migrate run --plan clinic --workers {workers} --wait` (during); latency of "
        "every operation started in each span. The batches' span (first batch's start to "
        "last batch's end) is where the throttle acts; the rest of a run (its DDL, the final "
        "sweeps, index builds, validation) is not paced. Batch rows/s: the batches' rows from the first "
        "one's start to the last one's end. Not migrated: rows of any table without a "
        "`uuid_id`, without their mapping, or with a stale translation, by our own SQL after "
        "the run. Load: the 1-minute load average at the phase's start. The plain SQL phases run "
        "the speed benchmark's plain SQL (`devtools/bench_plain.py`: key-range batches of "
        "10,000, no queue, no triggers, nothing validated; its columns added before the "
        "application starts) in 1 process and in as many as "
        "workers, with the same application: the latency any migration writing that fast "
        "costs on this machine, the floor the throttle is judged against.", "",
        "| phase | p50 ms before / during / batches | p99 ms before / during / batches "
        "| p99 during / before | p99 batches / before | run s | batch rows/s "
        "| rate / unthrottled | application writes during the run | not migrated | load |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]  # fmt: skip
    for p in phases:
        (_, b50, b99), (_, d50, d99), (_, t50, t99) = p.before, p.during, p.batching
        lines.append(
            f"| {p.name} | {b50:.2f} / {d50:.2f} / {t50:.2f} | {b99:.2f} / {d99:.2f} / {t99:.2f} "
            f"| {d99 / b99:.2f} | {t99 / b99:.2f} "
            f"| {p.run_s:.1f} | {p.rows_per_s:,.0f} | {p.rows_per_s / unthrottled.rows_per_s:.2f} "
            f"| {p.app_writes:,} | {p.not_migrated if p.not_migrated >= 0 else '-'} | {p.load:.1f} |"
        )
    if any(p.errors for p in phases):
        lines += ["", "Application errors: " + ", ".join(f"{p.name} {p.errors}" for p in phases)]
    lines += ["", bench_triggers.render(costs)]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devtools.bench_online", description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000, help="default 200,000")
    p.add_argument("--workers", type=int, default=2, help="default 2")
    p.add_argument("--rest", type=float, action="append", default=[],
                   help="add a run with THROTTLE_APPLICATION_REST=R (repeatable)")  # fmt: skip
    p.add_argument("--output", default=None, help="write the section to FILE too")
    args = p.parse_args(argv)
    if not 1 <= args.users <= 1_000_000 or not 1 <= args.workers <= 8 or any(r < 0 for r in args.rest):
        p.error("--users 1..1,000,000, --workers 1..8, --rest >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not server or not redis_url:
        raise SystemExit("bench: set DATABASE_URL (any database on the server) and REDIS_URL")
    command = shlex.join(["python", "-m", "devtools.bench_online", *(sys.argv[1:] if argv is None else argv)])
    text = online_section(server, redis_url, args.users, args.workers, tuple(args.rest), command)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
