"""The three methods measured: (a) one statement per table, (b) the plain-SQL ceiling (key-range
batches on N processes), (c) `uuid-migrate run` as a user runs it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from devtools.bench_report import Batch, Result, batch_notes, explain_run, spans
from uuid_migrate import db
from uuid_migrate.execution.statement import batch_statement
from uuid_migrate.ledger import runs
from uuid_migrate.plan.cuts import cut_of
from uuid_migrate.plan.keywalk import walk_ranges
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.ranges import KeyRange
from uuid_migrate.plan.stages import Stage, stages

CLI = Path(sys.executable).with_name("uuid-migrate")
POLL_S = 0.1  # between RSS samples of the producer and its workers

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
            cut = cut_of(plan.table(s.table))
            ranges[s.name] = [
                r for r, _ in walk_ranges(cur, *plan.where(s.table), cut, args.batch_size)
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
    """The CLI as a user runs it, with its workers' logs kept in a folder of ours to read after."""
    with tempfile.TemporaryDirectory(prefix="uuid-migrate-bench-") as tmp:
        command = [str(CLI), "run", "--plan", "clinic", "--workers", str(args.workers)]
        command += ["--batch-size", str(args.batch_size), "--wait"]
        command += ["--worker-logs", str(Path(tmp) / "workers")]
        env = dict(os.environ, DATABASE_URL=url, REDIS_URL=args.redis_url)
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
        run = runs.latest_run(cur)
    if not run or run["finished_at"] is None:
        raise SystemExit("bench: uuid-migrate exited 0 but the ledger has no finished run")
    validating = run["finished_at"].timestamp()  # now() of the validation transaction: its start
    explain_run(result, logs, args.workers, (launched, validating, ended))
    pool = re.search(r"concurrency: (.+)", logs)
    memory = ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items() if v)
    result.notes.append(f"peak RSS: {memory} (worker pool: {pool.group(1) if pool else '?'})")
