"""Key ranges: half-open intervals `(lower, upper]` over a table's primary key.

Bounds come from walking the key in index order, never from arithmetic on ids, so string
keys of any shape work. The first range has no lower bound and the last no upper bound:
a row inserted after planning, below the first or above the last bound, is still covered,
and the empty-string key (which `key > ''` would skip) is inside the first range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyRange:
    """Keys `k` with `lower < k <= upper`; a missing bound means unbounded on that side."""

    lower: str | None
    upper: str | None

    def label(self) -> str:
        low = "-inf" if self.lower is None else repr(self.lower)
        high = "+inf" if self.upper is None else repr(self.upper)
        return f"({low}, {high}]"


def lower_half(rows: int) -> int:
    """The rows below the cut of a range of `rows` rows cut in two. The planner's middle key,
    a split's median and the halves' planned rows all follow it, so they agree."""
    return rows // 2


def ranges_from_bounds(bounds: Iterable[str]) -> Iterator[KeyRange]:
    """Cut points b1 < b2 < ... into (-inf, b1], (b1, b2], ..., (bk, +inf), lazily."""
    lower: str | None = None
    for bound in bounds:
        yield KeyRange(lower, bound)
        lower = bound
    yield KeyRange(lower, None)
