"""Choosing batches to send again: failed ones, stale ones (their worker stopped beating),
and, when nothing can still be carrying them, pending ones whose messages were lost.

The chosen batches go back to `pending` (logged as transitions), their stages and the run go
back to `running`, and they are sent as chords whose callback continues the stage, so a
completed table still starts its dependents and, at the end, validation.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.errors import RunStateError
from uuid_migrate.execution import heartbeat
from uuid_migrate.ledger import batches, figures, runs, stages
from uuid_migrate.ledger.batches import Batch
from uuid_migrate.ledger.states import BatchStatus, RunStatus, StageStatus
from uuid_migrate.progression.advance import publish_checkpoints
from uuid_migrate.progression.live import Progress
from uuid_migrate.progression.work import Next, Page


def retriable(
    cur: Any,
    redis_conn: Any,
    run_id: str,
    stale_after_s: float,
    *,
    table: str | None = None,
    batch_no: int | None = None,
    lost_pending: bool = False,
) -> list[Batch]:
    """Failed batches, stale running ones, and (with `lost_pending`) sent pending ones."""
    rows = batches.sent_and_unfinished(cur, run_id, stale_after_s, table, batch_no)
    old_running = [(b.stage, b.batch_no) for b, old in rows if old]
    beating = heartbeat.alive(redis_conn, run_id, old_running) if old_running else set()
    chosen = []
    for b, old in rows:
        stale = old and (b.stage, b.batch_no) not in beating
        if b.status == BatchStatus.FAILED or stale or (b.status == BatchStatus.PENDING and lost_pending):
            chosen.append(b)
    return chosen


def reopen(cur: Any, run_id: str, chosen: list[Batch], stale_after_s: float) -> Next:
    """Put the batches back to pending, reopen their stages and the run; the chords to send."""
    for b in chosen:
        if b.status == BatchStatus.PENDING:
            continue
        reason = (
            "requeued after failure"
            if b.status == BatchStatus.FAILED
            else f"stale: no heartbeat for {stale_after_s:g} s"
        )
        batches.requeue(cur, b, reason)
    names = list(dict.fromkeys(b.stage for b in chosen))
    stages.reopen(cur, run_id, names)
    runs.reopen(cur, run_id)
    pages = [Page(run_id, s, 0, tuple(b for b in chosen if b.stage == s)) for s in names]
    return Next(retries=pages)


def _reopen_finished_failed(cur: Any, run_id: str, table: str | None) -> list[Page]:
    """Failed stages whose batches all finished (their unique index could not be built):
    reopened with an empty page, whose callback closes the stage and builds it again.

    Such a stage had handed its table off, so the stages depending on it ran meanwhile, with
    the values that were then fixed by hand: those that finished go back to pending, to start
    again once it is handed off anew; their batches all succeeded, so each only closes again,
    with a sweep that sees the fixed values (one nothing waits for: the run's validation
    sweeps it, where its scan finds stale translations). (One still running and handed off,
    its own index building, is not swept again at close: validation finds what it missed.)"""
    rows = stages.stages(cur, run_id)
    names = [
        row["stage"]
        for row in rows
        if row["status"] == StageStatus.FAILED
        and (table is None or row["table"] == table)
        and not figures.batch_counts(cur, run_id, row["stage"]).get(BatchStatus.FAILED)
    ]
    handed = {row["stage"] for row in rows if row["stage"] in names and row["handed_off_at"]}
    dependents = [
        row["stage"]
        for row in rows
        if row["status"] == StageStatus.SUCCEEDED and handed & set(row["depends_on"])
    ]
    stages.reopen(cur, run_id, names)
    stages.reopen(cur, run_id, dependents, StageStatus.SUCCEEDED, StageStatus.PENDING)
    return [Page(run_id, name, 0, ()) for name in names]


def retry(
    conn: Any,
    redis_conn: Any,
    run_id: str | None,
    stale_after_s: float,
    *,
    table: str | None = None,
    batch_no: int | None = None,
) -> tuple[str, Next, list[Batch]]:
    """`uuid-migrate retry`: re-send the failed and stale batches of the run (the latest one)."""
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id) if run_id else runs.latest_run(cur)
        if run is None:
            raise RunStateError(
                f"no run {run_id} in this database" if run_id
                else "no migration run recorded in this database"
            )
        if run["status"] not in (RunStatus.RUNNING, RunStatus.FAILED):
            raise RunStateError(f"run {run['run_id']} is {run['status']}: nothing to retry")
        runs.lock_run(cur, run["run_id"])
        stopped = run["status"] == RunStatus.FAILED  # nothing is carrying its pending batches
        chosen = retriable(
            cur, redis_conn, run["run_id"], stale_after_s,
            table=table, batch_no=batch_no, lost_pending=stopped,
        )  # fmt: skip
        # Reopens a failed run even with nothing chosen (e.g. stopped by the breaker between
        # pages): the reconciler goes on from the ledger, or fails it again if nothing can move.
        nxt = reopen(cur, run["run_id"], chosen, stale_after_s)
        nxt.retries.extend(_reopen_finished_failed(cur, run["run_id"], table))
    conn.commit()
    reopened = {p.stage for p in nxt.retries}
    publish_checkpoints(conn, Progress(redis_conn, run["run_id"]), run["run_id"], reopened)
    return run["run_id"], nxt, chosen
