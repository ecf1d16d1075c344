"""Running a batch to an end: retries with backoff, splits on timeouts, a heartbeat throughout.

A task never raises for a batch's error (that would turn its chord's callback into a
ChordError and nothing downstream would run): a batch that still fails after its attempts is
marked `failed` and reported as such, and the stage's callback decides from the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from uuid_migrate import retrying
from uuid_migrate.errors import ConnectionFailed, TriggersWouldFire
from uuid_migrate.execution import attempt as batch
from uuid_migrate.execution import split
from uuid_migrate.execution.attempt import BatchOutcome
from uuid_migrate.execution.batch_cutting import BatchCutter
from uuid_migrate.execution.heartbeat import Heartbeat
from uuid_migrate.execution.throttle import HEALTH_POLL_S, Throttle
from uuid_migrate.ledger import batches, runs, tables
from uuid_migrate.ledger.batches import Batch
from uuid_migrate.ledger.states import ACTIVE_RUN_STATES, BatchStatus, RunStatus
from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage
from uuid_migrate.retrying import RetryPolicy
from uuid_migrate.schema.steps import uuid_index

_DB_ERRORS = (psycopg2.Error, ConnectionFailed)
#: What one try of a batch may raise: the database's errors, and a refusal of the tool's own.
_TRY_ERRORS = (*_DB_ERRORS, TriggersWouldFire)
#: How often a held worker looks at the pause flag again.
PAUSE_POLL_S = 1.0
#: What `_ledger_write` returns when the ledger could not be reached at all.
_FAILED = object()


@dataclass
class Context:
    """What a worker lends a batch: a (re)connecting database, its name, policy, heartbeat."""

    connect: Callable[[], Any]
    reset: Callable[[], None]
    worker: str
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(None, 1))
    sleep: Callable[[float], None] = time.sleep
    #: The run's row budget and the database's health, between batches (None: no brakes).
    throttle: Throttle | None = None
    #: Cuts a batch of the default size expected to run past its target (None: never).
    cutter: BatchCutter | None = None


def run_batch(ctx: Context, run_id: str, stage_name: str, batch_no: int) -> list[BatchOutcome]:
    """The batch and, if it is or becomes split, its halves; one outcome per ledger batch."""
    try:
        conn = ctx.connect()
        with conn.cursor() as cur:  # one transaction: the ledger, the plan, the run's state
            known = tables.ledger_exists(cur) and batch.plan_of_run(cur, run_id)
            state = runs.run_state(cur, run_id) if known else None
        conn.commit()
        status = wait_while_paused(conn, run_id, ctx.sleep, state) if known else None
    except _DB_ERRORS as exc:
        ctx.reset()
        return [BatchOutcome(run_id, stage_name, "", batch_no, "unknown", error=retrying.one_line(exc))]
    if not known:
        return [BatchOutcome(run_id, stage_name, "", batch_no, "unknown", error="run not in ledger")]
    plan, stage_map = known
    stage = stage_map[stage_name]
    if status != RunStatus.RUNNING:
        return [BatchOutcome(run_id, stage_name, stage.table, batch_no, "cancelled")]
    outcomes, todo = [], [batch_no]
    prepaid: set[int] = set()  # halves whose rows their split parent booked already
    while todo:
        if not _rest_while_unhealthy(ctx, run_id):
            outcomes.append(BatchOutcome(run_id, stage_name, stage.table, todo[0], "cancelled"))
            break
        number = todo.pop(0)
        booked = 0 if number in prepaid else _book_budget(ctx, run_id, stage_name, number)
        outcome, halves = _one_batch(ctx, plan, stage, run_id, number)
        outcomes.append(outcome)
        if ctx.cutter is not None and outcome.status == BatchStatus.SUCCEEDED:
            # over every row of its range: the statement reads them all, writes maybe few
            ctx.cutter.learn(run_id, stage_name, outcome.planned_rows or outcome.rows, outcome.work_ms)
        todo += halves
        if halves and (booked or number in prepaid):
            prepaid.update(halves)  # the parent's booking stands for the rows they write
        else:
            _settle_budget(ctx, run_id, booked, outcome)
    return outcomes


def _rest_while_unhealthy(ctx: Context, run_id: str) -> bool:
    """Wait, before claiming a batch, while the database is past a health threshold; False
    when the run stopped meanwhile. An unreachable database is left to the batch's own path."""
    while ctx.throttle is not None:
        try:
            conn = ctx.connect()
            with conn.cursor() as cur:
                reason = ctx.throttle.reason(cur)
                status = runs.run_state(cur, run_id)[0] if reason else RunStatus.RUNNING
            conn.commit()
        except _DB_ERRORS:
            ctx.reset()
            return True
        if reason is None:
            return True
        if status != RunStatus.RUNNING:
            return False
        ctx.throttle.show(run_id, reason)
        ctx.sleep(HEALTH_POLL_S)
    return True


