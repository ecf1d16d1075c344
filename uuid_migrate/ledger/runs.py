"""The runs table: creating and reading runs, the locks around them, and every move of a run.

Each move is a compare-and-set from the states it may leave, so two callers racing (a chord
callback delivered twice, a resume beside a live callback) can only make it once.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from uuid_migrate.identifiers import qualified
from uuid_migrate.ledger.states import ACTIVE_RUN_STATES, FENCED_RUN_STATES, RunStatus
from uuid_migrate.ledger.tables import LEDGER_SCHEMA, ledger_exists, table_exists

#: Serialises producers: only one plans or resumes a run of a database at a time.
PRODUCER_LOCK_KEY = 0x757569645F6D6967  # "uuid_mig"
#: Held shared by every producer attached to the database (from planning to the end of
#: `run --wait`, paused or not) and exclusive by a rollback, which so sees them all.
ATTACHED_LOCK_KEY = PRODUCER_LOCK_KEY + 1

#: What a rollback clears of the runs' progress; runs, reports, snapshots and steps stay.
_PROGRESS_TABLES = ("batches", "transitions", "stages", "errors")
_RUN_COLUMNS = "run_id, status, plan, batch_size, message, created_at, finished_at, paused"
_RUN_KEYS = tuple(_RUN_COLUMNS.split(", "))


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{secrets.token_hex(3)}"


def create_run(cur: Any, run_id: str, plan: dict[str, Any], batch_size: int) -> None:
    cur.execute(
        "INSERT INTO uuid_migration.runs (run_id, status, plan, batch_size) VALUES (%s, %s, %s, %s)",
        (run_id, RunStatus.PLANNING, Json(plan), batch_size),
    )


def latest_run(cur: Any) -> dict[str, Any] | None:
    """The newest run, or None; the one commands act on unless told `--run`."""
    if not ledger_exists(cur):
        return None
    cur.execute(
        f"SELECT {_RUN_COLUMNS} FROM uuid_migration.runs "
        "ORDER BY created_at DESC, run_id DESC LIMIT 1"
    )
    row = cur.fetchone()
    return _run_dict(row) if row else None


def get_run(cur: Any, run_id: str) -> dict[str, Any] | None:
    if not ledger_exists(cur):
        return None
    cur.execute(f"SELECT {_RUN_COLUMNS} FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    return _run_dict(row) if row else None


def all_runs(cur: Any) -> list[dict[str, Any]]:
    """Every run, newest first, with its tables, planned and migrated rows and batch times."""
    if not ledger_exists(cur):
        return []
    cur.execute(
        f"SELECT {', '.join('r.' + c for c in _RUN_KEYS)}, "
        "(SELECT coalesce(sum(total_rows), 0) FROM uuid_migration.stages s "
        " WHERE s.run_id = r.run_id AND s.kind = 'backfill'), "
        "(SELECT coalesce(sum(planned_rows), 0) FROM uuid_migration.batches b "
        " JOIN uuid_migration.stages s USING (run_id, stage) "
        " WHERE b.run_id = r.run_id AND s.kind = 'backfill' AND b.status = 'succeeded') "
        "FROM uuid_migration.runs r ORDER BY r.created_at DESC, r.run_id DESC"
    )
    out = []
    for row in cur.fetchall():
        run = _run_dict(row[: len(_RUN_KEYS)])
        run["rows_planned"], run["rows_done"] = int(row[-2]), int(row[-1])
        out.append(run)
    return out


def live_runs(cur: Any) -> list[dict[str, Any]]:
    """Runs not rolled back yet, oldest first: together they are the migration to undo."""
    if not ledger_exists(cur):
        return []
    cur.execute(
        f"SELECT {_RUN_COLUMNS} FROM uuid_migration.runs WHERE status <> %s "
        "ORDER BY created_at, run_id",
        (RunStatus.ROLLED_BACK,),
    )
    return [_run_dict(row) for row in cur.fetchall()]


def runs_ended_with(cur: Any, run: dict[str, Any]) -> list[str]:
    """The runs that ended in the same transaction as `run` (one rollback ends them together)."""
    cur.execute(
        "SELECT run_id FROM uuid_migration.runs WHERE status = %s AND finished_at = %s "
        "ORDER BY created_at",
        (run["status"], run["finished_at"]),
    )
    return [row[0] for row in cur.fetchall()] or [run["run_id"]]


def first_run_started(cur: Any, run_ids: list[str]) -> datetime | None:
    cur.execute(
        "SELECT min(created_at) FROM uuid_migration.runs WHERE run_id = ANY(%s)", (run_ids,)
    )
    return cur.fetchone()[0]


def _run_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    run = dict(zip(_RUN_KEYS, row, strict=True))
    run["paused"] = bool(run["paused"])
    return run


def try_producer_lock(cur: Any) -> bool:
    """The session lock that lets one producer (or rollback) at a time change a database."""
    cur.execute("SELECT pg_try_advisory_lock(%s)", (PRODUCER_LOCK_KEY,))
    return bool(cur.fetchone()[0])


def try_attach(cur: Any) -> bool:
    """A producer's session says it is attached; False while a rollback holds the database."""
    cur.execute("SELECT pg_try_advisory_lock_shared(%s)", (ATTACHED_LOCK_KEY,))
    return bool(cur.fetchone()[0])


