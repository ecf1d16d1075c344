"""The command line's grammar: every command, its options and how their values are read."""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

from uuid_migrate.plan.model import MAX_BATCH_SIZE

#: Where `flower` and `metrics` listen unless told otherwise: this machine only.
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_FLOWER_PORT = 5555
DEFAULT_METRICS_PORT = 9808

DESCRIPTION = """\
Move a live PostgreSQL database from string primary keys to UUIDs, additively: every
string-keyed table gains uuid_id, every reference gains <column>_uuid_id, and id_mappings
records old -> new. Work is split into key-range batches run by Celery workers.

Settings come from DATABASE_URL, REDIS_URL, BROKER_URL (default: REDIS_URL) and BATCH_SIZE;
LOG_FORMAT=json for JSON logs, FLOWER_BASIC_AUTH=user:password for `flower` (README.md lists
them all). The formats it prints (checkpoint, error record, validation report) are described
in docs/checkpoint.md, docs/error-record.md and docs/validation-report.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uuid-migrate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="print the migration plan (TOML) discovered from the catalog")
    _plan_options(p)

    p = sub.add_parser("run", help="plan (or resume) a run and enqueue its batches")
    _plan_options(p)
    p.add_argument(
        "--max-rows-per-second",
        type=_whole,
        metavar="N",
        help="one row budget for the whole run, shared by every worker (0: none; a resumed "
        "run keeps its budget unless given)",
    )
    p.add_argument(
        "--allow-triggers",
        action="store_true",
        help="let the application's triggers fire on the migration's writes where this role "
        "cannot silence them (session_replication_role)",
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        help=f"rows per batch, at most {MAX_BATCH_SIZE:,} (default: BATCH_SIZE, or each "
        "table's own, 5,000 to 20,000)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=0,
        help="also start N Celery workers on this machine (implies --wait; at most "
        "MAX_LOCAL_WORKERS, default 4 per CPU)",
    )
    _worker_logs_option(p)
    p.add_argument(
        "--wait",
        action="store_true",
        help="show live progress; exit 0 only when every table succeeded",
    )

    p = sub.add_parser(
        "retry", help="re-send the failed and stale batches of the run; dependents follow"
    )
    _run_option(p)
    p.add_argument("--table", help="only this table (or stage)")
    p.add_argument("--batch", type=_positive, help="only this batch number (needs --table)")
    p.add_argument("--workers", type=_positive, default=0, help="also start N local workers")
    _worker_logs_option(p)
    p.add_argument("--wait", action="store_true", help="wait; exit 0 only if the run succeeds")

    _run_option(sub.add_parser("pause", help="workers finish their current batch and hold the rest"))
    _run_option(sub.add_parser("resume", help="let paused workers go on"))

    p = sub.add_parser("status", help="checkpoint per table of a run (default: the latest)")
    _run_option(p)
    p.add_argument(
        "--json", action="store_true", help="print JSON: a checkpoint per table (docs/status.md)"
    )

    p = sub.add_parser("runs", help="list the runs: state, tables, rows and times")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
        "validate",
        help="check the database (before, during, after a migration or after a rollback)",
        description="Prints a validation report (docs/validation-report.md); exit 0 when every "
        "check passed, 1 when one failed, 2 on a usage or connection error.",
    )
    _plan_options(p)
    _run_option(p)
    p.add_argument("--output", metavar="PATH", help="also write the JSON report to PATH")
    p.add_argument("--json", action="store_true", help="print the JSON report, not a table")

    p = sub.add_parser(
        "rollback",
        help="undo everything the migration added and verify the tables are as before",
        description="Drops the added columns, their indexes and id_mappings (or the runs' rows "
        "of a pre-existing one), clears the run's progress, then compares every touched table "
        "with its snapshot from before the migration. Exit 1 if anything differs.",
    )
    p.add_argument(
        "--plan", metavar="FILE", help="refuse unless the recorded run migrated these tables"
    )
    _run_option(
        p, "refuse unless this run is among those not yet rolled back (they are undone together)"
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force",
        action="store_true",
        help="roll back even while batches run or a producer is attached (run --wait): the "
        "run is stopped first, so queued batches do nothing",
    )

    p = sub.add_parser("demo", help="migrate a generated clinic database of its own")
    p.add_argument(
        "--rows", type=_positive, default=20_000, help="users to generate (default 20000)"
    )
    p.add_argument("--workers", type=_positive, default=2, help="local workers (default 2)")
    p.add_argument("--keep", action="store_true", help="keep the demo database afterwards")

    p = sub.add_parser(
        "flower", help="watch the workers and every batch in Flower (auth: FLOWER_BASIC_AUTH)"
    )
    _serve_options(p, DEFAULT_FLOWER_PORT)
    p = sub.add_parser(
        "metrics", help="serve Prometheus metrics of the latest run, from the ledger"
    )
    _serve_options(p, DEFAULT_METRICS_PORT)
    return parser


def _serve_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--port", type=_positive, default=port, help=f"port (default {port})")
    p.add_argument(
        "--address",
        default=DEFAULT_ADDRESS,
        help=f"address to bind (default {DEFAULT_ADDRESS}: this machine only)",
    )


def _worker_logs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--worker-logs",
        metavar="DIR",
        type=Path,
        help="with --workers: their logs go to DIR and stay (default: a temporary folder, "
        "removed after a run that succeeded)",
    )


def _run_option(p: argparse.ArgumentParser, help_text: str = "the run (default: the latest)") -> None:
    p.add_argument("--run", metavar="RUN_ID", dest="run_id", help=help_text)


def _version() -> str:
    try:
        return importlib.metadata.version("uuid-migrate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", metavar="FILE", help="a plan file (or the name of a shipped plan)")
    p.add_argument(
        "--schema",
        type=_schema_list,
        metavar="A,B",
        help="schemas to discover, the first holding id_mappings (default: every user schema)",
    )


def _schema_list(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of schemas")
    return names


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _batch_size(text: str) -> int:
    value = _positive(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BATCH_SIZE:,}")
    return value
