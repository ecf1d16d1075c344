"""Shared tools of the recovery tests: quick recovery settings, slow batches, finding the
worker process in the middle of a batch's transaction, and the after-each invariants."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psutil
from psycopg2 import sql

from config.settings import ENVIRONMENT, Settings
from devtools import sample
from producer import commands, planner
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus

from .helpers import assert_fully_migrated, assert_references_translated, rows, scalar

#: The sample's tables and their original columns (before uuid-migrate added any).
ORIGINAL_COLUMNS = {
    "users": ("id", "email", "name", "created_at"),
    "clinics": ("id", "name"),
    "dashboards": ("id", "user_id", "title"),
    "providers": ("id", "clinic_id", "name"),
}
#: 600 users (12 batches of 50), 60 clinics, 1200 dashboards (24 batches), 180 providers.
SIZE = sample.SampleSize.for_users(600)
#: Generous: the machine is shared; nothing here asserts speed.
DEADLINE_S = 240


def quick(settings: Settings, **overrides: Any) -> Settings:
    """Recovery timings short enough for a test, long enough for a loaded machine."""
    values = {
        "heartbeat_timeout_s": 4,
        "reconcile_interval_s": 2,
        "retry_backoff_ms": 100,
        "retry_backoff_max_ms": 1000,
    }
    return replace(settings, **{**values, **overrides})


def environment(settings: Settings) -> dict[str, str]:
    """The CLI's environment for these settings (what LocalWorkers gives its workers)."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    return {**env, **settings.to_environment()}


def cli(settings: Settings, *args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def build_clinic(conn: Any) -> dict[str, str]:
    """The sample database; returns the checksum of each table's original columns."""
    with conn.cursor() as cur:
        sample.build(cur, SIZE)
    return original_checksums(conn)


def original_checksums(conn: Any) -> dict[str, str]:
    out = {}
    for table, columns in ORIGINAL_COLUMNS.items():
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        query = sql.SQL(
            "SELECT md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text COLLATE \"C\"), '')) "
            "FROM (SELECT {} FROM {}) AS r"
        ).format(cols, sql.Identifier(table))
        out[table] = scalar(conn, query.as_string(conn))
    return out


def slow_batches(conn: Any, table: str, seconds: float, *, batches_only: bool = False) -> None:
    """Every batch statement on `table` sleeps inside its transaction (a window to hit).

    Only a statement that changed rows sleeps: the final sweep runs the batch statement again
    over every range, where it finds nothing left to write, and need not crawl too.
    `batches_only`: only a statement in a transaction holding its batch's ledger row sleeps
    (not the application's, not the sweep's, which may write rows that raced with it)."""
    ledger = (
        " AND EXISTS (SELECT FROM pg_locks WHERE pid = pg_backend_pid() "
        "AND relation = to_regclass('uuid_migration.batches'))"
    )
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE FUNCTION slow_{table}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN IF EXISTS (SELECT FROM changed){ledger if batches_only else ''} "
            f"THEN PERFORM pg_sleep({seconds}); END IF; RETURN NULL; END $$; "
            f"CREATE TRIGGER slow_{table} AFTER UPDATE ON {table} "
            f"REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION slow_{table}(); "
            # fires under the batches' session_replication_role = replica too
            f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER slow_{table}"
        )


def fast_batches(conn: Any, *tables: str) -> None:
    """Undo slow_batches: once a test has hit its window, the rest of the run need not crawl."""
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"DROP TRIGGER slow_{table} ON {table}; DROP FUNCTION slow_{table}()")


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE_S, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def run_status(conn: Any, run_id: str) -> str:
    return scalar(conn, "SELECT status FROM uuid_migration.runs WHERE run_id = %s", (run_id,))


def wait_for_end(conn: Any, run_id: str, timeout: float = DEADLINE_S) -> str:
    """Poll the ledger only (no reconciling here: the workers must recover on their own)."""
    return wait_until(
        lambda: (s := run_status(conn, run_id)) in (RunStatus.SUCCEEDED, RunStatus.FAILED) and s,
        timeout,
        f"run {run_id} to end",
    )


def batch_ports(conn: Any) -> set[int]:
    """Client ports of this database's sessions busy with a batch statement right now: in a
    transaction that locked its batch's ledger row, so not a final sweep, which runs the same
    statement without a batch (a kill there leaves no attempt to run again)."""
    found = rows(
        conn,
        "SELECT a.client_port FROM pg_stat_activity a WHERE a.datname = current_database() "
        "AND a.state = 'active' AND a.pid <> pg_backend_pid() AND a.query LIKE %s "
        "AND EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid "
        "AND l.relation = to_regclass('uuid_migration.batches') "
        "AND l.mode IN ('RowShareLock', 'RowExclusiveLock'))",
        ("WITH upd AS (UPDATE%",),
    )
    return {port for (port,) in found if port}


