"""Batches of the default size cut to a target duration before they run.

A batch holds the row locks of everything it has written until it commits, so how long it
runs is how long the application may wait behind it. Each worker learns, per stage, how long
its batches took per row (smoothed over its recent batches); a batch expected to run longer
than the target is cut in half at its median key before it is tried (the same split as after a
timeout, in the ledger with its reason), and each half is looked at again. Batches that run
fast again are left whole: the size adapts between the planned one and the smallest a split
allows, both ways, as the database's load changes.

A size the user gave is never cut (plan/batch_sizes.py); a timeout still splits any batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uuid_migrate.plan.model import Plan
from uuid_migrate.plan.stages import Stage

#: Weight of a batch's own time per row against what was learnt before it.
SMOOTHING = 0.5


@dataclass
class BatchCutter:
    """One worker's record of its batches' time per row; `target_ms` 0: never cut."""

    target_ms: int
    min_rows: int
    _per_row_s: dict[tuple[str, str], float] = field(default_factory=dict)

    def learn(self, run_id: str, stage: str, rows: int, duration_ms: int) -> None:
        """A batch of the stage wrote `rows` rows in `duration_ms`."""
        if rows <= 0 or duration_ms <= 0:
            return
        key = (run_id, stage)
        seen = duration_ms / 1000 / rows
        before = self._per_row_s.get(key)
        self._per_row_s[key] = seen if before is None else SMOOTHING * seen + (1 - SMOOTHING) * before

    def expected_ms(self, run_id: str, stage: str, rows: int) -> float | None:
        """How long a batch of `rows` rows of the stage should take; None before the first."""
        per_row = self._per_row_s.get((run_id, stage))
        return None if per_row is None else rows * per_row * 1000

    def should_cut(self, plan: Plan, stage: Stage, run_id: str, rows: int) -> str | None:
        """Why a batch of `rows` planned rows is cut before it runs, or None to run it whole."""
        if not self.target_ms or rows < 2 * self.min_rows or _size_given(plan, stage):
            return None
        expected = self.expected_ms(run_id, stage.name, rows)
        if expected is None or expected <= self.target_ms:
            return None
        return (
            f"cut before it ran: {rows:,} rows expected to take {expected:,.0f} ms "
            f"> BATCH_TARGET_MS {self.target_ms:,}"
        )


def _size_given(plan: Plan, stage: Stage) -> bool:
    """The user chose the stage's batch size (the plan's or its table's, or the flag's, which
    a run keeps in its plan): the plan names one, whatever the default."""
    return bool(plan.batch_size_of(stage.table, 0))
