"""The two methods of the issue's table, each on its own copy of the same data: the plain SQL
(`bench_plain`) and `uuid-migrate run --workers N --wait` as a user runs it, with its defaults.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devtools import bench_plain
from devtools.bench_phases import Batch, closing, ledger_batches, tool_phases, workers_ready
from devtools.bench_sampler import Sampler, Samples
from uuid_migrate import db
from uuid_migrate.ledger import runs
from uuid_migrate.redis_store import run_pattern

CLI = Path(sys.executable).with_name("uuid-migrate")
#: A finished task's name and id in a worker's log line.
TASK_ID = re.compile(r"Task uuid_migrate\.(\w+)\[([0-9a-f-]{36})\] succeeded")


@dataclass
class Measured:
    """One method on one copy: wall seconds, its phases, its batches, what was sampled."""

    method: str
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    batches: list[Batch] = field(default_factory=list)  # table, start, end (s from t0), rows
    samples: Samples | None = None
    closing: dict[str, dict[str, float | None]] = field(default_factory=dict)  # per table
    notes: list[str] = field(default_factory=list)


def plain_sql(url: str, workers: int) -> Measured:
    started = time.time()
    done = bench_plain.migrate(url, workers)
    batches = [(t, s - started, e - started, n) for t, s, e, n in done["batches"]]
    return Measured("plain SQL", done["seconds"], done["phases"], batches)


def run_tool(
    url: str, redis_url: str, workers: int, extra: tuple[str, ...] = (), deep: bool = False
) -> Measured:
    """The CLI in a subprocess, its workers' logs kept in a folder of ours to read after."""
    with tempfile.TemporaryDirectory(prefix="uuid-migrate-bench-") as tmp:
        command = [str(CLI), "run", "--plan", "clinic", "--workers", str(workers), "--wait"]
        command += [*extra, "--worker-logs", str(Path(tmp) / "workers")]
        env = dict(os.environ, DATABASE_URL=url, REDIS_URL=redis_url)
        env["UUID_MIGRATE_QUEUE"] = f"uuid_migrate.bench.{secrets.token_hex(4)}"
        output = Path(tmp) / "producer.log"
        launched, clock = time.time(), time.perf_counter()
        with output.open("wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            sampler = Sampler(proc.pid, url, redis_url, deep)
            proc.wait()
            samples = sampler.stop()
        seconds, ended = time.perf_counter() - clock, launched + time.perf_counter() - clock
        if proc.returncode != 0:
            raise SystemExit(f"bench: uuid-migrate failed:\n{output.read_text()[-3000:]}")
        logs = "".join(p.read_text() for p in Path(tmp).glob("*/worker-*.log"))
    with db.connection(url) as conn, conn.cursor() as cur:
        run = runs.latest_run(cur)
        if not run or run["finished_at"] is None:
            raise SystemExit("bench: uuid-migrate exited 0 but the ledger has no finished run")
        phases = tool_phases(cur, run, logs, (launched, samples.worker_started, samples.workers_gone, ended))
        batches = ledger_batches(cur, run["run_id"], launched)
        closed = closing(cur, run["run_id"], logs)
    samples.run_keys = leftovers(redis_url, run["run_id"], logs)
    label = " ".join(["`uuid-migrate run", f"--workers {workers}", "--wait", *extra]) + "`"
    ready = workers_ready(logs, launched, samples.worker_started)
    return Measured(label, seconds, phases, batches, samples, closing=closed, notes=[ready])


def leftovers(redis_url: str, run_id: str, logs: str) -> dict[str, int]:
    """What of this run stays in Redis: its own keys (progress, kept by design), and the
    result keys of its tasks, by task name (ids from the workers' logs)."""
    conn = redis.Redis.from_url(redis_url)
    kept = {"run's own keys": sum(1 for _ in conn.scan_iter(match=run_pattern(run_id)))}
    for task, task_id in TASK_ID.findall(logs):
        name = f"result keys of {task} tasks"
        kept[name] = kept.get(name, 0) + conn.exists(f"celery-task-meta-{task_id}")
    return kept


def describe_samples(s: Samples) -> dict[str, Any]:
    """Peak RSS per process, Redis MB, for the report."""
    return {
        "rss": ", ".join(f"{role} {mb:.0f} MB" for role, mb in sorted(s.rss_mb.items())),
        "redis": (
            f"used_memory {s.redis_before:.1f} MB before, peak sampled {s.redis_peak:.1f} MB, "
            f"{s.redis_after:.1f} MB after (used_memory_peak since the server started "
            f"{s.redis_server_peak:.1f} MB); keys {s.redis_keys[0]:,} before, "
            f"{s.redis_keys[1]:,} after (the server is shared)"
        ),
        "left": ", ".join(f"{k} {v:,}" for k, v in s.run_keys.items()),
    }