def pool_process_mid_batch(conn: Any, main_pids: list[int]) -> int | None:
    """The pid of a worker pool process whose connection is inside a batch statement."""
    ports = batch_ports(conn)
    if not ports:
        return None
    for main in main_pids:
        try:
            children = psutil.Process(main).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if any(c.laddr.port in ports for c in child.net_connections(kind="tcp")):
                    return child.pid
            except psutil.NoSuchProcess:
                continue
    return None


def assert_intact(conn: Any, before: dict[str, str], run_id: str) -> None:
    """After any recovery: the run succeeded, every row has exactly one UUID and one mapping,
    references agree, the original columns are unchanged, and validation passed."""
    assert run_status(conn, run_id) == RunStatus.SUCCEEDED
    for table in ORIGINAL_COLUMNS:
        assert_fully_migrated(conn, table)
    assert_references_translated(conn, "dashboards", "user_id", "users", "user_uuid_id")
    assert scalar(conn, "SELECT count(*) FROM id_mappings") == sum(
        scalar(conn, f"SELECT count(*) FROM {t}") for t in ORIGINAL_COLUMNS
    )
    assert original_checksums(conn) == before
    report = post_report(conn, run_id)
    assert report and report["overallStatus"] == "passed", report


def post_report(conn: Any, run_id: str) -> dict[str, Any] | None:
    """The run's last post validation, as the ledger keeps it."""
    return scalar(
        conn,
        "SELECT report FROM uuid_migration.reports WHERE run_id = %s AND kind = 'post' "
        "ORDER BY id DESC LIMIT 1",
        (run_id,),
    )


def terminate_sessions(conn: Any) -> int:
    """pg_terminate_backend on every uuid-migrate session of this database but our own."""
    return scalar(
        conn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
        (db.APPLICATION_NAME,),
    )


def extra_attempts(conn: Any, run_id: str) -> int:
    return scalar(
        conn,
        "SELECT coalesce(sum(attempts - 1), 0) FROM uuid_migration.batches "
        "WHERE run_id = %s AND attempts > 1",
        (run_id,),
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.NoSuchProcess):  # gone, also between the two looks
        return False


def start_producer(settings: Settings, *args: str) -> subprocess.Popen[str]:
    """`uuid-migrate <args>` as a real process of its own, its output collected."""
    return subprocess.Popen(
        [sys.executable, "-m", "producer.cli", *args],
        env=environment(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def worker_family(producer: subprocess.Popen[str], workers: int) -> list[int]:
    """The pids of the producer's local workers and of their pool processes, once all are up."""

    def family() -> list[int] | None:
        try:
            mains = psutil.Process(producer.pid).children()
            pools = [c for m in mains for c in m.children()]
        except psutil.NoSuchProcess:
            return None
        if len(mains) < workers or len(pools) < workers:
            return None
        return [p.pid for p in mains + pools]

    return wait_until(family, 60, f"{workers} workers and their pool processes")


def stop_if_running(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=30)


def plan_only(conn: Any, settings: Settings) -> str:
    """The ledger of a run, as `run` writes it, with nothing enqueued."""
    plan = commands.load_plan(conn, "clinic", None)
    run_id, plan, _ = planner.open_run(conn, plan, settings.batch_size, allow_triggers=True)
    planner.apply_additive_ddl(conn, run_id, plan, settings.lock_timeout_ms)
    planner.plan_batches(conn, run_id, plan)
    planner.mark_running(conn, run_id)
    return run_id


def share_u1s_uuid_with_u2(app: Any) -> None:
    """The application copies user u1's uuid_id to u2, and commits: a unique index on users'
    uuid_id can no longer be built."""
    with app.cursor() as cur:
        cur.execute("UPDATE users SET uuid_id = (SELECT uuid_id FROM users WHERE id = 'u1') WHERE id = 'u2'")
    app.commit()


def assert_index_failed_on_u1_and_u2(conn: Any, run_id: str) -> None:
    """The run ended failed, naming the two users, and left no index behind."""
    assert wait_for_end(conn, run_id) == RunStatus.FAILED
    message = scalar(conn, "SELECT message FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
    assert "cannot build the unique index on users.uuid_id: 2 rows share a uuid_id (ids u1, u2)" in message
    assert scalar(conn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    assert scalar(conn, "SELECT to_regclass('users_uuid_id_key') IS NULL")
