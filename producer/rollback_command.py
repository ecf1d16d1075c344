"""`uuid-migrate rollback`: undo the migration, then prove the tables are as they were."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from kombu.exceptions import KombuError

from config.celery import make_app
from config.settings import Settings
from producer.status_command import pick_run
from uuid_migrate import db
from uuid_migrate.errors import ConnectionFailed, RunStateError
from uuid_migrate.ledger import reports, runs
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import plan_file
from uuid_migrate.plan.model import Plan
from uuid_migrate.progression.live import Progress
from uuid_migrate.redis_store import client
from uuid_migrate.schema import rollback as undoing
from uuid_migrate.timestamps import iso
from uuid_migrate.verification.validation import rolled_back_report
from worker import dispatch

NOTHING, ABORTED, ROLLED_BACK = "nothing", "aborted", "rolled_back"


@dataclass(frozen=True)
class RollbackOutcome:
    """`nothing` to undo, `aborted` at the prompt, or `rolled_back` with its verification."""

    status: str
    report: dict[str, Any] | None = None
    undone: list[str] = field(default_factory=list)


def ask(prompt: str) -> bool:
    """Ask on the terminal; anything but `yes` (or no input at all) is a no."""
    try:
        return input(prompt).strip().lower() == "yes"
    except EOFError:
        return False


def rollback(
    settings: Settings,
    yes: bool = False,
    force: bool = False,
    plan_path: str | None = None,
    confirm: Callable[[str], bool] = ask,
    out: TextIO = sys.stdout,
    run_id: str | None = None,
) -> RollbackOutcome:
    """Undo the live runs (together they are the migration: later ones build on the earlier
    ones' columns); with `run_id`, only if that run is one of them."""
    url = settings.require_database()
    with db.connection(url) as conn:
        _claim_producer_lock(conn, force)
        with conn.cursor() as cur:
            named = pick_run(cur, run_id)
            undo = undoing.what_to_undo(cur)
        conn.commit()
        if undo is None or (named is not None and named["status"] == RunStatus.ROLLED_BACK):
            out.write(f"nothing to roll back: {_why_nothing(named)}\n")
            return RollbackOutcome(NOTHING)
        _refuse_running(undo, force)
        if plan_path:
            _require_same_tables(plan_file.load(plan_path), undo.plan)
        out.write(f"rollback of run(s) {', '.join(undo.run_ids)} will:\n")
        out.write("".join(f"  - {line}\n" for line in undo.describe()))
        if not yes and not confirm("Type 'yes' to roll back: "):
            out.write("aborted; nothing was changed\n")
            return RollbackOutcome(ABORTED)
        report = _undo(conn, settings, undo, out)
    return RollbackOutcome(ROLLED_BACK, report, undo.describe())


def _undo(conn: Any, settings: Settings, undo: undoing.Undo, out: TextIO) -> dict[str, Any]:
    if undo.running_batches:
        out.write(f"waiting for {undo.running_batches} running batch(es) to end\n")
    _revoke_queued(settings, undo.run_ids, out)
    undoing.fence(conn, undo.run_ids)
    with db.connection(settings.require_database(), autocommit=True) as index_conn:
        undoing.wait_for_index_builds(index_conn, undo.plan)
        with conn.cursor() as cur:  # again: what was built while we waited is recorded now
            undo = undoing.what_to_undo(cur) or undo
        conn.commit()
        undoing.reverse_steps(conn, index_conn, undo, settings.lock_timeout_ms)
    _forget_redis(settings, undo.run_ids, out)
    with conn.cursor() as cur:
        runs.forget_progress(cur, undo.run_ids)
        report = rolled_back_report(cur, undo.plan, undo.run_ids)
        reports.store(cur, undo.run_ids[-1], report["phase"], report)
        runs.close_rolled_back(cur, undo.run_ids, verified=report["overallStatus"] == "passed")
    conn.commit()
    return report


def _why_nothing(latest: dict[str, Any] | None) -> str:
    if latest is None:
        return "no migration is recorded in this database"
    return f"run {latest['run_id']} was rolled back at {iso(latest['finished_at'])}"


def _revoke_queued(settings: Settings, run_ids: list[str], out: TextIO) -> None:
    """Revoke the runs' queued batches first. Only live workers hear it, so the fence
    (checked inside every batch's transaction) is what guarantees that none writes after."""
    try:
        dispatch.revoke_run(make_app(settings), run_ids)
    except (KombuError, OSError) as exc:
        out.write(f"warning: could not revoke queued batches ({exc}); the fence stops them\n")


def _claim_producer_lock(conn: Any, force: bool) -> None:
    """Refuse while a producer is attached: planning, or waiting in `run --wait` or
    `retry --wait` (paused or not), whose workers would go on with the run."""
    with conn.cursor() as cur:
        free = runs.try_producer_lock(cur) and runs.try_detached_lock(cur)
    conn.commit()
    if not free and not force:
        raise RunStateError(
            "a uuid-migrate producer is attached to this database (planning, or waiting in "
            "`run --wait` / `retry --wait`, paused or not); stop it first (Ctrl-C), or pass "
            "--force to roll back anyway"
        )


def _refuse_running(undo: undoing.Undo, force: bool) -> None:
    if undo.running_batches and not force:
        raise RunStateError(
            f"{undo.running_batches} batch(es) of run {undo.run_ids[-1]} are running; wait for "
            "them to finish, or pass --force to stop the run (queued batches then do nothing) "
            "and roll back"
        )


def _require_same_tables(named: Plan, recorded: Plan) -> None:
    if {t.name for t in named.tables} != {t.name for t in recorded.tables}:
        raise RunStateError(
            "the plan given names other tables than the recorded migration; nothing was changed"
        )


def _forget_redis(settings: Settings, run_ids: list[str], out: TextIO) -> None:
    """Best effort: progress keys expire by themselves, so an unreachable Redis only warns."""
    try:
        redis_conn = client(settings.redis_url)
    except ConnectionFailed as exc:
        out.write(f"warning: {exc}; its progress keys will expire on their own\n")
        return
    for run_id in run_ids:
        Progress(redis_conn, run_id).forget()
