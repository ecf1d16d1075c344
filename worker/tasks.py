"""Thin Celery tasks: ids in, a call into plain code, a small result out."""

from __future__ import annotations

import logging
from typing import Any

from config.logs import FIELDS, fields_text
from uuid_migrate import advance, batch, db
from uuid_migrate.progress import Progress
from worker import dispatch, runtime
from worker.celery_app import app, settings

log = logging.getLogger("uuid_migrate.worker")


@app.task(name=dispatch.BATCH_TASK, acks_late=True, reject_on_worker_lost=True)
def migrate_batch(
    run_id: str, stage: str, batch_no: int, key_range: str = "", table: str = ""
) -> dict[str, Any]:
    """One key range of one stage, in one transaction. `key_range` and `table` are for people
    reading Flower; the ledger row is the truth."""
    conn = runtime.database(settings)
    try:
        outcome = batch.execute_batch(
            conn, run_id, stage, batch_no, runtime.worker_name(), settings.statement_timeout_ms
        )
        advance.record_progress(conn, Progress(runtime.redis_client(settings), run_id), outcome)
    except Exception:
        runtime.drop_database()
        raise
    _log_batch(outcome, key_range, table)
    return outcome.as_dict()


def _log_batch(outcome: batch.BatchOutcome, key_range: str, table: str) -> None:
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
    }
    log.info("batch %s", fields_text(fields), extra={FIELDS: {"event": "batch", **fields}})


@app.task(name=dispatch.PAGE_DONE_TASK, acks_late=True, reject_on_worker_lost=True)
def page_done(run_id: str, stage: str, end: int) -> dict[str, Any]:
    """Chord callback: the next page, or the stage's close, decided from the ledger."""
    conn = runtime.database(settings)
    url = settings.require_database()
    nxt = advance.after_page(
        conn, lambda: db.connect(url, autocommit=True), run_id, stage, end, settings.dispatch_page
    )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    return {
        "run_id": run_id,
        "stage": stage,
        "page_end": end,
        "sent_pages": len(nxt.pages),
        "validate": nxt.validate,
    }


@app.task(name=dispatch.VALIDATE_TASK, acks_late=True, reject_on_worker_lost=True)
def validate(run_id: str) -> dict[str, Any]:
    """The run's final post-migration validation, stored in the ledger."""
    report = advance.finish_validation(runtime.database(settings), run_id)
    if report is None:
        return {"run_id": run_id, "overallStatus": "unknown"}
    return {
        "run_id": run_id,
        "overallStatus": report["overallStatus"],
        "summary": report["summary"],
    }
