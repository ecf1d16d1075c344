"""`run --wait`: the live view of a run until it ends, read from the ledger every half second;
in between, the run's status alone every tenth of a second, so its end is seen at once.

Survives lost connections (a restarted server, killed sessions) and runs the reconciler now
and then, so a waiting producer also heals what was lost.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TextIO

import psycopg2

from producer.progress_view import ProgressView, RunProgress, StageProgress
from uuid_migrate.errors import ConnectionFailed
from uuid_migrate.ledger import figures, runs, stages
from uuid_migrate.ledger.states import ENDED_RUN_STATES, StageStatus

#: Seconds between looks at the ledger while waiting for a run.
POLL_S = 0.5
#: Seconds between looks at the run's status alone (one row by its key) within POLL_S: the
#: local workers are stopped, and the command returns, as soon as the run has ended.
STATUS_POLL_S = 0.1
_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionFailed)


def read_progress(cur: Any, run_id: str, queue: str) -> RunProgress:
    """What the view shows, from the ledger alone (so it sees every machine's workers)."""
    run = runs.get_run(cur, run_id)
    activity = figures.stage_activity(cur, run_id)
    rows = []
    waiting = False
    for row in stages.stages(cur, run_id):
        seen = activity.get(row["stage"], {})
        waiting = waiting or (row["status"] == StageStatus.RUNNING and seen.get("waiting", 0) > 0)
        rows.append(
            StageProgress(
                stage=row["stage"],
                status=row["status"],
                done=seen.get("done", 0),
                total=int(row["total_rows"]),
                active_s=seen.get("active_s", 0.0),
                failed_batches=seen.get("failed", 0),
                retrying_batches=seen.get("retrying", 0),
            )
        )
    return RunProgress(
        run_id=run_id,
        status=run["status"],
        elapsed_s=(datetime.now(UTC) - run["created_at"]).total_seconds(),
        stages=tuple(rows),
        queue=queue,
        idle_s=figures.seconds_since_last_claim(cur, run_id),
        work_waiting=waiting,
    )


def wait_for_run(
    conn: Any,
    run_id: str,
    out: TextIO,
    *,
    queue: str,
    reconcile: Callable[[Any], None] | None = None,
    reconnect: Callable[[], Any] | None = None,
    reconcile_every_s: float = 30.0,
    throttled: Callable[[], str | None] | None = None,
) -> str:
    """Show progress until the run ends; returns its final status.

    With `reconnect`, a lost PostgreSQL connection is replaced; with `reconcile`, the
    reconciler runs every `reconcile_every_s`.
    """
    view = ProgressView(out)
    first = conn
    last_reconcile = time.monotonic()
    while True:
        try:
            if reconcile and time.monotonic() - last_reconcile >= reconcile_every_s:
                last_reconcile = time.monotonic()
                _quietly(reconcile, conn)
            with conn.cursor() as cur:
                progress = read_progress(cur, run_id, queue)
            conn.commit()
            if throttled:
                progress = replace(progress, throttled=throttled())
        except _LOST:
            if reconnect is None:
                raise
            time.sleep(POLL_S)
            conn = _reconnect(conn, reconnect)
            continue
        final = progress.status in ENDED_RUN_STATES
        view.show(progress, final=final)
        if final:
            if conn is not first:
                conn.close()
            return progress.status
        _until_ended(conn, run_id, POLL_S)


def _until_ended(conn: Any, run_id: str, seconds: float) -> None:
    """Wait `seconds`, or less once the run's status says it has ended. A lost connection
    only ends the wait: the next full look replaces it."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(STATUS_POLL_S, left))
        try:
            with conn.cursor() as cur:
                run = runs.get_run(cur, run_id)
            conn.commit()
        except _LOST:
            return
        if run is not None and run["status"] in ENDED_RUN_STATES:
            return


def _reconnect(conn: Any, reconnect: Callable[[], Any]) -> Any:
    if not conn.closed:
        conn.close()  # the caller's own connection is closed too: it was lost anyway
    try:
        return reconnect()
    except ConnectionFailed:
        return conn  # still closed: the next look fails again and we try again


def _quietly(reconcile: Callable[[Any], None], conn: Any) -> None:
    """A reconciler pass that fails (Redis or the broker away) is simply tried next time."""
    try:
        reconcile(conn)
    except _LOST:
        raise
    except Exception as exc:
        print(f"reconciler: {type(exc).__name__}: {exc}", file=sys.stderr)
