"""The one timestamp format of every record, report and checkpoint: ISO 8601, UTC, with a Z."""

from __future__ import annotations

from datetime import UTC, datetime

#: `2026-12-01T12:00:00Z`: what error records, reports and checkpoints carry.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime | None) -> str | None:
    """A database timestamp as text in the records' format; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def now_iso() -> str:
    return datetime.now(UTC).strftime(ISO_FORMAT)
