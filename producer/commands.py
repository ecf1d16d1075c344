"""One plain function per CLI command, callable from Python too. Settings come first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import psycopg2

from config.celery import make_app
from config.settings import Settings
from producer import planner
from producer.local_workers import LocalWorkers
from producer.progress_view import ProgressView
from uuid_migrate import advance, catalog, db, flow, ledger, planfile
from uuid_migrate.checkpoint import processed_rows, stage_checkpoint
from uuid_migrate.errors import ConnectionFailed, RunStateError
from uuid_migrate.plan import Plan
from uuid_migrate.progress import Progress, client
from uuid_migrate.requeue import failed_batches
from worker import dispatch, reconciling

#: Seconds between looks at the ledger while waiting for a run.
POLL_S = 0.5
#: Run states `run --wait` stops at; a rollback ends a run too.
ENDED = (ledger.SUCCEEDED, ledger.FAILED, ledger.ROLLING_BACK, ledger.ROLLED_BACK)


@dataclass(frozen=True)
class RunResult:
    """How a `run` ended: the run id and its status (`running` when not waited for)."""

    run_id: str
    status: str
    resumed: bool
    message: str | None = None
    #: The failed batches in the seed's error shape, with range and attempts (when failed).
    failures: list[dict[str, Any]] = field(default_factory=list)


def load_plan(conn: Any, plan_file: str | None, schema: str) -> Plan:
    """The plan from a file (completed from the catalog) or discovered from the schema."""
    with conn.cursor() as cur:
        plan = (
            catalog.resolve(cur, planfile.load(plan_file))
            if plan_file
            else catalog.discover(cur, schema)
        )
    conn.commit()
    return plan


def plan(settings: Settings, plan_file: str | None = None, schema: str = "public") -> str:
    """The migration plan as TOML, discovered from the catalog or checked from a file."""
    with db.connection(settings.require_database()) as conn:
        return planfile.dumps(load_plan(conn, plan_file, schema))


def run(
    settings: Settings,
    plan_file: str | None = None,
    schema: str = "public",
    workers: int = 0,
    wait: bool = False,
    out: TextIO = sys.stdout,
) -> RunResult:
    """Plan (or resume) a run, enqueue what is not done, and optionally work and wait."""
    redis_conn = client(settings.redis_url)
    local = None
    try:
        with db.connection(settings.require_database()) as conn:
            _lock_producer(conn)
            run_id, resumed = _prepare(conn, settings, plan_file, schema, out)
            _publish_totals(conn, Progress(redis_conn, run_id), run_id)
            local = LocalWorkers(settings, workers).start() if workers else None
            if local:
                local.wait_ready(make_app(settings))
            _enqueue(conn, settings, run_id)
        reconciling.schedule(make_app(settings), settings, redis_conn, run_id)
        if not (wait or local):
            return RunResult(run_id, ledger.RUNNING, resumed)
        return watch(settings, redis_conn, run_id, out, resumed)
    finally:
        if local:
            local.stop()


def watch(settings: Settings, redis_conn: Any, run_id: str, out: TextIO, resumed: bool) -> RunResult:
    """Wait for the run, reconciling now and then and surviving lost connections (its own
    connection, so a killed session never surfaces as an error of the command)."""
    app = make_app(settings)
    url = settings.require_database()

    def reconcile(live: Any) -> None:
        reconciling.reconcile_and_send(app, settings, live, redis_conn, run_id)

    conn = db.connect(url)
    try:
        status = wait_for_run(
            conn,
            Progress(redis_conn, run_id),
            run_id,
            out,
            reconcile=reconcile,
            reconnect=lambda: db.connect(url),
            reconcile_every_s=settings.reconcile_interval_s,
        )
    finally:
        conn.close()
    with db.connection(url) as fresh, fresh.cursor() as cur:
        message = ledger.get_run(cur, run_id)["message"]
        failures = failed_batches(cur, run_id) if status != ledger.SUCCEEDED else []
    return RunResult(run_id, status, resumed, message, failures)


def _lock_producer(conn: Any) -> None:
    with conn.cursor() as cur:
        if not ledger.try_producer_lock(cur):
            raise RunStateError("another uuid-migrate producer is planning this database right now")
    conn.commit()


def _prepare(
    conn: Any, settings: Settings, plan_file: str | None, schema: str, out: TextIO
) -> tuple[str, bool]:
    wanted = load_plan(conn, plan_file, schema) if plan_file or not _active_run(conn) else None
    run_id, the_plan, resumed = planner.open_run(conn, wanted, settings.batch_size)
    out.write(f"{'resuming' if resumed else 'starting'} run {run_id}\n")
    planner.take_snapshots(conn, run_id, the_plan)
    planner.apply_additive_ddl(conn, run_id, the_plan, settings.lock_timeout_ms)
    planner.plan_batches(conn, run_id, the_plan, settings.batch_size)
    planner.mark_running(conn, run_id)
    return run_id, resumed


def _active_run(conn: Any) -> bool:
    with conn.cursor() as cur:
        latest = ledger.latest_run(cur)
    conn.commit()
    return bool(latest and latest["status"] in ledger.ACTIVE_RUN_STATES)


def _publish_totals(conn: Any, progress: Progress, run_id: str) -> None:
    with conn.cursor() as cur:
        rows = ledger.stages(cur, run_id)
    conn.commit()
    for row in rows:
        progress.set_totals(row["stage"], row["total_rows"], row["batch_count"])
    progress.set_run_total(sum(r["total_rows"] for r in rows))


def _enqueue(conn: Any, settings: Settings, run_id: str) -> None:
    """Send what the ledger says is owed: unfinished dispatched pages, ready stages, validation."""
    with conn.cursor() as cur:
        status = ledger.get_run(cur, run_id)["status"]
        pages = []
        if status == ledger.RUNNING:
            for row in ledger.stages(cur, run_id):
                if row["status"] == ledger.RUNNING:
                    page = flow.resend_page(cur, run_id, row["stage"]) or flow.claim_next_page(
                        cur, run_id, row["stage"], 0, settings.dispatch_page
                    )
                    pages += (
                        [page]
                        if page
                        else [flow.Page(run_id, row["stage"], row["dispatched_upto"], ())]
                    )
        nxt = (
            advance.advance_run(cur, run_id, settings.dispatch_page)
            if status == ledger.RUNNING
            else advance.Next(validate=status == ledger.VALIDATING)
        )
    conn.commit()
    nxt.pages = pages + nxt.pages
    dispatch.send_next(make_app(settings), settings.queue, run_id, nxt)


def wait_for_run(
    conn: Any,
    progress: Progress,
    run_id: str,
    out: TextIO,
    *,
    reconcile: Callable[[Any], None] | None = None,
    reconnect: Callable[[], Any] | None = None,
    reconcile_every_s: float = 30.0,
) -> str:
    """Show progress until the run succeeds or fails; returns its final status.

    With `reconnect`, a lost PostgreSQL connection is replaced (a restarted server, killed
    sessions); with `reconcile`, the reconciler runs every `reconcile_every_s`.
    """
    view = ProgressView(out)
    first = conn
    last_reconcile = time.monotonic()
    while True:
        try:
            if reconcile and time.monotonic() - last_reconcile >= reconcile_every_s:
                last_reconcile = time.monotonic()
                _quietly(reconcile, conn)
            with conn.cursor() as cur:
                run_row = ledger.get_run(cur, run_id)
                rows = [_progress_row(cur, run_id, s) for s in ledger.stages(cur, run_id)]
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionFailed):
            if reconnect is None:
                raise
            time.sleep(POLL_S)
            conn = _reconnect(conn, reconnect)
            continue
        final = run_row["status"] in ENDED
        view.show(rows, final=final)
        if final:
            if conn is not first:
                conn.close()
            return run_row["status"]
        time.sleep(POLL_S)


def _reconnect(conn: Any, reconnect: Callable[[], Any]) -> Any:
    if not conn.closed:
        conn.close()  # the caller's own connection is closed too: it was lost anyway
    try:
        return reconnect()
    except ConnectionFailed:
        return conn  # still closed: the next look fails again and we try again


def _quietly(reconcile: Callable[[Any], None], conn: Any) -> None:
    """A reconciler pass that fails (Redis or the broker away) is simply tried next time."""
    try:
        reconcile(conn)
    except (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionFailed):
        raise
    except Exception as exc:
        print(f"reconciler: {type(exc).__name__}: {exc}", file=sys.stderr)


def _progress_row(cur: Any, run_id: str, stage: dict[str, Any]) -> dict[str, Any]:
    done = processed_rows(cur, run_id, stage["stage"])
    return {
        "stage": stage["stage"],
        "status": stage["status"],
        "done": done,
        "total": int(stage["total_rows"]),
    }


def status(settings: Settings) -> dict[str, Any]:
    """The latest run: its status, the seed's checkpoint per stage, and its validation report."""
    return status_for_url(settings.require_database())


def status_for_url(url: str) -> dict[str, Any]:
    with db.connection(url) as conn, conn.cursor() as cur:
        latest = ledger.latest_run(cur)
        if latest is None:
            return {"run": None, "status": "none", "tables": []}
        run_id = latest["run_id"]
        cur.execute("SELECT paused FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
        latest["paused"] = latest["status"] in ledger.ACTIVE_RUN_STATES and cur.fetchone()[0]
        checkpoints = [stage_checkpoint(cur, run_id, s) for s in ledger.stages(cur, run_id)]
        report = ledger.latest_report(cur, run_id)
    return {
        "run": run_id,
        "status": "paused" if latest.get("paused") else latest["status"],
        "message": latest["message"],
        "startedAt": ledger.iso(latest["created_at"]),
        "finishedAt": ledger.iso(latest["finished_at"]),
        "tables": checkpoints,
        "validation": report,
    }
