"""Validation reports as a person reads them: a verdict line, a table of checks, the figures."""

from __future__ import annotations

import json
from typing import Any

#: Widest a value may be in the checks table before it is cut.
CELL = 28


def render(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        f"validation ({report['phase']}) at {report['timestamp']}: {report['overallStatus'].upper()}"
        f" - {s['totalChecks']} checks: {s['passed']} passed, {s['failed']} failed, "
        f"{s.get('warnings', 0)} warnings",
        "",
        _row("CHECK", "TABLE", "STATUS", "EXPECTED", "ACTUAL", "SAMPLE"),
    ]
    for check in report["checks"]:
        lines.append(
            _row(
                check["name"],
                check["table"],
                check["status"],
                _cell(check["expected"]),
                _cell(check["actual"]),
                ", ".join(check["sample"][:3]) + (" ..." if len(check["sample"]) > 3 else ""),
            )
        )
    left_alone = [c for c in report["checks"] if c["name"] == "not_migrated"]
    if left_alone:
        lines += ["", "NOT MIGRATED (the migration leaves these alone):"]
        lines += [f"  {c['table']}: {c['actual']}" for c in left_alone]
    if report["tables"]:
        lines += ["", f"{'TABLE':<28} {'TOTAL':>12} {'MIGRATED':>12} {'FAILED':>10} {'DURATION ms':>12}"]
        for name, t in report["tables"].items():
            lines.append(
                f"{name:<28.28} {t.get('total', 0):>12,} {_num(t.get('migrated')):>12} "
                f"{_num(t.get('failed')):>10} {_num(t.get('duration')):>12}"
            )
    return "\n".join(lines) + "\n"


def _row(*cells: str) -> str:
    name, table, status, expected, actual, sample = cells
    return f"{name:<26.26} {table:<28.28} {status:<8} {expected:<14.14} {actual:<14.14} {sample}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= CELL else text[: CELL - 3] + "..."


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,}"
