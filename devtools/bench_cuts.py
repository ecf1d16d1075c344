"""Benchmark of the three ways a referencing table is cut into batches, on tables of one size.

Three tables reference the same users, each with the same rows: one with an integer key (key
ranges), one with a composite key (ranges compared as rows), one with no key (block ranges,
`ctid`). `uuid-migrate run --workers N --wait` migrates them all; each table's rate is its
rows over its own first batch start to last batch end, from the ledger.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from typing import Any

from devtools.bench_methods import CLI
from uuid_migrate import db
from uuid_migrate.ledger import figures, runs

SCHEMA = """
CREATE TABLE users (id text PRIMARY KEY, name text);
CREATE TABLE by_key (id bigint PRIMARY KEY, user_id text REFERENCES users, note text);
CREATE TABLE by_composite (
    account text, seq integer, user_id text REFERENCES users, note text,
    PRIMARY KEY (account, seq)
);
CREATE TABLE by_blocks (user_id text REFERENCES users, note text);
"""
#: The three tables and how each is cut.
CUTS = {
    "by_key": "key ranges (bigint key)",
    "by_composite": "composite key ranges (text, integer)",
    "by_blocks": "block ranges (no key, ctid)",
}


def build(url: str, users: int, rows: int) -> None:
    """Users with md5 ids; each table `rows` rows in random key order, then VACUUM ANALYZE."""
    with db.connection(url) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute(
            "INSERT INTO users SELECT 'usr_' || md5(i::text), 'User ' || i "
            "FROM generate_series(1, %s) i",
            (users,),
        )
        pick = "'usr_' || md5((1 + (i::bigint * 7919) %% %s)::text)"
        cur.execute(
            f"INSERT INTO by_key SELECT (i::bigint * 104729) %% 2147483647, {pick}, 'n' || i "
            "FROM generate_series(1, %s) i",
            (users, rows),
        )
        cur.execute(
            f"INSERT INTO by_composite SELECT md5((i / 10)::text), i %% 10, {pick}, 'n' || i "
            "FROM generate_series(1, %s) i",
            (users, rows),
        )
        cur.execute(
            f"INSERT INTO by_blocks SELECT {pick}, 'n' || i FROM generate_series(1, %s) i",
            (users, rows),
        )
    with db.connection(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")


def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the tool on the database; per table its rows, batches and rows/s; wall seconds."""
    env = dict(os.environ, DATABASE_URL=url, REDIS_URL=args.redis_url)
    env["UUID_MIGRATE_QUEUE"] = f"uuid_migrate.bench.cuts.{os.getpid()}"
    command = [str(CLI), "run", "--workers", str(args.workers), "--wait"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bench: uuid-migrate failed on the cuts data:\n{done.stdout[-3000:]}")
    return {"wall": wall, "tables": _per_table(url)}


def _per_table(url: str) -> dict[str, dict[str, float]]:
    with db.connection(url) as conn, conn.cursor() as cur:
        run_id = runs.latest_run(cur)["run_id"]
        return {t: figures.stage_timing(cur, run_id, f"{t}:references") for t in CUTS}


def render(measured: dict[str, Any], users: int, rows: int, args: argparse.Namespace) -> str:
    lines = [
        "## How a referencing table is cut",
        "",
        f"Three tables of {rows:,} rows each reference {users:,} users (`devtools/bench_cuts.py`);"
        f" `uuid-migrate run --workers {args.workers} --wait` (its defaults) "
        f"migrated them in {measured['wall']:.1f} s. Each rate is the table's rows over its own "
        "first batch start to last batch end; the three run side by side.",
        "",
        "| table | cut | batches | median batch ms | rows/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for table, cut in CUTS.items():
        t = measured["tables"][table]
        rate = t["rows"] / t["seconds"] if t["seconds"] else 0.0
        lines.append(
            f"| {table} | {cut} | {t['batches']} | {t['median_ms']:.0f} | {rate:,.0f} |"
        )
    return "\n".join(lines) + "\n"
