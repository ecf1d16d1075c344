"""Celery configuration derived from Settings; shared by the workers and the producer."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.backends.redis import RedisBackend

from config.settings import Settings

#: Result keys of the few tasks that keep one (validate, retry: one per run or per command)
#: live a day: long enough to read them in Flower after a run, short enough not to pile up.
#: Batches and callbacks keep none (worker/tasks.py: ignore_result); a chord's own join keys
#: are deleted by Celery once its callback is sent.
RESULT_EXPIRES_S = 24 * 3600


class LedgerDrivenRedisBackend(RedisBackend):
    """The Redis result backend, minus the pub/sub listening for results.

    Nothing here ever waits on a task's result: the ledger decides what happens next. Yet the
    stock backend subscribes to every header task a chord sends, which leaks subscriptions in
    long-lived workers, can hang a forked pool process on the inherited pub/sub connection,
    and makes the producer try to unsubscribe over a dead connection at exit.
    """

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        return result

    def remove_pending_result(self, result: Any) -> Any:
        return result


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        # A plain URL, so Celery masks its password wherever it shows the setting (Flower's
        # worker config); the backend class is chosen by scheme in make_app.
        "result_backend": settings.redis_url,
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # A batch is acknowledged only once done, and comes back if its worker dies.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "result_expires": RESULT_EXPIRES_S,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }


#: Result backend classes by URL scheme: ours in place of Celery's stock Redis backend.
BACKENDS = {scheme: "config.celery:LedgerDrivenRedisBackend" for scheme in ("redis", "rediss")}


def make_app(settings: Settings, main: str = "uuid_migrate") -> Celery:
    app = Celery(main)
    app.conf.update(celery_config(settings))
    app.loader.override_backends = BACKENDS
    return app
