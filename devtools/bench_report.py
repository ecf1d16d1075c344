"""The benchmark's results and its report: per-table spans, batch notes, run (c)'s phases
from the workers' logs, the machine and server measured on, and BENCHMARKS.md's text.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from psycopg2 import sql

from uuid_migrate import db

TABLES = ("users", "clinics", "dashboards", "providers")
#: users / dashboards rows/s in the first measurements (PERFORMANCE.md): one statement, ceiling.
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

Sizes: {sizes} ({total:,} rows), built set-based (`devtools.sample`) and vacuumed in
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

## Compared with the first measurements (PERFORMANCE.md, kept beside the project)

users / dashboards rows/s, one statement: {then_a} there, {now_a} here; 2-process ceiling:
{then_b} there, {now_b} here; ceiling over one statement {then_ratio} there, {now_ratio} here.
There the statement was an UPDATE feeding an INSERT into `id_mappings`; here it also translates
references through correlated subqueries (dashboards.user_id, providers.clinic_id) and
collects orphans.
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
