"""Benchmark on identical data: one statement per table, the batch ceiling, `uuid-migrate run`.

    python -m devtools.bench [--users N] [--clinics N] [--dashboards N] [--providers N]
                             [--batch-size N] [--workers N] [--output BENCHMARKS.md]

DATABASE_URL names the server (a fresh database is created there and dropped afterwards);
REDIS_URL is the broker of method (c). Each method runs on its own copy of one pristine,
vacuumed database (CREATE DATABASE ... TEMPLATE), so all start from the same files.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg2 import sql

from devtools import bench_cuts, bench_safety, sample
from devtools.bench_methods import ceiling, run_tool, single_statements
from devtools.bench_report import TABLES, Result, environment, render
from uuid_migrate import db
from uuid_migrate.ledger import tables
from uuid_migrate.plan import catalog, plan_file
from uuid_migrate.plan.model import Plan
from uuid_migrate.schema.steps import additive_steps, uuid_index
from uuid_migrate.verification.validation import post_migration_report

Method = Callable[[str, Plan, argparse.Namespace, Result], None]


def log(message: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


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
        return catalog.resolve(cur, plan_file.load("clinic"))


def prepare(url: str, plan: Plan) -> None:
    """What the producer does before any batch (ledger schema, additive DDL); untimed."""
    with db.connection(url) as conn, conn.cursor() as cur:
        tables.ensure_schema(cur)
        for step in additive_steps(plan):
            if not step.exists(cur):  # the id_mappings indexes come with its table
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


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
        return int(text)

    p = argparse.ArgumentParser(prog="python -m devtools.bench", description=__doc__.split("\n")[0])
    defaults = {"users": 1_000_000, "clinics": 100_000, "dashboards": 2_000_000}
    defaults |= {"providers": 300_000, "batch-size": 10_000, "workers": 2, "cut-rows": 500_000}
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


def cuts(server: str, pristine: str, args: argparse.Namespace) -> str:
    """Key, composite-key and block-range batches on referencing tables of one size."""
    users = max(args.cut_rows // 5, 1)
    with scratch_db(server, f"{pristine}_cuts") as url:
        log(f"building 3 x {args.cut_rows:,} referencing rows for the cuts")
        bench_cuts.build(url, users, args.cut_rows)
        log("(cuts) `uuid-migrate run` on key, composite and block ranges")
        measured = bench_cuts.measure(url, args)
    log(f"(cuts) {measured['wall']:.1f} s")
    return bench_cuts.render(measured, users, args.cut_rows, args)


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
    text = render(args, info, results) + "\n" + cuts(server, pristine, args)
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