def _book_budget(ctx: Context, run_id: str, stage: str, batch_no: int) -> int:
    """Book the batch's planned rows in the run's budget and wait as long as it asks, before
    the batch is claimed; returns the rows booked."""
    if ctx.throttle is None:
        return 0
    try:
        conn = ctx.connect()
        with conn.cursor() as cur:
            rows = 0
            if ctx.throttle.budget(cur, run_id):
                rows = batches.planned_rows(cur, run_id, stage, batch_no)
            wait = ctx.throttle.book(cur, run_id, rows)
        conn.commit()
    except _DB_ERRORS:
        ctx.reset()
        return 0
    if wait:
        ctx.sleep(wait)
    return rows


def _settle_budget(ctx: Context, run_id: str, booked: int, outcome: BatchOutcome) -> None:
    """The budget corrected by the rows the batch wrote (none for one done already)."""
    if ctx.throttle is None or not booked:
        return
    try:
        conn = ctx.connect()
        with conn.cursor() as cur:
            ctx.throttle.settle(cur, run_id, booked, outcome.rows)
        conn.commit()
    except _DB_ERRORS:
        ctx.reset()


def _one_batch(
    ctx: Context, plan: Plan, stage: Stage, run_id: str, batch_no: int
) -> tuple[BatchOutcome, list[int]]:
    started = time.monotonic()
    base = BatchOutcome(run_id, stage.name, stage.table, batch_no, "running")
    tries = 0
    while True:
        tries += 1
        try:
            conn = ctx.connect()
            claimed = batch.claim(conn, run_id, stage.name, batch_no, ctx.worker)
        except _DB_ERRORS as exc:
            ctx.reset()
            # Whatever the error, the claim is tried again: it only stamps the ledger row.
            if not retrying.should_retry(retrying.TRANSIENT, tries, ctx.policy.max_attempts):
                return _end(base, started, "unknown", error=retrying.one_line(exc)), []
            ctx.sleep(ctx.policy.delay_s(tries))
            continue
        if claimed is None:
            return _end(base, started, "skipped"), []
        if claimed.previous == BatchStatus.SPLIT:
            return _end(base, started, BatchStatus.SPLIT), split.children(conn, claimed.batch)
        job = claimed.batch
        base = BatchOutcome(**{**base.as_dict(), "key_range": job.key_range.label()})
        ended = job.attempts - 1  # this delivery found it running: every earlier one died
        if claimed.previous == BatchStatus.RUNNING and retrying.attempts_exhausted(
            ended, ctx.policy.max_attempts
        ):
            message = f"gave up: {ended} attempts ended without finishing"
            _ledger_write(ctx, batch.mark_failed, job, stage.table, message)
            return _end(base, started, BatchStatus.FAILED, attempt=job.attempts, error=message), []
        cut = _cut_before_running(ctx, plan, stage, claimed)
        if cut is not None:
            return _end(base, started, BatchStatus.SPLIT, attempt=job.attempts), cut
        conn = ctx.connect()  # the one the cut used, or a new one if the cut lost it
        with ctx.heartbeat.beating(run_id, stage.name, batch_no, ctx.worker):
            done, error = _try_once(ctx, conn, plan, stage, job)
            if done is not None:
                return _end(base, started, attempt=job.attempts, **done), []
            verdict = _after_error(ctx, plan, stage, job, error, tries)
        if verdict is None:
            ctx.sleep(ctx.policy.delay_s(tries))
            continue
        status, halves, message = verdict
        return _end(base, started, status, attempt=job.attempts, error=message), halves


