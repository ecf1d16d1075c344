"""Benchmark on identical data: one statement per table, the batch ceiling, `uuid-migrate run`.

    python -m devtools.bench [--users N] [--clinics N] [--dashboards N] [--providers N]
                             [--batch-size N] [--workers N] [--output BENCHMARKS.md]

DATABASE_URL names the server (a fresh database is created there and dropped afterwards);
REDIS_URL is the broker of method (c). Each method runs on its own copy of one pristine,
vacuumed database (CREATE DATABASE ... TEMPLATE), so all start from the same files.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from psycopg2 import sql

from devtools import bench_safety
from uuid_migrate import catalog, db, ledger, planfile, sample
from uuid_migrate.batch_sql import batch_statement
from uuid_migrate.ddl import additive_steps, uuid_index
from uuid_migrate.keywalk import walk_ranges
from uuid_migrate.plan import Plan
from uuid_migrate.ranges import KeyRange
from uuid_migrate.stages import Stage, stages
from uuid_migrate.validation import post_migration_report

TABLES = ("users", "clinics", "dashboards", "providers")
CLI = Path(sys.executable).with_name("uuid-migrate")
POLL_S = 0.1  # between RSS samples of the producer and its workers
#: users / dashboards rows/s in /work/shared/PERFORMANCE.md: one statement, 2-process ceiling.
EARLIER = {"a": (51_600, 26_700), "b": (153_000, 72_500)}
#: A Celery worker's log line for a finished task: end time, task name, seconds, result
#: (Celery's own format, or config.logs' text format).
TASK_LINE = re.compile(
    r"^\[?([\d-]+ [\d:,]+)[^\n]*? Task uuid_migrate\.(\w+)\[[^\]]+\] succeeded in ([\d.]+)s: (.*)$",
    re.MULTILINE,
)

Batch = tuple[str, float, float]  # table, start, end (epoch seconds)


@dataclass
class Result:
    """One method: timed wall seconds, seconds per table, and what else was learnt."""

    key: str
    method: str
    seconds: float = 0.0
    tables: dict[str, float] = field(default_factory=dict)
    finish_s: float | None = None
    db_mb: float = 0.0
    notes: list[str] = field(default_factory=list)
    safety: list[str] = field(default_factory=list)


Method = Callable[[str, Plan, argparse.Namespace, Result], None]


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def batch_notes(batches: list[Batch], workers: int) -> str:
    """Count, median duration, and how busy the workers were between first start and last end."""
    took = [end - start for _, start, end in batches]
    span = max(e for _, _, e in batches) - min(s for _, s, _ in batches)
    return (
        f"{len(took)} batches, median {statistics.median(took) * 1000:.0f} ms; "
        f"workers busy {sum(took) / (workers * span):.0%} of the {span:.1f} s batch phase"
    )


def spans(batches: list[Batch]) -> dict[str, float]:
    """Per table, seconds from its first batch's start to its last batch's end."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for table, start, end in batches:
        first[table] = min(first.get(table, start), start)
        last[table] = max(last.get(table, end), end)
    return {table: last[table] - first[table] for table in first}


# ---------------------------------------------------------------- databases