def try_detached_lock(cur: Any) -> bool:
    """A rollback's session: True if no producer is attached (and none can attach now)."""
    cur.execute("SELECT pg_try_advisory_lock(%s)", (ATTACHED_LOCK_KEY,))
    return bool(cur.fetchone()[0])


def session_alive(cur: Any) -> None:
    """Raises if the session is gone (a restarted server, a terminated backend)."""
    cur.execute("SELECT 1")


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


def run_state(cur: Any, run_id: str) -> tuple[str | None, bool]:
    """(status, paused) of the run; (None, False) when it is not in the ledger."""
    cur.execute("SELECT status, paused FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
    row = cur.fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


def set_paused(cur: Any, run_id: str, paused: bool) -> None:
    cur.execute("UPDATE uuid_migration.runs SET paused = %s WHERE run_id = %s", (paused, run_id))


def _move(
    cur: Any,
    run_id: str,
    to: RunStatus,
    leaving: tuple[RunStatus, ...],
    message: str | None,
    clear_message: bool = False,
) -> bool:
    """The one UPDATE behind every move; True if this caller made it. A move without a
    message keeps the run's message, unless it clears it."""
    ended = to in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ROLLED_BACK)
    cur.execute(
        "UPDATE uuid_migration.runs SET status = %s, "
        "message = CASE WHEN %s THEN NULL ELSE coalesce(%s, message) END, "
        "finished_at = CASE WHEN %s THEN now() END "
        "WHERE run_id = %s AND status = ANY(%s) RETURNING 1",
        (to, clear_message, message, ended, run_id, list(leaving)),
    )
    return cur.fetchone() is not None


def start_running(cur: Any, run_id: str) -> bool:
    """planning -> running: every stage is planned, batches may be sent."""
    return _move(cur, run_id, RunStatus.RUNNING, (RunStatus.PLANNING,), None)


def start_validating(cur: Any, run_id: str) -> bool:
    """running -> validating: every stage succeeded; claimed once, by one caller."""
    return _move(cur, run_id, RunStatus.VALIDATING, (RunStatus.RUNNING,), None)


def finish_validation(cur: Any, run_id: str, passed: bool) -> bool:
    """validating -> succeeded, or failed when the post-migration report failed."""
    to, message = (
        (RunStatus.SUCCEEDED, None)
        if passed
        else (RunStatus.FAILED, "post-migration validation failed")
    )
    return _move(cur, run_id, to, (RunStatus.VALIDATING,), message)


def fail(cur: Any, run_id: str, message: str) -> bool:
    """running -> failed: a stage failed and nothing else can move, or the breaker tripped."""
    return _move(cur, run_id, RunStatus.FAILED, (RunStatus.RUNNING,), message)


def reopen(cur: Any, run_id: str) -> bool:
    """failed -> running: `retry` (or the reconciler after it) sends work again."""
    return _move(cur, run_id, RunStatus.RUNNING, (RunStatus.FAILED,), None, clear_message=True)


def fence(cur: Any, run_ids: list[str]) -> None:
    """any -> rolling_back, after waiting for every batch transaction in flight (FOR UPDATE
    waits for their FOR KEY SHARE); from then on no batch of these runs writes."""
    cur.execute("SELECT 1 FROM uuid_migration.runs WHERE run_id = ANY(%s) FOR UPDATE", (run_ids,))
    cur.execute(
        "UPDATE uuid_migration.runs SET status = %s, message = %s WHERE run_id = ANY(%s)",
        (RunStatus.ROLLING_BACK, "rollback in progress", run_ids),
    )


def close_rolled_back(cur: Any, run_ids: list[str], verified: bool) -> None:
    """rolling_back -> rolled_back, together, so they share one finished_at."""
    message = "rolled back" + ("" if verified else "; verification failed")
    cur.execute(
        "UPDATE uuid_migration.runs SET status = %s, message = %s, finished_at = now() "
        "WHERE run_id = ANY(%s)",
        (RunStatus.ROLLED_BACK, message, run_ids),
    )


def is_active(run: dict[str, Any] | None) -> bool:
    return bool(run and run["status"] in ACTIVE_RUN_STATES)


def forget_progress(cur: Any, run_ids: list[str]) -> None:
    """After a rollback: the runs' batches (and their transition log), stages and errors."""
    for table in _PROGRESS_TABLES:
        if table_exists(cur, table):  # a ledger written by an older version may lack one
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = ANY(%s)").format(
                    qualified(LEDGER_SCHEMA, table)
                ),
                (run_ids,),
            )
