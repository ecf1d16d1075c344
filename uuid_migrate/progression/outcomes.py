"""The decisions `advance` makes, each read from the ledger: the next page of a stage, a
stage's outcome, which stages may start, whether the run validates or has failed."""

from __future__ import annotations

from typing import Any

from uuid_migrate.ledger import batches, error_records, figures, runs, stages
from uuid_migrate.ledger.states import SETTLED_BATCH_STATES, BatchStatus, StageStatus
from uuid_migrate.progression.work import Page


def claim_next_page(cur: Any, run_id: str, stage: str, done_upto: int, size: int) -> Page | None:
    """After the page ending at `done_upto` finished: the next page with work, or None at the end.

    Pages whose batches all succeeded already (a resumed run) are skipped over.
    """
    while (end := stages.claim_pages(cur, run_id, stage, done_upto, size)) is not None:
        found = batches.between(cur, run_id, stage, done_upto, end)
        if found:
            return Page(run_id, stage, end, tuple(found))
        done_upto = end
    return None


def resume_page(cur: Any, run_id: str, row: dict[str, Any], size: int) -> Page:
    """For a producer resuming a running stage: every unfinished batch already sent, as a
    chord continuing the stage; the first page if none was sent; an empty page to close it."""
    sent = row["dispatched_upto"]
    if sent:
        return Page(run_id, row["stage"], sent, tuple(batches.between(cur, run_id, row["stage"], 0, sent)))
    page = claim_next_page(cur, run_id, row["stage"], 0, size)
    return page or Page(run_id, row["stage"], sent, ())


def stage_outcome(cur: Any, run_id: str, stage: str) -> StageStatus:
    """`running` while any batch is pending or running, then `failed` if any failed, else
    `succeeded`. A `split` batch counts as done: its halves are batches of their own."""
    counts = figures.batch_counts(cur, run_id, stage)
    if counts.get(BatchStatus.PENDING) or counts.get(BatchStatus.RUNNING):
        return StageStatus.RUNNING
    if counts.get(BatchStatus.FAILED):
        return StageStatus.FAILED
    if set(counts) <= set(SETTLED_BATCH_STATES):
        return StageStatus.SUCCEEDED
    return StageStatus.RUNNING


def start_ready_stages(cur: Any, run_id: str, page_size: int) -> list[Page]:
    """Claim every pending stage whose parents all succeeded (or handed off); their first
    pages to send (an empty page for a stage with nothing left to do, which closes at once:
    no batch, or all of them succeeded before, as after `retry` sent a stage back)."""
    pages = []
    for stage in stages.start_ready(cur, run_id):
        page = claim_next_page(cur, run_id, stage, 0, page_size)
        pages.append(page or Page(run_id, stage, stages.stage(cur, run_id, stage)["dispatched_upto"], ()))
    return pages


def claim_validation(cur: Any, run_id: str) -> bool:
    """True once, for the caller that moves a fully succeeded run on to validation."""
    if set(stages.status_counts(cur, run_id)) != {StageStatus.SUCCEEDED}:
        return False
    return runs.start_validating(cur, run_id)


def settle_failed_run(cur: Any, run_id: str) -> bool:
    """A run with a failed stage and nothing left that can still move is failed."""
    rows = stages.stages(cur, run_id)
    status = {row["stage"]: row["status"] for row in rows}
    if StageStatus.FAILED not in status.values() or StageStatus.RUNNING in status.values():
        return False
    held: set[str] = set()
    for row in rows:  # rows come in dependency order, so one pass sees parents first
        if row["status"] == StageStatus.PENDING and any(
            status[d] == StageStatus.FAILED or d in held for d in row["depends_on"]
        ):
            held.add(row["stage"])
    if any(s == StageStatus.PENDING and name not in held for name, s in status.items()):
        return False  # some pending stage can still run
    failures = error_records.table_failures(cur, run_id)
    reason = f" ({failures[-1]})" if failures else ""
    return runs.fail(cur, run_id, f"a stage failed{reason}; dependent stages held")
