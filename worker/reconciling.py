"""Running the reconciler and `retry` and sending what they decide; used by the producer
(`run --wait`, `retry`) and by the self-rescheduling reconcile task alike."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import KombuError

from config.settings import Settings
from uuid_migrate.ledger import runs
from uuid_migrate.recovery import reconcile, requeue
from uuid_migrate.redis_store import reconciler_key
from worker import dispatch


def queue_length(app: Celery, queue: str) -> int | None:
    """Messages waiting in the queue (not those a worker holds); None if the broker won't say."""
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except conn.channel_errors:
                return 0  # Redis keeps no empty list: "no such queue" means empty
    except (KombuError, OSError, redis.RedisError):
        return None


def reconcile_and_send(
    app: Celery, settings: Settings, conn: Any, redis_conn: Any, run_id: str
) -> dict[str, Any]:
    """One reconciler pass for the run; sends its decisions and keeps the schedule alive."""
    nxt = reconcile.reconcile(
        conn,
        redis_conn,
        run_id,
        stale_after_s=settings.heartbeat_timeout_s,
        page_size=settings.dispatch_page,
        max_attempts=settings.batch_max_attempts,
        queue_empty=queue_length(app, settings.queue) == 0,
    )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    if active(conn, run_id):
        schedule(app, settings, redis_conn, run_id)
    return {
        "run_id": run_id,
        "pages": len(nxt.pages),
        "resent": sum(len(p.batches) for p in nxt.retries),
        "validate": nxt.validate,
    }


def retry_and_send(
    app: Celery,
    settings: Settings,
    conn: Any,
    redis_conn: Any,
    run_id: str | None = None,
    table: str | None = None,
    batch_no: int | None = None,
) -> dict[str, Any]:
    """`retry`: re-send failed and stale batches as chords continuing their stages, then
    reconcile (a run stopped between pages moves on)."""
    run_id, nxt, chosen = requeue.retry(
        conn, redis_conn, run_id, settings.heartbeat_timeout_s, table=table, batch_no=batch_no
    )
    dispatch.send_next(app, settings.queue, run_id, nxt)
    reconcile_and_send(app, settings, conn, redis_conn, run_id)
    return {
        "run_id": run_id,
        "resent": [{"stage": b.stage, "batch": b.batch_no, "was": b.status} for b in chosen],
    }


def schedule(app: Celery, settings: Settings, redis_conn: Any, run_id: str) -> bool:
    """Keep one reconcile task scheduled every interval while the run is active.

    The key outlives one interval only, so a chain whose message was lost (a flushed broker)
    frees it for the next caller; a second chain finds it taken and ends.
    """
    interval = settings.reconcile_interval_s
    key = reconciler_key(run_id)
    with contextlib.suppress(redis.RedisError):
        if not redis_conn.set(key, "1", nx=True, ex=max(interval - 1, 1)):
            return False
        dispatch.schedule_reconcile(app, settings.queue, run_id, interval)
        return True
    return False


def active(conn: Any, run_id: str) -> bool:
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id)
    conn.commit()
    return runs.is_active(run)
