"""`retry`, `pause` and `resume`: one plain function per command, callable from Python too."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from config.celery import make_app
from config.settings import Settings
from producer.attachment import Attachment
from producer.commands import RunResult, start_local, stop_local, watch
from uuid_migrate import db
from uuid_migrate.errors import RunStateError
from uuid_migrate.ledger import tables
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.recovery.pause import set_paused
from uuid_migrate.redis_store import client
from worker import reconciling


def retry(
    settings: Settings,
    table: str | None = None,
    batch: int | None = None,
    workers: int = 0,
    wait: bool = False,
    out: TextIO = sys.stdout,
    run_id: str | None = None,
    worker_logs: Path | None = None,
) -> RunResult:
    """Re-send the failed and stale batches of the run (the latest one by default) as chords
    that continue their stages (then their dependents, then validation); optionally work and
    wait."""
    app = make_app(settings)
    redis_conn = client(settings.redis_url)
    attached = Attachment.take(settings.require_database())
    local = None
    result = None
    try:
        local = start_local(settings, workers, out, worker_logs)
        with db.connection(settings.require_database()) as conn:
            sent = reconciling.retry_and_send(
                app, settings, conn, redis_conn, run_id=run_id, table=table, batch_no=batch
            )
        run_id = sent["run_id"]
        out.write(f"run {run_id}: re-sent {len(sent['resent'])} batch(es)\n")
        for item in sent["resent"]:
            out.write(f"  {item['stage']} batch {item['batch']} (was {item['was']})\n")
        if not (wait or local):
            return RunResult(run_id, RunStatus.RUNNING, True)
        result = watch(settings, redis_conn, run_id, out, True, attached)
        return result
    finally:
        if local:
            stop_local(local, result is not None and result.status == RunStatus.SUCCEEDED, out)
        attached.release()


def pause(settings: Settings, run_id: str | None = None) -> str:
    """Workers finish their current batch and hold the rest, unacknowledged, until `resume`.

    Only the ledger flag: a worker that takes a message while paused waits with it, so with
    prefetch 1 no worker reserves more. (Broadcasting cancel_consumer / add_consumer was
    tried and dropped: add_consumer reaches every worker on the broker, and would attach our
    queue to workers that never served it.)
    """
    return _set_paused(settings, True, run_id)


def resume(settings: Settings, run_id: str | None = None) -> str:
    return _set_paused(settings, False, run_id)


def _set_paused(settings: Settings, paused: bool, run_id: str | None) -> str:
    with db.connection(settings.require_database()) as conn, conn.cursor() as cur:
        if not tables.ledger_exists(cur):
            raise RunStateError("no migration run recorded in this database")
        return set_paused(cur, paused, run_id)
