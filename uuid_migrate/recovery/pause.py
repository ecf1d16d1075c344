"""Pausing and resuming a run: a flag in the ledger's run row, the truth every worker reads.

Workers look at it before they claim a batch and wait while it is set, holding their
unacknowledged message (`execution.batch_run.wait_while_paused`).
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.errors import RunStateError
from uuid_migrate.ledger import runs


def set_paused(cur: Any, paused: bool, run_id: str | None = None) -> str:
    """Pause or resume the run (the latest one by default) while it is active; its id."""
    run = runs.get_run(cur, run_id) if run_id else runs.latest_run(cur)
    if run_id and run is None:
        raise RunStateError(f"no run {run_id} in this database")
    if not runs.is_active(run):
        raise RunStateError("no active migration run to pause or resume")
    runs.set_paused(cur, run["run_id"], paused)
    return run["run_id"]