@contextmanager
def scratch_db(server: str, name: str, template: str | None = None) -> Iterator[str]:
    """A new database (a file copy of `template` if given), dropped on exit; yields its URL."""
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create += sql.SQL(" TEMPLATE {} STRATEGY FILE_COPY").format(sql.Identifier(template))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(create)
    try:
        yield db.with_database(server, name)
    finally:
        with db.connection(server, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(drop)


def build_pristine(url: str, size: sample.SampleSize) -> Plan:
    with db.connection(url) as conn, conn.cursor() as cur:
        sample.build(cur, size)
    with db.connection(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
        return catalog.resolve(cur, planfile.load("clinic"))


def prepare(url: str, plan: Plan) -> None:
    """What the producer does before any batch (ledger schema, additive DDL); untimed."""
    with db.connection(url) as conn, conn.cursor() as cur:
        ledger.ensure_schema(cur)
        for step in additive_steps(plan):
            cur.execute(step.forward())


def finish_and_check(url: str, plan: Plan, build_indexes: bool) -> tuple[float, float]:
    """Time the tool's closing work (unique indexes, validation), check the result; (s, MB)."""
    started = time.perf_counter()
    with db.connection(url, autocommit=True) as conn, conn.cursor() as cur:
        for table in plan.migrated() if build_indexes else ():
            cur.execute(uuid_index(plan, table.name).forward())
        report = post_migration_report(cur, plan, None)
        elapsed = time.perf_counter() - started
        cur.execute(
            "SELECT (SELECT count(*) FROM id_mappings), (SELECT count(*) FROM dashboards d "
            "JOIN users u ON u.id = d.user_id WHERE d.user_uuid_id IS DISTINCT FROM u.uuid_id), "
            "pg_database_size(current_database())"
        )
        mappings, wrong, size = cur.fetchone()
    expected = sum(report["tables"][t]["total"] for t in TABLES)
    if report["overallStatus"] != "passed" or mappings != expected or wrong:
        raise SystemExit(f"bench: wrong result in {db.mask_url(url)}: {mappings=} {wrong=}")
    return elapsed, size / 2**20


# ---------------------------------------------------------------- (a) and (b)


def single_statements(url: str, plan: Plan, args: argparse.Namespace, result: Result) -> None:
    """Each stage as one statement over an unbounded range, in dependency order."""
    with db.connection(url) as conn:
        for stage in stages(plan):
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(batch_statement(plan, stage, "bench", KeyRange(None, None)))
            conn.commit()
            elapsed = time.perf_counter() - started
            result.tables[stage.table] = result.tables.get(stage.table, 0.0) + elapsed
    result.seconds = sum(result.tables.values())


_conn: Any = None  # each pool process's own connection


def _open_connection(url: str) -> None:
    global _conn
    _conn = db.connect(url)


def _run_batch(job: tuple[Plan, Stage, KeyRange]) -> Batch:
    plan, stage, key_range = job
    started = time.time()
    with _conn.cursor() as cur:
        cur.execute(batch_statement(plan, stage, "bench", key_range))
    _conn.commit()
    return stage.table, started, time.time()


def waves(plan: Plan) -> list[list[Stage]]:
    """Stages grouped so that each group only depends on earlier groups."""
    pending, done, result = stages(plan), set(), []
    while pending:
        ready = [s for s in pending if set(s.depends_on) <= done]
        result.append(ready)
        done |= {s.name for s in ready}
        pending = [s for s in pending if s not in ready]
    return result


def ceiling(url: str, plan: Plan, args: argparse.Namespace, result: Result) -> None:
    """Walk every key; then each wave's batches on N processes, waves in dependency order."""
    started = time.perf_counter()
    with db.connection(url) as conn, conn.cursor() as cur:
        ranges = {}
        for s in stages(plan):
            key = plan.table(s.table).key
            ranges[s.name] = [
                r for r, _ in walk_ranges(cur, plan.schema, s.table, key, args.batch_size)
            ]
    walk_s, batches = time.perf_counter() - started, []
    with multiprocessing.get_context("fork").Pool(args.workers, _open_connection, (url,)) as pool:
        for wave in waves(plan):
            jobs = [(plan, stage, r) for stage in wave for r in ranges[stage.name]]
            batches += pool.imap_unordered(_run_batch, jobs)
    result.seconds, result.tables = time.perf_counter() - started, spans(batches)
    order = " | ".join(" + ".join(s.name for s in wave) for wave in waves(plan))
    result.notes.append(f"walking the keys {walk_s:.1f} s; waves {order}")
    result.notes.append(batch_notes(batches, args.workers))


# ---------------------------------------------------------------- (c) uuid-migrate run


def watch_rss(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """Peak RSS (MB) of the producer, its worker processes and their pool children, until exit."""
    peaks = {"producer": 0.0, "worker main process": 0.0, "worker pool child": 0.0}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                role = "producer" if p.pid == proc.pid else "worker main process"
                role = role if p.pid == proc.pid or p.ppid() == proc.pid else "worker pool child"
                peaks[role] = max(peaks[role], p.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            pass
        time.sleep(POLL_S)
    return peaks


def run_tool(url: str, plan: Plan, args: argparse.Namespace, result: Result) -> None:
    """The CLI as a user runs it; TMPDIR is ours so that the workers' logs can be read after."""
    command = [str(CLI), "run", "--plan", "clinic", "--workers", str(args.workers)]
    command += ["--batch-size", str(args.batch_size), "--wait"]
    with tempfile.TemporaryDirectory(prefix="uuid-migrate-bench-") as tmp:
        env = dict(os.environ, DATABASE_URL=url, REDIS_URL=args.redis_url, TMPDIR=tmp)
        env["UUID_MIGRATE_QUEUE"] = f"uuid_migrate.bench.{secrets.token_hex(4)}"
        output = Path(tmp) / "producer.log"
        launched, started = time.time(), time.perf_counter()
        with output.open("wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            peaks = watch_rss(proc)
        result.seconds, ended = time.perf_counter() - started, time.time()
        if proc.returncode != 0:
            raise SystemExit(f"bench: uuid-migrate failed:\n{output.read_text()[-3000:]}")
        logs = "".join(p.read_text() for p in Path(tmp).glob("*/worker-*.log"))
    with db.connection(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM finished_at)::float FROM uuid_migration.runs")
        validating = cur.fetchone()[0]  # now() of the validation transaction: its start
    explain_run(result, logs, args.workers, (launched, validating, ended))
    pool = re.search(r"concurrency: (.+)", logs)
    memory = ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items() if v)
    result.notes.append(f"peak RSS: {memory} (worker pool: {pool.group(1) if pool else '?'})")


def explain_run(result: Result, logs: str, workers: int, times: tuple[float, ...]) -> None:
    """Per-table spans and the run's phases, from the workers' task log lines."""
    launched, validating, ended = times
    batches: list[Batch] = []
    other: dict[str, float] = {}
    for stamp, task, seconds, rest in TASK_LINE.findall(logs):
        end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if task == "batch":
            table = re.search(r"'table': '([^']+)'", rest)
            batches.append((table.group(1) if table else "?", end - float(seconds), end))
        else:
            other[task] = other.get(task, 0.0) + float(seconds)
    if not batches:
        raise SystemExit("bench: no batch task lines in the worker logs; has their format changed?")
    result.tables = spans(batches)
    first, last = min(s for _, s, _ in batches), max(e for _, _, e in batches)
    phases = {
        "start-up and planning": first - launched,
        "batches": last - first,
        "index builds and hand-offs": validating - last,
        "validation and shutdown": ended - validating,
    }
    result.notes.append("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    result.notes.append(batch_notes(batches, workers) + " (batch task time, worker logs)")
    result.notes.append("other tasks: " + ", ".join(f"{k} {v:.1f} s" for k, v in other.items()))


# ---------------------------------------------------------------- report

REPORT = """# Benchmarks

Command: `{command}`  \nDate: {date}; code: {code}  \nMachine: {machine}  \nServer: {server}

Sizes: {sizes} ({total:,} rows), built set-based (`uuid_migrate.sample`) and vacuumed in
{build:.0f} s; each method ran on its own `CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY` copy
and its result was checked (UUIDs, references, mappings). Batch size {batch:,} (the product
default is 1,000); {workers} workers.

## Results

rows/s: all rows / wall seconds; per table: its rows / first batch start to last batch end ((a):
its statement). (a) and (b) time the data change only (DDL before the clock; (b) includes walking
the keys); the `uuid_id` unique indexes and validation are timed after, separately. (c) is end to
end: start-up, planning, DDL, batches, index builds, validation, worker shutdown.

{results}

**(c) / (b) = {ratio:.2f}**; {ratio_finish:.2f} if the ceiling also pays for indexes and validation.

{notes}

## Validation and rollback

On the same data, sizes as above (the run's own table snapshots, with their data checksums, are
in (c)'s start-up and planning; its post-migration report in its validation phase):

{safety}

## Compared with /work/shared/PERFORMANCE.md

users / dashboards rows/s, one statement: {then_a} there, {now_a} here; 2-process ceiling:
{then_b} there, {now_b} here; ceiling over one statement {then_ratio} there, {now_ratio} here.
There the statement was an UPDATE feeding an INSERT into `id_mappings`; here it also translates
`user_id` and `clinic_id` through correlated subqueries and collects orphans.
"""


def render(args: argparse.Namespace, info: dict[str, Any], results: list[Result]) -> str:
    counts, (a, b, c) = info.pop("counts"), results
    total = sum(counts.values())

    def rate(r: Result, table: str) -> float:
        return counts[table] / r.tables[table]

    def pair(users: float, dashboards: float) -> str:
        return f"{users:,.0f} / {dashboards:,.0f}"

    def gain(ceiling: tuple[float, float], single: tuple[float, float]) -> str:
        return f"{ceiling[0] / single[0]:.1f}x / {ceiling[1] / single[1]:.1f}x"

    header = ["method", "wall s", "rows/s", *TABLES, "+ indexes, validation s", "DB MB after"]
    rows = [
        [f"({r.key}) {r.method}", f"{r.seconds:.1f}", f"**{total / r.seconds:,.0f}**"]
        + [f"{rate(r, t):,.0f}" for t in TABLES]
        + ["-" if r.finish_s is None else f"{r.finish_s:.1f}", f"{r.db_mb:,.0f}"]
        for r in results
    ]
    now = {r.key: (rate(r, "users"), rate(r, "dashboards")) for r in (a, b)}
    return REPORT.format(
        **info,
        sizes=", ".join(f"{t} {counts[t]:,}" for t in TABLES),
        total=total,
        batch=args.batch_size,
        workers=args.workers,
        results="\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * 9, *rows]),
        ratio=b.seconds / c.seconds,
        ratio_finish=(b.seconds + (b.finish_s or 0)) / c.seconds,
        notes="\n".join(f"- ({r.key}) {n}" for r in results for n in r.notes),
        safety="\n".join(f"- {line}" for line in [info.pop("baseline"), *c.safety]),
        then_a=pair(*EARLIER["a"]),
        then_b=pair(*EARLIER["b"]),
        now_a=pair(*now["a"]),
        now_b=pair(*now["b"]),
        then_ratio=gain(EARLIER["b"], EARLIER["a"]),
        now_ratio=gain(now["b"], now["a"]),
    )


def environment(server: str) -> dict[str, str]:
    """Machine, server settings and the code measured (with any uncommitted changes)."""
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = f"{os.cpu_count()} CPUs ({model.group(1) if model else 'unknown model'}), "
    machine += f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, load average {load} at start"
    shown = []
    with db.connection(server) as conn, conn.cursor() as cur:
        for name in ("server_version", "shared_buffers", "fsync", "synchronous_commit"):
            cur.execute(sql.SQL("SHOW {}").format(sql.Identifier(name)))
            shown.append(f"{name} = {cur.fetchone()[0]}")
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True)
    changed = ", ".join(line[3:] for line in dirty.stdout.splitlines())
    code = f"commit {head.stdout.strip() or '?'}" + (f" + uncommitted {changed}" if changed else "")
    return {"machine": machine, "server": "PostgreSQL " + ", ".join(shown), "code": code}


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
        return int(text)

    p = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__.split("\n")[0])
    defaults = {"users": 1_000_000, "clinics": 100_000, "dashboards": 2_000_000}
    defaults |= {"providers": 300_000, "batch-size": 10_000, "workers": 2}
    for name, default in defaults.items():
        p.add_argument(f"--{name}", type=positive, default=default, help=f"default {default:,}")
    p.add_argument("--output", default="BENCHMARKS.md", help="report (default BENCHMARKS.md)")
    return p.parse_args(argv)


def measure(
    server: str, pristine: str, plan: Plan, args: argparse.Namespace, result: Result, method: Method
) -> Result:
    """Run one method on a fresh copy; (c) applies its DDL and builds its indexes itself."""
    tool = result.key == "c"
    with scratch_db(server, f"{pristine}_{result.key}", template=pristine) as url:
        if not tool:
            prepare(url, plan)
        log(f"({result.key}) {result.method}")
        method(url, plan, args, result)
        finish_s, result.db_mb = finish_and_check(url, plan, build_indexes=not tool)
        result.finish_s = None if tool else finish_s
        if tool:
            result.safety = bench_safety.after_run(url)
    log(f"({result.key}) {result.seconds:.1f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server, args.redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not server or not args.redis_url:
        raise SystemExit("bench: set DATABASE_URL (any database on the server) and REDIS_URL")
    counts = {t: getattr(args, t) for t in TABLES}
    size = sample.SampleSize(**counts, orphans=min(args.providers, max(args.providers // 1000, 3)))
    command = ["python", "-m", "devtools.bench", *(sys.argv[1:] if argv is None else argv)]
    info: dict[str, Any] = {"command": shlex.join(command), "counts": counts}
    info |= {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}", **environment(server)}
    methods: list[tuple[Result, Method]] = [
        (Result("a", "one set-based statement per table"), single_statements),
        (Result("b", f"key-range batches, {args.workers} plain processes (ceiling)"), ceiling),
        (Result("c", f"`uuid-migrate run --workers {args.workers} --wait`"), run_tool),
    ]
    pristine = f"uuid_migrate_bench_{secrets.token_hex(4)}"
    with scratch_db(server, pristine) as url:
        log(f"building {sum(counts.values()):,} rows in {pristine}")
        started = time.perf_counter()
        plan = build_pristine(url, size)
        info["build"] = time.perf_counter() - started
        info["baseline"] = bench_safety.baseline(url)
        results = [measure(server, pristine, plan, args, r, m) for r, m in methods]
    text = render(args, info, results)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
