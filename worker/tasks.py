"""Thin Celery tasks: ids in, a call into plain code, a small result out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import redis
from celery.signals import worker_ready

from config.logs import FIELDS, fields_text
from uuid_migrate import advance, control, db, ledger, runner
from uuid_migrate.batch import BatchOutcome
from uuid_migrate.errors import ConnectionFailed
from uuid_migrate.heartbeat import Heartbeat
from uuid_migrate.progress import Progress, client
from uuid_migrate.retries import RetryPolicy
from worker import dispatch, reconciling, runtime
from worker.celery_app import app, settings

log = logging.getLogger("uuid_migrate.worker")

#: Errors after which a callback or control task is sent again rather than lost.
_RETRY_ON = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionFailed, redis.RedisError)
_RETRYING = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": _RETRY_ON,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 20,
}

@contextmanager
def _new_connection_on_retry() -> Iterator[None]:
    """Celery retries the task on these errors; the retry gets a new connection."""
    try:
        yield
    except _RETRY_ON:
        runtime.drop_database()
        raise


POLICY = RetryPolicy(
    max_attempts=settings.batch_max_attempts,
    backoff_ms=settings.retry_backoff_ms,
    backoff_max_ms=settings.retry_backoff_max_ms,
    min_split_rows=settings.min_split_rows,
    statement_timeout_ms=settings.statement_timeout_ms,
)


@app.task(name=dispatch.BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def migrate_batch(
    run_id: str, stage: str, batch_no: int, key_range: str = "", table: str = ""
) -> dict[str, Any]:
    """One key range of one stage, in one transaction. `key_range` and `table` are for people
    reading Flower; the ledger row is the truth.

    Never raises: a chord whose header task raised would never run its callback.
    """
    ctx = runner.Context(
        connect=lambda: runtime.database(settings),
        reset=runtime.drop_database,
        worker=runtime.worker_name(),
        policy=POLICY,
        heartbeat=Heartbeat(_redis_or_none(), settings.heartbeat_timeout_s),
    )
    outcomes = runner.run_batch(ctx, run_id, stage, batch_no)
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


def _after_batches(run_id: str, outcomes: list) -> None:
    """Counters, checkpoint and the circuit breaker; their failure never fails the batch."""
    try:
        conn = runtime.database(settings)
        progress = Progress(runtime.redis_client(settings), run_id)
        for outcome in outcomes:
            advance.record_progress(conn, progress, outcome)
        if any(o.status == "failed" for o in outcomes) and control.check_circuit(conn, run_id):
            log.error("run %s stopped by the circuit breaker", run_id)
        # Cheap (one SET NX): revives the reconciler's schedule if its message was lost; not
        # for a batch that did nothing (a stopped or rolled-back run must stay quiet).
        if any(o.status in (ledger.SUCCEEDED, ledger.FAILED) for o in outcomes):
            reconciling.schedule(app, settings, progress.conn, run_id)
    except Exception:  # the ledger is the truth; the reconciler rebuilds Redis from it
        log.warning("could not record progress of run %s", run_id, exc_info=True)
        runtime.drop_database()


def _redis_or_none() -> Any:
    try:
        return runtime.redis_client(settings)
    except Exception:
        return None


@app.task(name=dispatch.PAGE_DONE_TASK, **_RETRYING)
def page_done(run_id: str, stage: str, end: int) -> dict[str, Any]:
    """Chord callback: the next page, or the stage's close, decided from the ledger."""
    url = settings.require_database()
    with _new_connection_on_retry():
        nxt = advance.after_page(
            runtime.database(settings),
            lambda: db.connect(url, autocommit=True),
            run_id,
            stage,
            end,
            settings.dispatch_page,
        )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {
        "run_id": run_id,
        "stage": stage,
        "page_end": end,
        "sent_pages": len(nxt.pages),
        "validate": nxt.validate,
    }


@app.task(name=dispatch.STAGE_CHECK_TASK, **_RETRYING)
def stage_check(run_id: str, stage: str) -> dict[str, Any]:
    """Callback of re-sent batches: continue or close their stage from the ledger."""
    url = settings.require_database()
    with _new_connection_on_retry():
        nxt = advance.continue_stage(
            runtime.database(settings),
            lambda: db.connect(url, autocommit=True),
            run_id,
            stage,
            settings.dispatch_page,
        )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {"run_id": run_id, "stage": stage, "sent_pages": len(nxt.pages), "validate": nxt.validate}


@app.task(name=dispatch.VALIDATE_TASK, **_RETRYING)
def validate(run_id: str) -> dict[str, Any]:
    """The run's final post-migration validation, stored in the ledger."""
    with _new_connection_on_retry():
        report = advance.finish_validation(runtime.database(settings), run_id)
    if report is None:
        return {"run_id": run_id, "overallStatus": "unknown"}
    return {
        "run_id": run_id,
        "overallStatus": report["overallStatus"],
        "summary": report["summary"],
    }


@app.task(name=dispatch.RETRY_TASK, **_RETRYING)
def retry(
    run_id: str | None = None, table: str | None = None, batch: int | None = None
) -> dict[str, Any]:
    """`uuid-migrate retry` as a task, e.g. from Flower: re-send failed and stale batches."""
    with _new_connection_on_retry():
        return reconciling.retry_and_send(
            app,
            settings,
            runtime.database(settings),
            runtime.redis_client(settings),
            run_id,
            table,
            batch,
        )


@app.task(name=dispatch.RECONCILE_TASK, **_RETRYING)
def reconcile(run_id: str) -> dict[str, Any]:
    """One reconciler pass; it schedules the next one while the run is active."""
    with _new_connection_on_retry():
        return reconciling.reconcile_and_send(
            app, settings, runtime.database(settings), runtime.redis_client(settings), run_id
        )


@worker_ready.connect
def schedule_reconciler(**_: Any) -> None:
    """A worker coming up makes sure the active run has a reconciler scheduled: the one that
    held the scheduled message may be the worker that died."""
    try:
        with db.connection(settings.require_database()) as conn, conn.cursor() as cur:
            run = ledger.latest_run(cur)
        if run and run["status"] in ledger.ACTIVE_RUN_STATES:
            reconciling.schedule(app, settings, client(settings.redis_url), run["run_id"])
    except Exception:
        log.warning("could not schedule the reconciler", exc_info=True)
