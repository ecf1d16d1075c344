"""The Celery app of the workers, configured from the environment once, at start."""

from __future__ import annotations

from typing import Any

from celery import signals

from config.celery import make_app
from config.logs import configure_logging, mask_all_handlers
from config.settings import load_settings, producer_pid
from worker import dispatch, watchdog

settings = load_settings()
app = make_app(settings)
app.conf.include = ["worker.tasks"]
#: The callbacks of pages, sweeps, index builds and reconciler passes keep no result key in Redis:
#: nothing reads one (the ledger is the truth; Flower shows results from events), and kept for
#: `result_expires` they would pile up with the run's length. A page's batches keep none
#: either, by their messages (worker/dispatch.py); validate and retry, once per run, do.
_RESULTLESS = (
    dispatch.PAGE_DONE_TASK, dispatch.STAGE_CHECK_TASK, dispatch.STAGE_SWEEP_TASK,
    dispatch.STAGE_INDEX_TASK, dispatch.RECONCILE_TASK,
)  # fmt: skip
app.conf.task_annotations = {name: {"ignore_result": True} for name in _RESULTLESS}
#: A control task sent by name without a queue (Flower's "apply", `send_task`) goes to the
#: control queue too, where it never waits behind batches.
app.conf.task_routes = {
    name: {"queue": dispatch.control_queue(settings.queue)} for name in dispatch.CONTROL_TASKS
}


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Our handler (text or JSON, secrets masked) instead of Celery's own logging set-up."""
    configure_logging(settings, loglevel or "INFO")


@signals.worker_init.connect
def _outlive_no_producer(**_: Any) -> None:
    # In the main process, before the pool exists: a local worker (`--workers N`) stops
    # when the producer that started it is gone, even killed with SIGKILL.
    pid = producer_pid()
    if pid is not None:
        watchdog.guard(pid, settings.worker_stop_grace_s)


@signals.worker_process_init.connect
def _mask_pool_logging(**_: Any) -> None:
    # Handlers a library adds later (in the pool child) get the masking filter too.
    mask_all_handlers()


@signals.celeryd_init.connect
def _early_logging(instance: Any = None, options: Any = None, **_: Any) -> None:
    # Before Celery's start-up checks, whose warnings would otherwise bypass our format.
    configure_logging(settings, (options or {}).get("loglevel") or "INFO")
    # The startup banner is free text on stdout; a JSON log stays one object per line.
    if settings.log_format == "json" and instance is not None:
        instance.quiet = True


@signals.celeryd_after_setup.connect
def _consume_control_queues(instance: Any = None, **_: Any) -> None:
    # After `--queues` is applied: each queue's control queue is consumed too, so callbacks
    # and control tasks never wait behind batches, and the command line stays
    # `celery -A worker worker --queues <queue>`. Added before the consumer starts, so what
    # already waits there is taken as well; declared by Celery's missing-queue rule, as a
    # producer sending to it declares it, so both sides agree on RabbitMQ.
    queues = instance.app.amqp.queues
    for name in list(queues.consume_from):
        queues.select_add(queues[dispatch.control_queue(name)])
