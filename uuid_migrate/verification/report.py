"""Validation reports (docs/validation-report.md): checks and their verdicts, pure data.

A check is `passed`, `failed`, or `warning` (reported, not fatal: orphans, suspicious ids).
A report is `passed` when no check failed. `summary` counts them:
totalChecks = passed + failed + warnings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from uuid_migrate.timestamps import now_iso

PASSED, FAILED, WARNING = "passed", "failed", "warning"
#: Phases `validate` can find a database in.
PRE, IN_PROGRESS, POST, ROLLED_BACK = "pre", "in_progress", "post", "rolled_back"
#: Offending ids shown per failed check.
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class CheckResult:
    """One check: what was expected, what was found, and a few offending ids when it failed."""

    name: str
    table: str
    status: str
    expected: Any
    actual: Any
    sample: list[str] = field(default_factory=list)


def verdict(name: str, table: str, expected: Any, actual: Any, sample: list[str]) -> CheckResult:
    """Passed when `actual` equals `expected`, failed otherwise (keeping the sample)."""
    status = PASSED if actual == expected else FAILED
    return CheckResult(name, table, status, expected, actual, sample if status == FAILED else [])


def notice(name: str, table: str, found: int, sample: list[str]) -> CheckResult:
    """A finding that is reported but never fails the report: a warning when found > 0."""
    return CheckResult(name, table, WARNING if found else PASSED, 0, found, sample)


def info(name: str, table: str, actual: Any) -> CheckResult:
    """A figure recorded in the report (a row count); always passes."""
    return CheckResult(name, table, PASSED, None, actual)


def left_alone(plan: Any) -> list[CheckResult]:
    """A warning for each table or foreign key the plan leaves alone, with the reason."""
    return [
        CheckResult("not_migrated", item.name, WARNING, "migrated", item.reason)
        for item in plan.skipped
    ]


def build_report(phase: str, checks: list[CheckResult], tables: dict[str, Any]) -> dict[str, Any]:
    """The report: timestamp, phase, overallStatus, summary, checks and per-table figures."""
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASSED, FAILED, WARNING)}
    return {
        "timestamp": now_iso(),
        "phase": phase,
        "overallStatus": PASSED if counts[FAILED] == 0 else FAILED,
        "summary": {
            "totalChecks": len(checks),
            "passed": counts[PASSED],
            "failed": counts[FAILED],
            "warnings": counts[WARNING],
        },
        "checks": [asdict(c) for c in checks],
        "tables": tables,
    }
