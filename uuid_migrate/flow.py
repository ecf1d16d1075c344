"""How a run moves forward, decided from the ledger alone (never from Celery's results).

Every transition is a compare-and-set, so a chord callback delivered twice, or a resume racing
a live callback, can only do each step once. Functions return what must be sent; the caller
commits first and sends after, so a message never points at state that was not committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uuid_migrate import ledger
from uuid_migrate.ledger import FAILED, PENDING, RUNNING, SUCCEEDED, VALIDATING, Batch


@dataclass(frozen=True)
class Page:
    """Batches of one stage to send as one chord; its callback completes page `end`."""

    run_id: str
    stage: str
    end: int
    batches: tuple[Batch, ...]


def claim_next_page(cur: Any, run_id: str, stage: str, done_upto: int, size: int) -> Page | None:
    """After the page ending at `done_upto` finished: the next page with work, or None at the end.

    Pages whose batches all succeeded already (a resumed run) are skipped over.
    """
    while True:
        cur.execute(
            "UPDATE uuid_migration.stages SET dispatched_upto = least(dispatched_upto + %s, "
            "batch_count), sent_at = now() WHERE run_id = %s AND stage = %s AND dispatched_upto = %s "
            "AND dispatched_upto < batch_count AND status = 'running' RETURNING dispatched_upto",
            (size, run_id, stage, done_upto),
        )
        row = cur.fetchone()
        if row is None:
            return None
        end = row[0]
        batches = ledger.batches_between(cur, run_id, stage, done_upto, end)
        if batches:
            return Page(run_id, stage, end, tuple(batches))
        done_upto = end


def resend_page(cur: Any, run_id: str, stage: str) -> Page | None:
    """For a resume: every unfinished batch already dispatched, as a chord continuing the stage."""
    cur.execute(
        "SELECT dispatched_upto FROM uuid_migration.stages WHERE run_id = %s AND stage = %s "
        "AND status = 'running'",
        (run_id, stage),
    )
    row = cur.fetchone()
    if row is None or row[0] == 0:
        return None
    batches = ledger.batches_between(cur, run_id, stage, 0, row[0])
    return Page(run_id, stage, row[0], tuple(batches))


def dispatched_open(cur: Any, run_id: str, stage: str) -> int:
    """Batches already sent (or halves of sent ones) that are still pending or running."""
    cur.execute(
        "SELECT count(*) FROM uuid_migration.batches b JOIN uuid_migration.stages s "
        "USING (run_id, stage) WHERE b.run_id = %s AND b.stage = %s "
        "AND b.status IN ('pending', 'running') "
        "AND (b.batch_no < s.dispatched_upto OR b.root_no IS NOT NULL)",
        (run_id, stage),
    )
    return int(cur.fetchone()[0])


def page_is_last(cur: Any, run_id: str, stage: str, end: int) -> bool:
    cur.execute(
        "SELECT batch_count FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
        (run_id, stage),
    )
    row = cur.fetchone()
    return row is not None and end >= row[0]


def stage_outcome(cur: Any, run_id: str, stage: str) -> str:
    """`running` while any batch is pending or running, then `failed` if any failed, else
    `succeeded`. A `split` batch counts as done: its halves are batches of their own."""
    counts = ledger.batch_counts(cur, run_id, stage)
    if counts.get(PENDING) or counts.get(RUNNING):
        return RUNNING
    if counts.get(FAILED):
        return FAILED
    if set(counts) <= set(ledger.SETTLED):
        return SUCCEEDED
    return RUNNING


def finish_stage(cur: Any, run_id: str, stage: str, status: str) -> bool:
    """Mark a running stage succeeded or failed; False if another caller already did."""
    cur.execute(
        "UPDATE uuid_migration.stages SET status = %s, finished_at = now() "
        "WHERE run_id = %s AND stage = %s AND status = 'running' RETURNING 1",
        (status, run_id, stage),
    )
    return cur.fetchone() is not None


def start_ready_stages(cur: Any, run_id: str, page_size: int) -> list[Page]:
    """Claim every pending stage whose parents all succeeded; their first pages to send."""
    cur.execute(
        "UPDATE uuid_migration.stages s SET status = 'running', started_at = now(), "
        "dispatched_upto = 0 WHERE s.run_id = %s AND s.status = 'pending' AND s.planned "
        "AND NOT EXISTS (SELECT 1 FROM uuid_migration.stages d WHERE d.run_id = s.run_id "
        "AND d.stage = ANY(s.depends_on) AND d.status <> 'succeeded') RETURNING s.stage",
        (run_id,),
    )
    started = [row[0] for row in cur.fetchall()]
    pages = []
    for stage in started:
        page = claim_next_page(cur, run_id, stage, 0, page_size)
        if page is not None:
            pages.append(page)
        else:  # nothing to do: an empty stage completes at once
            pages.append(Page(run_id, stage, 0, ()))
    return pages


def run_progress(cur: Any, run_id: str) -> dict[str, int]:
    cur.execute(
        "SELECT status, count(*) FROM uuid_migration.stages WHERE run_id = %s GROUP BY status",
        (run_id,),
    )
    return {status: count for status, count in cur.fetchall()}


def claim_validation(cur: Any, run_id: str) -> bool:
    """True once, for the caller that moves a fully succeeded run on to validation."""
    states = run_progress(cur, run_id)
    if set(states) != {SUCCEEDED}:
        return False
    return ledger.set_run_status(cur, run_id, VALIDATING, expect=(RUNNING,))


def settle_failed_run(cur: Any, run_id: str) -> bool:
    """A run with a failed stage and nothing left that can still move is failed."""
    rows = ledger.stages(cur, run_id)
    status = {row["stage"]: row["status"] for row in rows}
    if FAILED not in status.values() or RUNNING in status.values():
        return False
    held: set[str] = set()
    for row in rows:  # rows come in dependency order, so one pass sees parents first
        if row["status"] == PENDING and any(
            status[d] == FAILED or d in held for d in row["depends_on"]
        ):
            held.add(row["stage"])
    if any(s == PENDING and name not in held for name, s in status.items()):
        return False  # some pending stage can still run
    return ledger.set_run_status(
        cur, run_id, FAILED, expect=(RUNNING,), message="a stage failed; dependent stages held"
    )
