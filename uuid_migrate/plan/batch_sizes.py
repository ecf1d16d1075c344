"""How many rows a batch holds when nobody said: sized per table when it is planned, and cut
by its expected duration when it runs (`execution.batch_cutting`).

A batch's fixed cost (its task, its ledger writes, its commits) is paid per batch, and its
statement touches every page its rows are on: with string keys in no physical order a
range of 5,000 rows lies on about as many pages as one of 20,000. Measured on the migration
guide's schema (BENCHMARKS.md), batches of 20,000 rows ran a fifth faster than batches of
5,000. But a table cut into few batches leaves workers idle at its end, waiting for its last
one: a table gets at least MIN_BATCHES_PER_TABLE batches, none smaller than SMALLEST. Below
SMALLEST a batch is mostly its fixed cost: between two batches a worker spends 15 to 30 ms
(its task, claim and ledger writes), which a batch of 1,250 rows (20 ms) doubled, and
batches of 3,750 rows ran 70 to 150 ms.

A size the user gives (`--batch-size`, `BATCH_SIZE`, the plan's or a table's `batch_size`)
is used as given, for every batch: nothing here applies to it.
"""

from __future__ import annotations

import math

#: Rows per batch at most, when the size is the default.
LARGEST = 20_000
#: Rows per batch at least, when the size is the default (a smaller table is one batch).
SMALLEST = 5_000
#: A table is cut into at least this many batches (rows allowing), so that the workers it
#: shares end together: the last batch leaves the others idle for its duration.
MIN_BATCHES_PER_TABLE = 16


def default_size(rows: int) -> int:
    """The default batch size of a table of about `rows` rows."""
    return max(SMALLEST, min(LARGEST, math.ceil(rows / MIN_BATCHES_PER_TABLE)))


def rows_to_count() -> int:
    """Counting a table's rows up to this many is enough to size its batches: beyond it,
    they are LARGEST."""
    return LARGEST * MIN_BATCHES_PER_TABLE