def _cut_before_running(ctx: Context, plan: Plan, stage: Stage, claimed: Any) -> list[int] | None:
    """The halves of a batch expected to run past the target, or None to run it whole (also
    when it cannot be cut, or the ledger could not be reached to cut it)."""
    reason = ctx.cutter and ctx.cutter.should_cut(
        plan, stage, claimed.batch.run_id, claimed.planned_rows
    )
    if not reason:
        return None
    halves = _ledger_write(
        ctx, split.split_batch, plan, stage, claimed.batch, ctx.policy.min_split_rows, reason,
        claimed.planned_rows,
    )  # fmt: skip
    return halves if halves and halves is not _FAILED else None


def _try_once(
    ctx: Context, conn: Any, plan: Plan, stage: Stage, job: Batch
) -> tuple[dict[str, Any] | None, BaseException | None]:
    began = time.monotonic()
    try:
        result = batch.attempt(
            conn, plan, stage, job, ctx.policy.statement_timeout_ms, ctx.policy.lock_timeout_ms
        )
    except _TRY_ERRORS as exc:
        batch.rollback_quietly(conn)
        return None, exc
    if result is None:
        return {"status": "skipped"}, None
    rows, mappings, orphans, planned = result
    return {
        "status": BatchStatus.SUCCEEDED,
        "rows": rows,
        "mappings": mappings,
        "orphans": orphans,
        "planned_rows": planned,
        "work_ms": int((time.monotonic() - began) * 1000),
    }, None


def _after_error(
    ctx: Context, plan: Plan, stage: Stage, job: Batch, error: Any, tries: int
) -> tuple[str, list[int], str] | None:
    """None to try again; else (status, halves to run, message) to end this batch with."""
    kind = retrying.classify(error, uuid_index(plan, stage.table).name)
    message = retrying.one_line(error)
    if kind == retrying.TRANSIENT:
        ctx.reset()  # a lost connection is replaced; a live one is merely reopened
    if kind == retrying.SPLIT:
        halves = _ledger_write(
            ctx, split.split_batch, plan, stage, job, ctx.policy.min_split_rows, message
        )
        if halves and halves is not _FAILED:
            return BatchStatus.SPLIT, halves, message
    retriable = retrying.should_retry(kind, tries, ctx.policy.max_attempts)
    if retriable and _ledger_write(ctx, batch.mark_retrying, job, message) is not _FAILED:
        return None
    final = f"{message} (attempt {tries} of {ctx.policy.max_attempts}, {kind})"
    if _ledger_write(ctx, batch.mark_failed, job, stage.table, final) is _FAILED:
        return "unknown", [], final  # left `running`: the heartbeat stops, the reconciler acts
    return BatchStatus.FAILED, [], final


def _ledger_write(ctx: Context, write: Callable[..., Any], *args: Any) -> Any:
    """A small ledger write, retried over a reconnect; _FAILED if the ledger stays away."""
    for tries in range(1, ctx.policy.max_attempts + 1):
        try:
            return write(ctx.connect(), *args)
        except _DB_ERRORS:
            ctx.reset()
            ctx.sleep(ctx.policy.delay_s(tries))
    return _FAILED


def _end(base: BatchOutcome, started: float, status: str, **changes: Any) -> BatchOutcome:
    elapsed = int((time.monotonic() - started) * 1000)
    return BatchOutcome(**{**base.as_dict(), **changes, "status": status, "duration_ms": elapsed})


def wait_while_paused(
    conn: Any,
    run_id: str,
    sleep: Callable[[float], None] = time.sleep,
    state: tuple[str | None, bool] | None = None,
) -> str | None:
    """Block while the run is paused, holding the unacknowledged message (with prefetch 1 no
    worker reserves more); then return the run's status (None if unknown). `state`: the
    run's (status, paused) as just read, so the first look costs no round trip."""
    while True:
        if state is None:
            with conn.cursor() as cur:
                state = runs.run_state(cur, run_id)
            conn.commit()
        (status, paused), state = state, None
        if not paused or status not in ACTIVE_RUN_STATES:
            return status
        sleep(PAUSE_POLL_S)
