"""`plan` and `run`: one plain function per command, callable from Python too. Settings first."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from config.celery import make_app
from config.settings import Settings
from producer import local_workers, planner, watching
from producer.attachment import Attachment
from producer.local_workers import LocalWorkers
from uuid_migrate import db
from uuid_migrate.errors import RunStateError, WorkersFailed
from uuid_migrate.ledger import figures, runs, stages
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import catalog, discovery, plan_file
from uuid_migrate.plan.model import Plan
from uuid_migrate.progression import advance
from uuid_migrate.progression.live import Progress
from uuid_migrate.redis_store import client, throttled
from worker import dispatch, reconciling


@dataclass(frozen=True)
class RunResult:
    """How a `run` ended: the run id and its status (`running` when not waited for)."""

    run_id: str
    status: str
    resumed: bool
    message: str | None = None
    #: The failed batches as error records, with range and attempts (when failed).
    failures: list[dict[str, Any]] = field(default_factory=list)


def load_plan(conn: Any, plan_path: str | None, schemas: Sequence[str] | None) -> Plan:
    """The plan from a file (completed from the catalog) or discovered from the schemas
    (every user schema when None)."""
    with conn.cursor() as cur:
        plan = (
            catalog.resolve(cur, plan_file.load(plan_path))
            if plan_path
            else discovery.discover(cur, schemas, planner.live_home(cur))
        )
    conn.commit()
    return plan


def plan(
    settings: Settings, plan_path: str | None = None, schemas: Sequence[str] | None = None
) -> str:
    """The migration plan as TOML, discovered from the catalog or checked from a file."""
    with db.connection(settings.require_database()) as conn:
        return plan_file.dumps(load_plan(conn, plan_path, schemas))


def run(
    settings: Settings,
    plan_file: str | None = None,
    schemas: Sequence[str] | None = None,
    workers: int = 0,
    wait: bool = False,
    out: TextIO = sys.stdout,
    worker_logs: Path | None = None,
    allow_triggers: bool = False,
    max_rows_per_second: int | None = None,
    spawned: LocalWorkers | None = None,
) -> RunResult:
    """Plan (or resume) a run, enqueue what is not done, and optionally work and wait.

    Local workers start first and come up while the run is prepared (`spawned`: started
    already, by the CLI before it loaded the rest of the tool; the run owns them from here).
    The first pages are sent before they are waited for, so a worker takes its first batch the
    moment it is up; one that exits at start then stops the command, with the run's pages
    queued for `uuid-migrate run` to resume. They log to `worker_logs` (kept), or to a
    temporary folder removed after a run that succeeded."""
    local = spawned.claim() if spawned else None
    try:
        redis_conn = client(settings.redis_url)
        attached = Attachment.take(settings.require_database())
    except BaseException:
        if local:
            local.discard()
        raise
    result = None
    try:
        local = local or local_workers.spawn(settings, workers, worker_logs)
        with db.connection(settings.require_database()) as conn:
            try:
                run_id, resumed = _open(
                    conn, settings, plan_file, schemas, out, allow_triggers, max_rows_per_second
                )
            except Exception:
                if local:  # refused or failed before any work was sent: no wait for them
                    local.discard()
                    local = None
                raise
            _publish_totals(conn, Progress(redis_conn, run_id), run_id)
            _enqueue(conn, settings, Progress(redis_conn, run_id), run_id)
        reconciling.schedule(make_app(settings), settings, redis_conn, run_id)
        if local:
            try:
                await_local(local, settings, out)
            except WorkersFailed as exc:
                raise WorkersFailed(f"{exc}; `uuid-migrate run` resumes the run") from None
        if not (wait or local):
            return RunResult(run_id, RunStatus.RUNNING, resumed)
        result = watch(settings, redis_conn, run_id, out, resumed, attached)
        return result
    finally:
        if local:
            stop_local(local, result is not None and result.status == RunStatus.SUCCEEDED, out)
        attached.release()


def start_local(
    settings: Settings, workers: int, out: TextIO, log_dir: Path | None = None
) -> LocalWorkers | None:
    """N local workers, once they answer (or after a timeout); their log folder is named."""
    local = local_workers.spawn(settings, workers, log_dir)
    if local:
        try:
            await_local(local, settings, out)
        except BaseException:  # the broker away: no worker outlives the command
            stop_local(local, False, out)
            raise
    return local


def await_local(local: LocalWorkers, settings: Settings, out: TextIO) -> None:
    """Name the workers' log folder, then wait until every one answers (or the timeout); one
    that exited at start raises WorkersFailed."""
    out.write(f"{local.count} local worker(s) started; their logs: {local.log_dir}\n")
    local.wait_ready(make_app(settings))


def stop_local(local: LocalWorkers, succeeded: bool, out: TextIO) -> None:
    """Stop the local workers: after a success at once (they are idle: nothing is left to
    finish), otherwise warm with their grace. A temporary log folder goes after a success and
    stays, named, otherwise; a folder the user chose always stays."""
    local.stop(idle=succeeded)
    if succeeded and local.temporary:
        shutil.rmtree(local.log_dir, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):  # a terminal closed under us (SIGHUP)
            out.write(f"worker logs kept in {local.log_dir}\n")


def watch(
    settings: Settings,
    redis_conn: Any,
    run_id: str,
    out: TextIO,
    resumed: bool,
    attached: Attachment | None = None,
) -> RunResult:
    """Wait for the run, reconciling now and then and surviving lost connections (its own
    connection, so a killed session never surfaces as an error of the command); the
    producer's attachment is taken again when its session was lost."""
    app = make_app(settings)
    url = settings.require_database()

    def reconcile(live: Any) -> None:
        if attached:
            attached.refresh()
        reconciling.reconcile_and_send(app, settings, live, redis_conn, run_id)

    conn = db.connect(url)
    try:
        status = watching.wait_for_run(
            conn,
            run_id,
            out,
            queue=settings.queue,
            reconcile=reconcile,
            reconnect=lambda: db.connect(url),
            reconcile_every_s=settings.reconcile_interval_s,
            throttled=lambda: throttled(redis_conn, run_id),
        )
    finally:
        conn.close()
    with db.connection(url) as fresh, fresh.cursor() as cur:
        message = runs.get_run(cur, run_id)["message"]
        failures = figures.failed_batches(cur, run_id) if status != RunStatus.SUCCEEDED else []
    return RunResult(run_id, status, resumed, message, failures)


