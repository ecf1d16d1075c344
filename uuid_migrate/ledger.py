"""The ledger: runs, stages and batches in PostgreSQL, the durable truth of a migration.

A batch moves pending -> running -> succeeded | failed, with attempts, timestamps, worker and
last error stamped on each move. Its `succeeded` is written in the same transaction as its data.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json, execute_values

from uuid_migrate.ranges import KeyRange

#: The ledger's own schema, so it never mixes with the application's tables.
LEDGER_SCHEMA = "uuid_migration"
#: Serialises producers: only one plans or resumes a run of a database at a time.
PRODUCER_LOCK_KEY = 0x757569645F6D6967  # "uuid_mig"

PENDING, RUNNING, SUCCEEDED, FAILED = "pending", "running", "succeeded", "failed"
#: A batch cut in two after a timeout; its two halves (new batch numbers) carry on its work.
SPLIT = "split"
#: Batch states in which there is nothing left to do.
SETTLED = (SUCCEEDED, SPLIT)
PLANNING, VALIDATING = "planning", "validating"
ROLLING_BACK, ROLLED_BACK = "rolling_back", "rolled_back"
ACTIVE_RUN_STATES = (PLANNING, RUNNING, VALIDATING)
#: A batch may write only while its run is in none of these (checked inside its transaction).
FENCED_RUN_STATES = (ROLLING_BACK, ROLLED_BACK)

_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS uuid_migration;
CREATE TABLE IF NOT EXISTS uuid_migration.runs (
    run_id      text PRIMARY KEY,
    status      text NOT NULL,
    plan        jsonb NOT NULL,
    batch_size  integer NOT NULL,
    message     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS uuid_migration.stages (
    run_id          text NOT NULL REFERENCES uuid_migration.runs ON DELETE CASCADE,
    stage           text NOT NULL,
    position        integer NOT NULL,
    table_name      text NOT NULL,
    kind            text NOT NULL,
    depends_on      text[] NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    planned         boolean NOT NULL DEFAULT false,
    total_rows      bigint NOT NULL DEFAULT 0,
    batch_count     integer NOT NULL DEFAULT 0,
    dispatched_upto integer NOT NULL DEFAULT 0,
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS uuid_migration.batches (
    run_id      text NOT NULL,
    stage       text NOT NULL,
    batch_no    integer NOT NULL,
    lower_bound text,
    upper_bound text,
    planned_rows bigint NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    rows        bigint,
    started_at  timestamptz,
    finished_at timestamptz,
    worker      text,
    last_error  text,
    PRIMARY KEY (run_id, stage, batch_no),
    FOREIGN KEY (run_id, stage) REFERENCES uuid_migration.stages ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS batches_not_succeeded
    ON uuid_migration.batches (run_id, stage, batch_no) WHERE status <> 'succeeded';
CREATE TABLE IF NOT EXISTS uuid_migration.errors (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    table_name  text NOT NULL,
    row_id      text,
    column_name text NOT NULL DEFAULT '',
    error       text NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS errors_one_per_row
    ON uuid_migration.errors (table_name, row_id, column_name, error) WHERE row_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS errors_by_table ON uuid_migration.errors (table_name, id);
CREATE TABLE IF NOT EXISTS uuid_migration.reports (
    id         bigserial PRIMARY KEY,
    run_id     text,
    kind       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    report     jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS uuid_migration.ddl_steps (
    run_id     text NOT NULL,
    position   integer NOT NULL,
    step       jsonb NOT NULL,
    created    boolean NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS uuid_migration.snapshots (
    run_id     text NOT NULL REFERENCES uuid_migration.runs ON DELETE CASCADE,
    table_name text NOT NULL,
    definition jsonb NOT NULL,
    checksum   jsonb NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name)
);
"""


@dataclass(frozen=True)
class Batch:
    """One batch as the ledger holds it."""

    run_id: str
    stage: str
    batch_no: int
    lower: str | None
    upper: str | None
    status: str
    attempts: int = 0

    @property
    def key_range(self) -> KeyRange:
        return KeyRange(self.lower, self.upper)


def ensure_schema(cur: Any) -> None:
    from uuid_migrate import transitions  # its SQL extends the tables defined here

    cur.execute(_SCHEMA_SQL)
    transitions.ensure_schema(cur)


