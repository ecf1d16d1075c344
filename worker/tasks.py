"""Thin Celery tasks: ids in, a call into plain code, a small result out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.signals import worker_ready

from config.logs import FIELDS, fields_text
from uuid_migrate import db, retrying
from uuid_migrate.execution import batch_run
from uuid_migrate.execution.attempt import BatchOutcome
from uuid_migrate.execution.heartbeat import Heartbeat
from uuid_migrate.ledger import runs, tables
from uuid_migrate.progression import advance, closing, final_validation
from uuid_migrate.progression.live import Progress
from uuid_migrate.recovery.breaker import check_circuit
from uuid_migrate.redis_store import client
from uuid_migrate.retrying import RetryPolicy
from worker import dispatch, reconciling, runtime
from worker.celery_app import app, settings

log = logging.getLogger("uuid_migrate.worker")

POLICY = RetryPolicy(
    max_attempts=settings.batch_max_attempts,
    backoff_ms=settings.retry_backoff_ms,
    backoff_max_ms=settings.retry_backoff_max_ms,
    min_split_rows=settings.min_split_rows,
    statement_timeout_ms=settings.statement_timeout_ms,
    lock_timeout_ms=settings.batch_lock_timeout_ms,
)
#: Retries of a callback or control task against transient errors (a lost connection,
#: Redis away, a timeout) before Celery gives up on it; the reconciler then picks up what
#: it missed.
CALLBACK_MAX_RETRIES = 20
#: A callback's first retry waits up to a second, each further one up to twice as long, at
#: most a minute (full jitter).
CALLBACK_BACKOFF_MS = 1000
CALLBACK_BACKOFF_MAX_MS = 60_000
#: Callbacks are acknowledged once done and come back if their worker dies.
_CALLBACK = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "bind": True,
    "max_retries": CALLBACK_MAX_RETRIES,
}
#: What a callback may try again: it is idempotent, so a timeout is worth another try too.
_RETRIABLE = (retrying.TRANSIENT, retrying.SPLIT)


def _retried(task: Task, work: Callable[[], Any]) -> Any:
    """Run `work`; on an error the one retry decision calls worth another try, drop the
    worker's connection and have Celery try again after the backoff."""
    try:
        return work()
    except Exception as exc:
        kind = retrying.classify(exc)
        attempt = task.request.retries + 1
        if kind not in _RETRIABLE or not retrying.should_retry(
            kind, attempt, CALLBACK_MAX_RETRIES + 1
        ):
            raise
        runtime.drop_database()
        wait_ms = retrying.compute_backoff(attempt, CALLBACK_BACKOFF_MS, CALLBACK_BACKOFF_MAX_MS)
        raise task.retry(exc=exc, countdown=wait_ms / 1000) from exc


def _index_connection() -> Any:
    return db.connect(settings.require_database(), autocommit=True)


def _progress(run_id: str) -> Progress | None:
    redis_conn = _redis_or_none()
    return Progress(redis_conn, run_id) if redis_conn is not None else None