def _lock_producer(conn: Any) -> None:
    with conn.cursor() as cur:
        if not runs.try_producer_lock(cur):
            raise RunStateError(
                "another uuid-migrate command is planning or rolling back this database right now"
            )
    conn.commit()


def _open(
    conn: Any, settings: Settings, plan_path: str | None, schemas: Sequence[str] | None,
    out: TextIO, allow_triggers: bool, max_rows_per_second: int | None,
) -> tuple[str, bool]:
    """Take the producer's lock, then plan (or resume) the run: its id, and if resumed."""
    _lock_producer(conn)
    run_id, resumed = _prepare(conn, settings, plan_path, schemas, out, allow_triggers)
    if max_rows_per_second is not None:
        planner.set_budget(conn, run_id, max_rows_per_second)
    return run_id, resumed


def _prepare(
    conn: Any, settings: Settings, plan_path: str | None, schemas: Sequence[str] | None,
    out: TextIO, allow_triggers: bool = False,
) -> tuple[str, bool]:
    wanted = load_plan(conn, plan_path, schemas) if plan_path or not _active_run(conn) else None
    if wanted is None and schemas:
        out.write("note: a run is in progress and keeps its own plan: --schema is not used\n")
    run_id, the_plan, resumed = planner.open_run(conn, wanted, settings.batch_size, allow_triggers)
    out.write(f"{'resuming' if resumed else 'starting'} run {run_id}\n")
    if resumed and settings.batch_size is not None and the_plan.batch_size != settings.batch_size:
        out.write("note: a run in progress keeps its own batch sizes: --batch-size is not used\n")
    for item in the_plan.skipped:
        out.write(f"not migrated: {item.describe()}\n")
    planner.take_snapshots(conn, run_id, the_plan)
    planner.apply_additive_ddl(conn, run_id, the_plan, settings.lock_timeout_ms)
    planner.plan_batches(conn, run_id, the_plan)
    planner.mark_running(conn, run_id)
    return run_id, resumed


def _active_run(conn: Any) -> bool:
    with conn.cursor() as cur:
        latest = runs.latest_run(cur)
    conn.commit()
    return runs.is_active(latest)


def _publish_totals(conn: Any, progress: Progress, run_id: str) -> None:
    with conn.cursor() as cur:
        rows = stages.stages(cur, run_id)
    conn.commit()
    for row in rows:
        progress.set_totals(row["stage"], row["total_rows"], row["batch_count"])
    progress.set_run_total(sum(r["total_rows"] for r in rows))


def _enqueue(conn: Any, settings: Settings, progress: Progress, run_id: str) -> None:
    """Send what the ledger says is owed: unfinished dispatched pages, ready stages, validation."""
    nxt = advance.resume(conn, progress, run_id, settings.dispatch_page)
    dispatch.send_next(make_app(settings), settings.queue, run_id, nxt)
