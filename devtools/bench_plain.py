"""The plain SQL the issue compares the tool with, on the sample's clinic schema.

Columns and `id_mappings` added first; then per table, in dependency order, key-range batches
of 10,000 on N processes, no queue, one transaction per range:

    WITH upd AS (UPDATE t SET uuid_id = gen_random_uuid()
                        [, ref_uuid_id = (SELECT p.uuid_id FROM parent p WHERE p.key = t.ref)]
                 WHERE t.key > lo AND t.key <= hi AND t.uuid_id IS NULL RETURNING t.key, t.uuid_id)
    INSERT INTO id_mappings (table_name, old_id, new_id) SELECT 't', key, uuid_id FROM upd

It knows nothing of the tool (no ledger, no planner): what a careful person writes by hand.
A table starts once the tables it references are done; tables with no such tie run side by side.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from devtools.bench_phases import PLANNING
from uuid_migrate import db

BATCH_ROWS = 10_000


@dataclass(frozen=True)
class Ref:
    column: str  # dashboards.user_id
    parent: str  # users
    new_column: str  # dashboards.user_uuid_id


@dataclass(frozen=True)
class Spec:
    table: str
    refs: tuple[Ref, ...] = ()


#: The sample's tables in dependency order (providers.clinic_id has no constraint, but is one).
CLINIC = (
    Spec("users"),
    Spec("clinics"),
    Spec("dashboards", (Ref("user_id", "users", "user_uuid_id"),)),
    Spec("providers", (Ref("clinic_id", "clinics", "clinic_uuid_id"),)),
)
KEY = "id"
MAPPINGS = """
CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL, new_id uuid NOT NULL,
                          created_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX id_mappings_table_name_old_id_key ON id_mappings (table_name, old_id);
CREATE UNIQUE INDEX id_mappings_new_id_key ON id_mappings (new_id);
"""

Batch = tuple[str, float, float, int]  # table, start, end (epoch seconds), rows


def add_columns(cur: Any, specs: tuple[Spec, ...] = CLINIC) -> None:
    cur.execute(MAPPINGS)
    for spec in specs:
        columns = ["uuid_id", *(r.new_column for r in spec.refs)]
        cur.execute(
            sql.SQL("ALTER TABLE {} ").format(sql.Identifier(spec.table))
            + sql.SQL(", ").join(
                sql.SQL("ADD COLUMN {} uuid").format(sql.Identifier(c)) for c in columns
            )
        )


def boundaries(cur: Any, table: str, rows: int = BATCH_ROWS) -> list[tuple[str | None, str]]:
    """(lo, hi] key ranges of `rows` rows each; the first has no lower bound."""
    cur.execute(
        sql.SQL(
            "SELECT k FROM (SELECT {key} AS k, row_number() OVER (ORDER BY {key}) AS n FROM {t}) s "
            "WHERE n %% %s = 0 OR n = (SELECT count(*) FROM {t}) ORDER BY k"
        ).format(key=sql.Identifier(KEY), t=sql.Identifier(table)),
        (rows,),
    )
    ends = [k for (k,) in cur.fetchall()]
    return list(zip([None, *ends[:-1]], ends, strict=True))


def statement(spec: Spec) -> sql.Composed:
    t, key = sql.Identifier(spec.table), sql.Identifier(KEY)
    sets = [sql.SQL("uuid_id = gen_random_uuid()")]
    for ref in spec.refs:
        sets.append(
            sql.SQL("{new} = (SELECT p.uuid_id FROM {parent} p WHERE p.{key} = t.{col})").format(
                new=sql.Identifier(ref.new_column), parent=sql.Identifier(ref.parent),
                key=key, col=sql.Identifier(ref.column),
            )
        )
    return sql.SQL(
        "WITH upd AS (UPDATE {t} t SET {sets} WHERE (%(lo)s::text IS NULL OR t.{key} > %(lo)s) "
        "AND t.{key} <= %(hi)s AND t.uuid_id IS NULL RETURNING t.{key} AS k, t.uuid_id) "
        "INSERT INTO id_mappings (table_name, old_id, new_id) SELECT %(name)s, k, uuid_id FROM upd"
    ).format(t=t, sets=sql.SQL(", ").join(sets), key=key)


_conn: Any = None  # each pool process's own connection


def _open(url: str) -> None:
    global _conn
    _conn = db.connect(url)


def _run(job: tuple[Spec, str | None, str]) -> Batch:
    spec, lo, hi = job
    started = time.time()
    with _conn.cursor() as cur:
        cur.execute(statement(spec), {"lo": lo, "hi": hi, "name": spec.table})
        rows = cur.rowcount
    _conn.commit()
    return spec.table, started, time.time(), rows


def waves(specs: tuple[Spec, ...]) -> list[list[Spec]]:
    """Tables grouped so that each group only references tables of earlier groups."""
    done: set[str] = set()
    pending, result = list(specs), []
    while pending:
        ready = [s for s in pending if {r.parent for r in s.refs} <= done]
        result.append(ready)
        done |= {s.table for s in ready}
        pending = [s for s in pending if s not in ready]
    return result


def migrate(
    url: str, processes: int, specs: tuple[Spec, ...] = CLINIC, ddl: bool = True
) -> dict[str, Any]:
    """The whole plain-SQL migration; wall seconds of each part and every batch. `ddl=False`:
    the columns and id_mappings were added already."""
    clock = time.perf_counter()
    with db.connection(url) as conn, conn.cursor() as cur:
        if ddl:
            add_columns(cur, specs)
    ddl_s, clock = time.perf_counter() - clock, time.perf_counter()
    with db.connection(url) as conn, conn.cursor() as cur:
        ranges = {s.table: boundaries(cur, s.table) for s in specs}
    ranges_s, clock = time.perf_counter() - clock, time.perf_counter()
    batches: list[Batch] = []
    with multiprocessing.get_context("fork").Pool(processes, _open, (url,)) as pool:
        for wave in waves(specs):
            jobs = [(s, lo, hi) for s in wave for lo, hi in ranges[s.table]]
            batches += pool.imap_unordered(_run, jobs)
    batches_s = time.perf_counter() - clock
    phases = {"DDL (id_mappings, columns)": ddl_s, PLANNING: ranges_s, "batches": batches_s}
    return {"phases": phases, "seconds": sum(phases.values()), "batches": batches}