@app.task(name=dispatch.BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def migrate_batch(
    run_id: str, stage: str, batch_no: int, key_range: str = "", table: str = ""
) -> dict[str, Any]:
    """One key range of one stage, in one transaction. `key_range` and `table` are for people
    reading Flower; the ledger row is the truth.

    Never raises: a chord whose header task raised would never run its callback.
    """
    ctx = batch_run.Context(
        connect=lambda: runtime.database(settings),
        reset=runtime.drop_database,
        worker=runtime.worker_name(),
        policy=POLICY,
        heartbeat=Heartbeat(_redis_or_none(), settings.heartbeat_timeout_s),
        throttle=runtime.throttle(settings),
        cutter=runtime.batch_cutter(settings),
    )
    outcomes = batch_run.run_batch(ctx, run_id, stage, batch_no)
    _after_batches(run_id, outcomes)
    for outcome in outcomes:
        _log_batch(outcome, key_range, table)
    result = outcomes[0].as_dict()
    result["batches"] = [{"batch": o.batch_no, "status": o.status} for o in outcomes]
    return result


def _log_batch(outcome: BatchOutcome, key_range: str, table: str) -> None:
    """The batch's one log line: key=value text, or these fields in a JSON log."""
    fields = {
        "run": outcome.run_id,
        "table": outcome.table or table,
        "stage": outcome.stage,
        "batch": outcome.batch_no,
        "range": outcome.key_range or key_range,
        "status": outcome.status,
        "rows": outcome.rows,
        "duration_ms": outcome.duration_ms,
        "attempt": outcome.attempt,
        "error": outcome.error,
    }
    log.info("batch %s", fields_text(fields), extra={FIELDS: {"event": "batch", **fields}})


def _after_batches(run_id: str, outcomes: list[BatchOutcome]) -> None:
    """Counters, checkpoint, circuit breaker and the reconciler's schedule, as progression
    says; their failure never fails the batch."""
    try:
        conn = runtime.database(settings)
        progress = Progress(runtime.redis_client(settings), run_id)
        then = advance.after_batches(conn, progress, run_id, outcomes)
        if then.check_breaker and check_circuit(conn, run_id):
            log.error("run %s stopped by the circuit breaker", run_id)
        if then.rearm_reconciler:
            reconciling.schedule(app, settings, progress.conn, run_id)
    except Exception:  # the ledger is the truth; the reconciler rebuilds Redis from it
        log.warning("could not record progress of run %s", run_id, exc_info=True)
        runtime.drop_database()


def _redis_or_none() -> Any:
    try:
        return runtime.redis_client(settings)
    except Exception:
        return None


@app.task(name=dispatch.PAGE_DONE_TASK, **_CALLBACK)
def page_done(self: Task, run_id: str, stage: str, end: int) -> dict[str, Any]:
    """Chord callback: the next page, or the stage's close, decided from the ledger. A
    backfill's sweep is done here once its index task is sent, not queued behind the batches
    already sent: the tables depending on it wait for it."""
    nxt = _retried(
        self,
        lambda: advance.after_page(
            runtime.database(settings), _progress(run_id),
            run_id, stage, end, settings.dispatch_page, settings.batch_lock_timeout_ms,
        ),
    )
    sweeps, nxt.sweeps = nxt.sweeps, []
    dispatch.send_next(app, settings.queue, run_id, nxt)
    for swept in sweeps:
        then = _retried(self, lambda s=swept: _sweep(run_id, s))
        dispatch.send_next(app, settings.queue, run_id, then)
        nxt.merge(then)
    return {
        "run_id": run_id,
        "stage": stage,
        "page_end": end,
        "sent_pages": len(nxt.pages),
        "validate": nxt.validate,
    }


@app.task(name=dispatch.STAGE_CHECK_TASK, **_CALLBACK)
def stage_check(self: Task, run_id: str, stage: str) -> dict[str, Any]:
    """Callback of re-sent batches: continue or close their stage from the ledger."""
    nxt = _retried(
        self,
        lambda: advance.continue_stage(
            runtime.database(settings), _progress(run_id),
            run_id, stage, settings.dispatch_page, settings.batch_lock_timeout_ms,
        ),
    )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {"run_id": run_id, "stage": stage, "sent_pages": len(nxt.pages), "validate": nxt.validate}


@app.task(name=dispatch.STAGE_SWEEP_TASK, **_CALLBACK)
def stage_sweep(self: Task, run_id: str, stage: str) -> dict[str, Any]:
    """A backfill's final sweep, then the stages waiting for its table start (sent by a
    re-sent page's callback or the reconciler; a page's callback sweeps by itself)."""
    nxt = _retried(self, lambda: _sweep(run_id, stage))
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {"run_id": run_id, "stage": stage, "sent_pages": len(nxt.pages), "validate": nxt.validate}


def _sweep(run_id: str, stage: str) -> Any:
    return closing.sweep_and_hand_off(
        runtime.database(settings), _progress(run_id), run_id, stage,
        settings.dispatch_page, settings.batch_lock_timeout_ms,
    )  # fmt: skip


@app.task(name=dispatch.STAGE_INDEX_TASK, **_CALLBACK)
def stage_index(self: Task, run_id: str, stage: str) -> dict[str, Any]:
    """A backfill's unique index on `uuid_id`, built beside its sweep."""
    nxt = _retried(
        self,
        lambda: closing.build_stage_index(
            runtime.database(settings), _index_connection, _progress(run_id),
            run_id, stage, settings.dispatch_page,
        ),
    )  # fmt: skip
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {"run_id": run_id, "stage": stage, "sent_pages": len(nxt.pages), "validate": nxt.validate}


@app.task(name=dispatch.VALIDATE_TASK, **_CALLBACK)
def validate(self: Task, run_id: str) -> dict[str, Any]:
    """The run's final post-migration validation, stored in the ledger."""
    report = _retried(
        self,
        lambda: final_validation.finish_validation(
            runtime.database(settings), run_id, settings.batch_lock_timeout_ms
        ),
    )
    if report is None:
        return {"run_id": run_id, "overallStatus": "unknown"}
    return {
        "run_id": run_id,
        "overallStatus": report["overallStatus"],
        "summary": report["summary"],
    }


@app.task(name=dispatch.RETRY_TASK, **_CALLBACK)
def retry(
    self: Task, run_id: str | None = None, table: str | None = None, batch: int | None = None
) -> dict[str, Any]:
    """`uuid-migrate retry` as a task, e.g. from Flower: re-send failed and stale batches."""
    return _retried(
        self,
        lambda: reconciling.retry_and_send(
            app, settings, runtime.database(settings), runtime.redis_client(settings),
            run_id, table, batch,
        ),
    )


@app.task(name=dispatch.RECONCILE_TASK, **_CALLBACK)
def reconcile(self: Task, run_id: str) -> dict[str, Any]:
    """One reconciler pass; it schedules the next one while the run is active."""
    return _retried(
        self,
        lambda: reconciling.reconcile_and_send(
            app, settings, runtime.database(settings), runtime.redis_client(settings), run_id
        ),
    )


@worker_ready.connect
def schedule_reconciler(**_: Any) -> None:
    """A worker coming up makes sure the active run has a reconciler scheduled: the one that
    held the scheduled message may be the worker that died."""
    try:
        with db.connection(settings.require_database()) as conn, conn.cursor() as cur:
            run = runs.latest_run(cur)
            if run is not None:
                tables.ensure_worker_parts(cur)
        if runs.is_active(run):
            reconciling.schedule(app, settings, client(settings.redis_url), run["run_id"])
    except Exception:
        log.warning("could not schedule the reconciler", exc_info=True)
