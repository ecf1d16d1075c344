"""What the commands print for people: run outcomes, status, runs, reports, rollbacks.

Each function returns the command's exit code: 0 done, 1 something failed (a check, a run).
"""

from __future__ import annotations

import json
from typing import Any

from producer import commands, report_view, rollback_command
from uuid_migrate.errors import ConfigError
from uuid_migrate.ledger.states import RunStatus

EXIT_OK, EXIT_FAILED = 0, 1


def report_run(result: commands.RunResult) -> int:
    if result.status == "running":
        print(
            f"run {result.run_id} enqueued; start workers with `celery -A worker worker` "
            "and follow it with `uuid-migrate status`"
        )
        return EXIT_OK
    print(f"run {result.run_id} {result.status}" + (f": {result.message}" if result.message else ""))
    if result.status != RunStatus.SUCCEEDED:
        print_failures(result)
    return EXIT_OK if result.status == RunStatus.SUCCEEDED else EXIT_FAILED


def print_failures(result: commands.RunResult) -> None:
    """Which batches failed and why (error records, with the range), and the fix."""
    if result.failures:
        print(f"failed batches ({len(result.failures)} shown):")
        for failure in result.failures:
            print("  " + json.dumps(failure, default=str))
    tables = sorted({f["table"] for f in result.failures})
    print("fix the cause, then retry with: uuid-migrate retry --wait")
    for table in tables:
        print(f"  or only {table}: uuid-migrate retry --table {table} --wait")
    print("details: uuid-migrate status")


def print_status(status: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(status, indent=2, default=str))
        return EXIT_OK
    if status["run"] is None:
        print("no migration run recorded in this database")
        return EXIT_OK
    print(
        f"run {status['run']}: {status['status']}"
        + (f" ({status['message']})" if status["message"] else "")
    )
    if status.get("maxRowsPerSecond"):
        print(f"  budget: at most {status['maxRowsPerSecond']:,} rows/s")
    if status.get("throttled"):
        print(f"  throttled: {status['throttled']}")
    for cp in status["tables"]:
        print(
            f"  {cp['stage']:<28} {cp['status']:<12} {cp['processedCount']:>12,}/{cp['totalCount']:<12,} "
            f"last id {cp['lastProcessedId']!s:<36} errors {cp['errorCount']}"
        )
    kept = status.get("triggers") or []
    print(
        f"triggers: keeping the application's writes in step on {len(kept)} table(s)"
        + (f": {', '.join(kept)}" if kept else "")
    )
    report = status.get("validation")
    if report:
        print(
            f"validation ({report['phase']}, {report['timestamp']}): {report['overallStatus']} "
            f"({report['summary']['passed']}/"
            f"{report['summary']['totalChecks']} checks passed)"
        )
    return EXIT_OK


def print_runs(found: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return EXIT_OK
    if not found:
        print("no migration run recorded in this database")
        return EXIT_OK
    print(f"{'RUN':<28} {'STATUS':<12} {'ROWS':>23}  {'STARTED':<20} {'FINISHED':<20} TABLES")
    for r in found:
        rows = f"{r['rowsDone']:,}/{r['rowsPlanned']:,}"
        print(
            f"{r['run']:<28} {r['status']:<12} {rows:>23}  {r['startedAt'] or '-':<20} "
            f"{r['finishedAt'] or '-':<20} {', '.join(r['tables'])}"
        )
    return EXIT_OK


def print_report(report: dict[str, Any], as_json: bool, output: str | None) -> int:
    text = json.dumps(report, indent=2, default=str)
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise ConfigError(f"cannot write {output}: {exc.strerror}") from None
    print(text if as_json else report_view.render(report), end="\n" if as_json else "")
    return EXIT_OK if report["overallStatus"] == "passed" else EXIT_FAILED


def report_rollback(outcome: rollback_command.RollbackOutcome) -> int:
    if outcome.status == rollback_command.ABORTED:
        return EXIT_FAILED
    if outcome.report is None:
        return EXIT_OK
    print(report_view.render(outcome.report), end="")
    if outcome.report["overallStatus"] != "passed":
        print("rollback verification FAILED: the tables above differ from their snapshot")
        return EXIT_FAILED
    print("rolled back; every touched table matches its snapshot from before the migration")
    return EXIT_OK
