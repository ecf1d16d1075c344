"""What must be sent once the ledger's changes are committed: pages of batches, the sweeps and
unique indexes of stages closing, validation.

Progression decides and commits; only then does its caller send these, so a message never
points at state that was not committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uuid_migrate.ledger.batches import Batch


@dataclass(frozen=True)
class Page:
    """Batches of one stage to send as one chord; its callback completes page `end`."""

    run_id: str
    stage: str
    end: int
    batches: tuple[Batch, ...]


@dataclass
class Next:
    """Messages to send once the ledger changes are committed."""

    pages: list[Page] = field(default_factory=list)
    validate: bool = False
    #: Re-sent batches: chords whose callback continues their stage (`continue_stage`).
    retries: list[Page] = field(default_factory=list)
    #: Stages whose final sweep and hand-off, or unique index, are owed (`closing`).
    sweeps: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)

    def merge(self, other: Next) -> Next:
        self.pages += other.pages
        self.retries += other.retries
        self.sweeps += [s for s in other.sweeps if s not in self.sweeps]
        self.indexes += [s for s in other.indexes if s not in self.indexes]
        self.validate = self.validate or other.validate
        return self
