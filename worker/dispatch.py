"""Sending work by task name: a page of batches as a chord, a closing stage's sweep and
unique index, and the final validation.

The producer and the workers' own callbacks both send through here, so a resumed run and a
running one produce the same messages. Batches go to the run's queue; callbacks and control
tasks to its control queue (`<queue>.control`), which every worker of the queue consumes too
(worker/celery_app.py): a page's callback is then taken as soon as a worker is free, not
after every batch already sent to the queue.
"""

from __future__ import annotations

from celery import Celery, chord

from uuid_migrate.plan.stages import table_of
from uuid_migrate.progression.work import Next, Page

BATCH_TASK = "uuid_migrate.batch"
PAGE_DONE_TASK = "uuid_migrate.page_done"
VALIDATE_TASK = "uuid_migrate.validate"
STAGE_CHECK_TASK = "uuid_migrate.stage_check"
STAGE_SWEEP_TASK = "uuid_migrate.stage_sweep"
STAGE_INDEX_TASK = "uuid_migrate.stage_index"
RETRY_TASK = "uuid_migrate.retry"
RECONCILE_TASK = "uuid_migrate.reconcile"
#: Callbacks and control tasks: each goes to the control queue, never behind batches.
CONTROL_TASKS = (
    PAGE_DONE_TASK, STAGE_CHECK_TASK, STAGE_SWEEP_TASK, STAGE_INDEX_TASK, VALIDATE_TASK,
    RETRY_TASK, RECONCILE_TASK,
)  # fmt: skip
CONTROL_SUFFIX = ".control"
#: Stamped on every batch message, so that `revoke_by_stamped_headers` can revoke a run's.
RUN_STAMP = "uuid_migrate_run"


def control_queue(queue: str) -> str:
    """The queue of `queue`'s callbacks and control tasks."""
    return f"{queue}{CONTROL_SUFFIX}"


def send_page(app: Celery, queue: str, page: Page, retry: bool = False) -> None:
    """The page's batches as a chord header; the callback completes the page from the ledger.

    Re-sent batches (`retry`) get a callback that continues their stage from the ledger.
    """
    control = control_queue(queue)
    callback = (
        app.signature(
            STAGE_CHECK_TASK, args=(page.run_id, page.stage), queue=control, immutable=True
        )
        if retry
        else app.signature(
            PAGE_DONE_TASK, args=(page.run_id, page.stage, page.end), queue=control, immutable=True
        )
    )
    if not page.batches:
        callback.apply_async()
        return
    # No result key per batch in Redis (one per batch, kept for `result_expires`, would grow
    # Redis with the table): with the Redis backend a header task's result still reaches the
    # chord's own join list (`on_chord_part_return` runs whether or not the result is stored),
    # which Celery deletes once it has sent the callback. A batch sent alone keeps its result.
    header = [
        app.signature(
            BATCH_TASK,
            args=(page.run_id, page.stage, b.batch_no),
            kwargs={"table": table_of(page.stage), "key_range": b.key_range.label()},
            queue=queue,
            ignore_result=True,
        ).stamp(**{RUN_STAMP: page.run_id})
        for b in page.batches
    ]
    chord(header)(callback)


def send_validation(app: Celery, queue: str, run_id: str) -> None:
    app.send_task(VALIDATE_TASK, args=(run_id,), queue=control_queue(queue))


def schedule_reconcile(app: Celery, queue: str, run_id: str, countdown: float) -> None:
    app.send_task(RECONCILE_TASK, args=(run_id,), queue=control_queue(queue), countdown=countdown)


def send_closing(app: Celery, queue: str, run_id: str, task: str, stage: str) -> None:
    app.send_task(task, args=(run_id, stage), queue=control_queue(queue))


def send_next(app: Celery, queue: str, run_id: str, nxt: Next) -> None:
    """Pages first, then a closing stage's sweep (its dependents wait for it), then its index."""
    for page in nxt.pages:
        send_page(app, queue, page)
    for page in nxt.retries:
        send_page(app, queue, page, retry=True)
    for stage in nxt.sweeps:
        send_closing(app, queue, run_id, STAGE_SWEEP_TASK, stage)
    for stage in nxt.indexes:
        send_closing(app, queue, run_id, STAGE_INDEX_TASK, stage)
    if nxt.validate:
        send_validation(app, queue, run_id)


def revoke_run(app: Celery, run_ids: list[str]) -> None:
    """Tell every live worker to discard the runs' batch messages, queued or reserved."""
    app.control.revoke_by_stamped_headers({RUN_STAMP: run_ids})