def ledger_exists(cur: Any) -> bool:
    cur.execute("SELECT to_regclass('uuid_migration.runs') IS NOT NULL")
    return bool(cur.fetchone()[0])


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{secrets.token_hex(3)}"


def create_run(cur: Any, run_id: str, plan: dict[str, Any], batch_size: int) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.runs (run_id, status, plan, batch_size) VALUES (%s, %s, %s, %s)",
        (run_id, PLANNING, Json(plan), batch_size),
    )


def latest_run(cur: Any) -> dict[str, Any] | None:
    """The newest run, or None; the one `status`, `resume` and the workers look at."""
    if not ledger_exists(cur):
        return None
    cur.execute(
        "SELECT run_id, status, plan, batch_size, message, created_at, finished_at "
        "FROM uuid_migration.runs ORDER BY created_at DESC, run_id DESC LIMIT 1"
    )
    row = cur.fetchone()
    return _run_dict(row) if row else None


def get_run(cur: Any, run_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT run_id, status, plan, batch_size, message, created_at, finished_at "
        "FROM uuid_migration.runs WHERE run_id = %s",
        (run_id,),
    )
    row = cur.fetchone()
    return _run_dict(row) if row else None


def runs_ended_with(cur: Any, run: dict[str, Any]) -> list[str]:
    """The runs that ended in the same transaction as `run` (one rollback ends them together)."""
    cur.execute(
        "SELECT run_id FROM uuid_migration.runs WHERE status = %s AND finished_at = %s "
        "ORDER BY created_at",
        (run["status"], run["finished_at"]),
    )
    return [row[0] for row in cur.fetchall()] or [run["run_id"]]


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("run_id", "status", "plan", "batch_size", "message", "created_at", "finished_at")
    return dict(zip(keys, row, strict=True))


def try_producer_lock(cur: Any) -> bool:
    """The session lock that lets one producer (or rollback) at a time change a database."""
    cur.execute("SELECT pg_try_advisory_lock(%s)", (PRODUCER_LOCK_KEY,))
    return bool(cur.fetchone()[0])


def lock_run(cur: Any, run_id: str) -> None:
    """Serialise run-level decisions: two stages closing at once must see each other's commit.

    NO KEY UPDATE: it does not wait for batches, which hold the row FOR KEY SHARE.
    """
    cur.execute(
        "SELECT 1 FROM uuid_migration.runs WHERE run_id = %s FOR NO KEY UPDATE", (run_id,)
    )


def run_is_fenced(cur: Any, run_id: str) -> bool:
    """Inside a batch's transaction: True if a rollback has stopped the run.

    FOR KEY SHARE lets batches run side by side, yet a rollback's FOR UPDATE on the row
    waits for every batch transaction holding it, and batches after it see its status.
    """
    cur.execute(
        "SELECT status FROM uuid_migration.runs WHERE run_id = %s FOR KEY SHARE", (run_id,)
    )
    row = cur.fetchone()
    return row is None or row[0] in FENCED_RUN_STATES


def set_run_status(
    cur: Any, run_id: str, status: str, *, expect: tuple[str, ...] = (), message: str | None = None
) -> bool:
    """Move the run to `status`; with `expect`, only from one of those states (compare-and-set)."""
    query = sql.SQL(
        "UPDATE uuid_migration.runs SET status = %s, message = coalesce(%s, message), "
        "finished_at = CASE WHEN %s IN ('succeeded', 'failed') THEN now() END "
        "WHERE run_id = %s {} RETURNING 1"
    ).format(sql.SQL("AND status = ANY(%s)") if expect else sql.SQL(""))
    params: list[Any] = [status, message, status, run_id]
    if expect:
        params.append(list(expect))
    cur.execute(query, params)
    return cur.fetchone() is not None


def add_stage(cur: Any, run_id: str, position: int, stage: Any) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.stages (run_id, stage, position, table_name, kind, depends_on) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, stage.name, position, stage.table, stage.kind, list(stage.depends_on)),
    )


