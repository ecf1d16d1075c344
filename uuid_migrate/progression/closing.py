"""The close of a table's backfill stage: its final sweep and its unique index, side by side.

Once a backfill's batches are all done, two pieces of work are owed, and two workers do them
at once (the page's callback sends the index as a task, then sweeps by itself; a reconciler
pass sends both):
- the sweep (`sweep_and_hand_off`): the rows that raced with the triggers fixed, then the
  hand-off: the stages depending on the table start, since their translations need its
  UUIDs (all there now), not its index; a stage nothing depends on is handed off at once and
  swept by the run's validation (`sweep.swept_at_close`);
- the unique index on `uuid_id` (`build_stage_index`), built concurrently meanwhile; it only
  proves the UUIDs unique.
Each marks its own part done in the ledger (the hand-off; the index's step record and the
index valid) and then looks at the other's: whichever ends last closes the stage, and since
each writes before it looks, one of them always does (a close is a compare-and-set, so both
may try). An index that cannot be built fails the stage at once, and no stage starts after a
failed one (one that had been handed off keeps what it started). Either task finding the other's kind already at
work (a reconciler pass, a redelivery) returns at once: a sweep or a build of hours is never
waited for.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2

from uuid_migrate import retrying
from uuid_migrate.execution import sweep
from uuid_migrate.execution.attempt import plan_of_run
from uuid_migrate.ledger import error_records, runs, stages
from uuid_migrate.ledger.states import RunStatus, StageStatus
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage
from uuid_migrate.progression import outcomes
from uuid_migrate.progression.advance import advance_run, close_stage, publish_checkpoints
from uuid_migrate.progression.live import Progress
from uuid_migrate.progression.work import Next
from uuid_migrate.schema.apply import apply_step, discard_failed_build
from uuid_migrate.schema.steps import uuid_index
from uuid_migrate.verification import post_checks, scan_settings

ConnFactory = Callable[[], Any]
#: What `build_unique_index` returns when another session holds the index's lock.
BUSY = "busy"


def sweep_and_hand_off(
    conn: Any, progress: Progress | None, run_id: str, stage: str, page_size: int,
    lock_timeout_ms: int = sweep.SWEEP_LOCK_TIMEOUT_MS,
) -> Next:  # fmt: skip
    """The stage's final sweep, then its hand-off (the pages of the stages it unblocked), and
    its close if the index is built already."""
    owed = _owed(conn, run_id, stage)
    if owed is None or owed[2]["handed_off_at"] is not None:
        return Next()
    plan, stage_map, row = owed
    planned = stage_map[stage]
    with _sweep_lock(conn, run_id, stage) as held:
        again = _owed(conn, run_id, stage) if held else None  # a sweep that ended meanwhile
        if again is None or again[2]["handed_off_at"] is not None:
            return Next()
        at_close = sweep.swept_at_close(planned, stage_map)
        swept = sweep.sweep_stage(conn, plan, planned, run_id, lock_timeout_ms) if at_close else 0
        if swept is None:
            return Next()  # rolled back meanwhile
        nxt = hand_off(conn, progress, run_id, stage, page_size)
    try:  # the pages above are owed whatever happens now: an index task closes it otherwise
        if not at_close and _last_handed_off(conn, run_id):
            # The validation comes next: id_mappings' statistics, refreshed while the index builds.
            scan_settings.refresh_mapping_statistics(conn, plan)
        if _index_valid(conn, plan, row["table"]):
            nxt.merge(close_stage(conn, progress, run_id, stage, StageStatus.SUCCEEDED, page_size))
    except psycopg2.Error:
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()
    return nxt


def hand_off(conn: Any, progress: Progress | None, run_id: str, stage: str, page_size: int) -> Next:
    """Mark the stage handed off and start the stages waiting for it: their pages."""
    with conn.cursor() as cur:
        runs.lock_run(cur, run_id)
        stages.hand_off(cur, run_id, stage)
        nxt = advance_run(cur, run_id, page_size)
    conn.commit()
    publish_checkpoints(conn, progress, run_id, {p.stage for p in nxt.pages})
    return nxt


def build_stage_index(
    conn: Any, index_conn: ConnFactory, progress: Progress | None, run_id: str, stage: str,
    page_size: int,
) -> Next:  # fmt: skip
    """The stage's unique index; then its close once it is handed off too (succeeded), or at
    once when the values are not unique (failed, the rows that share a uuid_id named)."""
    owed = _owed(conn, run_id, stage)
    if owed is None:
        return Next()
    plan, _, row = owed
    # built already (a reconciler pass sent this again): nothing to record twice
    valid = _index_valid(conn, plan, row["table"])
    built = None if valid else build_unique_index(index_conn, run_id, uuid_index(plan, row["table"]))
    if built == BUSY or _fenced(conn, run_id):
        return Next()
    if built is not None:
        failed = _index_failed(conn, run_id, plan, row["table"], built)
        return close_stage(conn, progress, run_id, stage, failed, page_size)
    with conn.cursor() as cur:
        handed = stages.stage(cur, run_id, stage)["handed_off_at"] is not None
    conn.commit()
    if not handed:
        return Next()  # the sweep closes the stage when it ends
    return close_stage(conn, progress, run_id, stage, StageStatus.SUCCEEDED, page_size)


def build_unique_index(index_conn: ConnFactory, run_id: str, index: Any) -> str | None:
    """The table's unique index on `uuid_id`, through the one path of every schema step: None
    once built (or a rollback fenced the run), `BUSY` when another session is at it, else the
    reason the values are not unique (the build's leftovers dropped: that never clears by
    trying again, so it is not retried)."""
    conn = index_conn()
    try:
        if apply_step(conn, run_id, index, lock_timeout_ms=0, wait_for_lock=False) is None:
            return BUSY
        return None
    except psycopg2.IntegrityError as exc:
        discard_failed_build(conn, index)
        return retrying.one_line(exc)
    finally:
        conn.close()


def _owed(
    conn: Any, run_id: str, stage: str
) -> tuple[Plan, dict[str, Stage], dict[str, Any]] | None:
    """(the run's plan, its stages by name, the stage's ledger row) while the run runs and
    the stage is running with all its batches done; None otherwise."""
    with conn.cursor() as cur:
        run = runs.get_run(cur, run_id)
        row = stages.stage(cur, run_id, stage)
        done = row is not None and outcomes.stage_outcome(cur, run_id, stage) == StageStatus.SUCCEEDED
        known = plan_of_run(cur, run_id)
    conn.commit()
    if run is None or run["status"] != RunStatus.RUNNING or not known or not done:
        return None
    plan, stage_map = known
    return (plan, stage_map, row) if row["status"] == StageStatus.RUNNING else None


@contextlib.contextmanager
def _sweep_lock(conn: Any, run_id: str, stage: str) -> Iterator[bool]:
    """The stage's sweep lock (a session advisory lock, so held across the sweep's own
    transactions), if no other session has it: whether it is held."""
    key = zlib.crc32(f"uuid_migrate:sweep:{run_id}:{stage}".encode())
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        held = bool(cur.fetchone()[0])
    conn.commit()
    try:
        yield held
    finally:
        if held and not conn.closed:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.commit()


def _last_handed_off(conn: Any, run_id: str) -> bool:
    """Whether no stage of the run has batches or a sweep still to come."""
    with conn.cursor() as cur:
        last = not stages.any_before_hand_off(cur, run_id)
    conn.commit()
    return last


def _index_valid(conn: Any, plan: Plan, table: str) -> bool:
    with conn.cursor() as cur:
        valid = uuid_index(plan, table).validity(cur) is True
    conn.commit()
    return valid


def _fenced(conn: Any, run_id: str) -> bool:
    with conn.cursor() as cur:
        fenced = runs.run_is_fenced(cur, run_id)
    conn.commit()
    return fenced


def _index_failed(conn: Any, run_id: str, plan: Any, table: str, failure: str) -> StageStatus:
    """The stage fails with an error record naming the rows that share a uuid_id."""
    with conn.cursor() as cur:
        shared = post_checks.uuid_unique(cur, plan, table)
        message = (
            f"cannot build the unique index on {table}.uuid_id: {shared.actual} rows share "
            f"a uuid_id (ids {', '.join(shared.sample)}): {failure}"
        )
        error_records.record(cur, run_id, table, None, message, {"ids": shared.sample})
    conn.commit()
    return StageStatus.FAILED
