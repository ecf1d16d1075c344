"""The states of a run, a stage and a batch, as the ledger stores them.

`str` Enums: a member equals its stored text, so `status == RunStatus.RUNNING` works on a
value read back from PostgreSQL. Each move between states is one compare-and-set function
in `runs`, `stages` or `batches`.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """planning -> running -> validating -> succeeded | failed; rolling_back -> rolled_back."""

    PLANNING = "planning"
    RUNNING = "running"
    VALIDATING = "validating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class StageStatus(StrEnum):
    """pending -> running -> succeeded | failed; `retry` reopens a failed stage."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class BatchStatus(StrEnum):
    """pending -> running -> succeeded | failed | split (its two halves carry its work)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SPLIT = "split"


#: Runs that workers and the reconciler still act on.
ACTIVE_RUN_STATES = (RunStatus.PLANNING, RunStatus.RUNNING, RunStatus.VALIDATING)
#: Runs that ended; `run --wait` stops at these (a rollback ends a run too).
ENDED_RUN_STATES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.ROLLING_BACK,
    RunStatus.ROLLED_BACK,
)
#: A batch may write only while its run is in none of these (checked inside its transaction).
FENCED_RUN_STATES = (RunStatus.ROLLING_BACK, RunStatus.ROLLED_BACK)
#: Batch states in which there is nothing left to do.
SETTLED_BATCH_STATES = (BatchStatus.SUCCEEDED, BatchStatus.SPLIT)
#: Batch states that still hold work.
OPEN_BATCH_STATES = (BatchStatus.PENDING, BatchStatus.RUNNING)