def stages(cur: Any, run_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT stage, table_name, kind, depends_on, status, planned, total_rows, batch_count, "
        "dispatched_upto, started_at, finished_at FROM uuid_migration.stages "
        "WHERE run_id = %s ORDER BY position",
        (run_id,),
    )
    keys = (
        "stage",
        "table",
        "kind",
        "depends_on",
        "status",
        "planned",
        "total_rows",
        "batch_count",
        "dispatched_upto",
        "started_at",
        "finished_at",
    )
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def reset_unplanned_stage(cur: Any, run_id: str, stage: str) -> None:
    """A stage whose planning was cut short is planned again from scratch."""
    cur.execute(
        "DELETE FROM uuid_migration.batches WHERE run_id = %s AND stage = %s", (run_id, stage)
    )


def add_batches(
    cur: Any, run_id: str, stage: str, first_no: int, ranges: list[tuple[KeyRange, int]]
) -> None:
    """Insert batches numbered from `first_no`, each a range with its row count at planning."""
    rows = [
        (run_id, stage, first_no + i, r.lower, r.upper, planned)
        for i, (r, planned) in enumerate(ranges)
    ]
    execute_values(
        cur,
        "INSERT INTO uuid_migration.batches "
        "(run_id, stage, batch_no, lower_bound, upper_bound, planned_rows) VALUES %s",
        rows,
        page_size=1000,
    )


def mark_stage_planned(cur: Any, run_id: str, stage: str, batch_count: int, total: int) -> None:
    cur.execute(
        "UPDATE uuid_migration.stages SET planned = true, batch_count = %s, total_rows = %s "
        "WHERE run_id = %s AND stage = %s",
        (batch_count, total, run_id, stage),
    )


def batches_between(cur: Any, run_id: str, stage: str, first: int, end: int) -> list[Batch]:
    """Batches numbered first <= n < end that are not yet succeeded."""
    cur.execute(
        "SELECT batch_no, lower_bound, upper_bound, status, attempts FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s AND batch_no >= %s AND batch_no < %s "
        "AND status <> 'succeeded' ORDER BY batch_no",
        (run_id, stage, first, end),
    )
    return [Batch(run_id, stage, *row) for row in cur.fetchall()]


def batch_counts(cur: Any, run_id: str, stage: str) -> dict[str, int]:
    cur.execute(
        "SELECT status, count(*) FROM uuid_migration.batches WHERE run_id = %s AND stage = %s "
        "GROUP BY status",
        (run_id, stage),
    )
    return {status: count for status, count in cur.fetchall()}


def record_error(
    cur: Any, run_id: str, table: str, row_id: str | None, error: str, context: dict[str, Any]
) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.errors (run_id, table_name, row_id, error, context) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (run_id, table, row_id, error, Json(context)),
    )


def errors_of(cur: Any, table: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The count of recorded errors for a table and the first few, in the seed's shape."""
    cur.execute("SELECT count(*) FROM uuid_migration.errors WHERE table_name = %s", (table,))
    total = cur.fetchone()[0]
    cur.execute(
        "SELECT table_name, row_id, error, created_at, context FROM uuid_migration.errors "
        "WHERE table_name = %s ORDER BY id LIMIT %s",
        (table, limit),
    )
    return total, [_error_dict(*row) for row in cur.fetchall()]


def _error_dict(table: str, row_id: str | None, error: str, at: datetime, ctx: Any) -> dict:
    out = {"table": table, "id": row_id, "error": error, "timestamp": iso(at)}
    out.update({k: v for k, v in (ctx or {}).items() if k not in out})
    return out


def store_report(cur: Any, run_id: str | None, kind: str, report: dict[str, Any]) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.reports (run_id, kind, report) VALUES (%s, %s, %s)",
        (run_id, kind, Json(report)),
    )


def latest_report(cur: Any, run_id: str, kind: str | None = None) -> dict[str, Any] | None:
    """The run's newest report of that kind (a phase), or of any kind."""
    cur.execute(
        "SELECT report FROM uuid_migration.reports WHERE run_id = %s "
        "AND (%s::text IS NULL OR kind = %s) ORDER BY id DESC LIMIT 1",
        (run_id, kind, kind),
    )
    row = cur.fetchone()
    return row[0] if row else None


def iso(moment: datetime | None) -> str | None:
    """Timestamps as the seed writes them: ISO 8601 in UTC with a Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
