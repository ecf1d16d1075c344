"""BENCHMARKS.md's text: the machine and server, the issue's table, each size's phases, rates
per table, batches and memory.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import psutil
from psycopg2 import sql

from devtools.bench_methods import describe_samples
from devtools.bench_phases import Batch
from devtools.bench_plain import BATCH_ROWS
from uuid_migrate import db

TABLES = ("users", "clinics", "dashboards", "providers")
#: The issue's goals: plain SQL's time over the tool's, by users.
GOALS = {200_000: 0.7, 1_000_000: 0.85}

HEAD = """# Benchmarks

Written by `make bench` (`devtools/bench.py`); figures are measured, never asserted in tests.

Command: `{command}`  \nDate: {date}; code: {code}  \nMachine: {machine}  \nServer: {server}

Data: the migration guide's schema (`devtools/sample.py`: users, clinics, dashboards
referencing users, providers referencing clinics without a constraint; 3.4 rows per user),
built set-based and vacuumed once per size; each method ran on its own
`CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY` copy of it, and its result was checked
(every row a UUID, references translated, one mapping per row, validation passed).

## Plain SQL against `uuid-migrate run`

{table}

Ratio: plain SQL's seconds over the tool's (the issue's goal: at least 0.7 at 200,000 users,
0.85 at 1,000,000). The plain SQL (`devtools/bench_plain.py`) adds the columns and
`id_mappings` (with the tool's two unique indexes) first, then per table, in dependency order
(users and clinics side by side, then dashboards and providers), runs one transaction per
key range of {batch:,} rows:

```sql
WITH upd AS (UPDATE t SET uuid_id = gen_random_uuid()
                    [, ref_uuid_id = (SELECT p.uuid_id FROM parent p WHERE p.key = t.ref)]
             WHERE t.key > lo AND t.key <= hi AND t.uuid_id IS NULL RETURNING t.key, t.uuid_id)
INSERT INTO id_mappings (table_name, old_id, new_id) SELECT 't', key, uuid_id FROM upd
```

It builds no `uuid_id` index and validates nothing; the tool's time is end to end: start-up,
planning, snapshots, DDL, triggers, batches, sweeps, index builds, validation, shut-down.

![rows per second over time per table, and batch durations](docs/benchmark.png)
"""


def issue_table(sizes: list[dict[str, Any]], workers: int, batch: int = BATCH_ROWS) -> str:
    lines = [
        f"| users (all rows) | plain SQL: key-range batches of {batch:,} in {workers} processes, "
        f"no queue | `uuid-migrate run --workers {workers} --wait`, its defaults | ratio |",
        "|---|---|---|---|",
    ]
    for size in sizes:
        plain, tool, users = size["plain"], size["tool"], size["users"]
        goal = GOALS.get(users)
        ratio = plain.seconds / tool.seconds
        mark = f" (goal {goal})" if goal else ""
        lines.append(
            f"| {users:,} ({size['rows']:,}) | {plain.seconds:.1f} s | {tool.seconds:.1f} s | "
            f"**{ratio:.2f}**{mark} |"
        )
    rounds = [size for size in sizes if len(size.get("rounds", [])) > 1]
    if rounds:
        lines += ["", "Each method ran in rounds, which one first alternating; the table gives "
                  "each one's median run (and the sections below those runs). Plain SQL s / "
                  "uuid-migrate s per round:", ""]
        lines += [f"- {size['users']:,} users: " + ", ".join(
            f"{p:.1f} / {t:.1f} ({p / t:.2f})" for p, t in size["rounds"]) for size in rounds]
    return "\n".join(lines)


def size_section(size: dict[str, Any], workers: int) -> str:
    plain, tool, counts = size["plain"], size["tool"], size["counts"]
    out = [f"## {size['users']:,} users ({size['rows']:,} rows)", ""]
    out += ["| phase | plain SQL s | uuid-migrate s |", "|---|---|---|"]
    names = list(dict.fromkeys([*tool.phases, *plain.phases]))
    for name in names:
        p, t = plain.phases.get(name), tool.phases.get(name)
        out.append(f"| {name} | {_s(p)} | {_s(t)} |")
    out.append(f"| **total** | **{plain.seconds:.1f}** | **{tool.seconds:.1f}** |")
    out += ["", "| table | rows | plain SQL rows/s | uuid-migrate rows/s | uuid-migrate after the "
            "table's last batch: waiting for the callback s | sweep s | unique index s |",
            "|---|---|---|---|---|---|---|"]
    for table in TABLES:
        c = tool.closing.get(table, {})
        out.append(
            f"| {table} | {counts[table]:,} | {_rate(plain.batches, table)} | "
            f"{_rate(tool.batches, table)} | {_s(c.get('waiting for the callback'))} | "
            f"{_s(c.get('sweep'))} | {_s(c.get('unique index'))} |"
        )
    out += [
        "",
        "Rows/s per table: its rows over its first batch's start to its last batch's end. "
        "After a table's last batch, the callback that closes its stage (the page's, or a "
        "reconciler pass) waits in the queue behind the batches already sent, then sends a task "
        "for the table's unique index on `uuid_id` and sweeps the table (to its hand-off in the "
        "ledger, when the tables depending on it start; a table nothing waits for is handed off "
        "at once, and swept by the validation); the index is built beside the sweep "
        "(from the sweep's start to the index's record in the ledger, its task's wait in the "
        "queue included). This overlaps other tables' batches and makes up the hand-offs and "
        "the closing phase above (`devtools/bench_phases.py`).",
        "",
        f"- plain SQL: {batch_summary(plain.batches, workers)}",
        f"- uuid-migrate: {batch_summary(tool.batches, workers)}",
    ]
    if tool.samples is not None:
        described = describe_samples(tool.samples)
        out.append(f"- uuid-migrate peak RSS: {described['rss']}")
        out.append(f"- Redis: {described['redis']}")
        out.append(f"- left in Redis by this run: {described['left']}")
    out += [f"- {note}" for note in tool.notes + plain.notes]
    return "\n".join(out) + "\n"


def batch_summary(batches: list[Batch], workers: int) -> str:
    took = sorted(e - s for _, s, e, _ in batches)
    span = max(e for _, _, e, _ in batches) - min(s for _, s, _, _ in batches)
    p95 = took[min(len(took) - 1, int(len(took) * 0.95))]
    return (
        f"{len(took)} batches, median {statistics.median(took) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms; {workers} workers busy {sum(took) / (workers * span):.0%} "
        f"of the {span:.1f} s from first batch start to last batch end"
    )


def _rate(batches: list[Batch], table: str) -> str:
    mine = [b for b in batches if b[0] == table]
    if not mine:
        return "-"
    span = max(e for _, _, e, _ in mine) - min(s for _, s, _, _ in mine)
    return f"{sum(n for *_, n in mine) / span:,.0f}" if span > 0 else "-"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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


def head(info: dict[str, Any], sizes: list[dict[str, Any]], workers: int) -> str:
    return HEAD.format(**info, workers=workers, batch=BATCH_ROWS, table=issue_table(sizes, workers))


def safety_section(lines: list[str], users: int) -> str:
    body = "\n".join(f"- {line}" for line in lines)
    return f"## Validation and rollback ({users:,} users)\n\n{body}\n"
