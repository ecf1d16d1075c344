"""`uuid-migrate`: argument parsing and the only place errors become messages."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import psycopg2
import redis
from kombu.exceptions import OperationalError as BrokerError

from config.logs import configure_logging
from config.settings import load_settings
from producer import (
    commands,
    demo,
    local_workers,
    observe,
    output,
    recovery,
    rollback_command,
    status_command,
    stopping,
    validate_command,
)
from uuid_migrate.db import mask_secrets
from uuid_migrate.errors import ConfigError, MigrateError
from uuid_migrate.plan.model import MAX_BATCH_SIZE

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SERVERS = ("flower", "metrics")
#: Commands that start local workers (`--workers N`).
WITH_WORKERS = ("run", "retry", "demo")
#: What to do after an interrupted command, by command.
RESUME_HINT = dict.fromkeys(("run", "retry"), "`uuid-migrate run` resumes the same run") | {
    "rollback": "`uuid-migrate rollback` resumes where it stopped"
}

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
        "--batch-size",
        type=_batch_size,
        help=f"rows per batch, at most {MAX_BATCH_SIZE:,} (default: BATCH_SIZE or 1000)",
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
    _serve_options(p, observe.DEFAULT_FLOWER_PORT)
    p = sub.add_parser(
        "metrics", help="serve Prometheus metrics of the latest run, from the ledger"
    )
    _serve_options(p, observe.DEFAULT_METRICS_PORT)
    return parser


def _serve_options(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--port", type=_positive, default=port, help=f"port (default {port})")
    p.add_argument(
        "--address",
        default=observe.DEFAULT_ADDRESS,
        help=f"address to bind (default {observe.DEFAULT_ADDRESS}: this machine only)",
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
    p.add_argument("--schema", default="public", help="schema to discover (default public)")


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


def dispatch(args: argparse.Namespace) -> int:
    settings = load_settings()
    # Servers log what they do; the other commands talk to people and log only trouble.
    configure_logging(settings, "INFO" if args.command in SERVERS else "WARNING")
    if args.command in WITH_WORKERS:
        local_workers.check_count(settings, args.workers)
    if args.command == "plan":
        sys.stdout.write(commands.plan(settings, args.plan, args.schema))
        return EXIT_OK
    if args.command == "run":
        settings = settings.with_overrides(batch_size=args.batch_size)
        result = commands.run(
            settings, args.plan, args.schema, args.workers, args.wait, worker_logs=args.worker_logs
        )
        return output.report_run(result)
    if args.command == "retry":
        if args.batch is not None and args.table is None:
            raise ConfigError("--batch needs --table: batch numbers are per table")
        result = recovery.retry(
            settings, args.table, args.batch, args.workers, args.wait,
            run_id=args.run_id, worker_logs=args.worker_logs,
        )  # fmt: skip
        return output.report_run(result)
    if args.command in ("pause", "resume"):
        run_id = getattr(recovery, args.command)(settings, args.run_id)
        print(f"run {run_id} {args.command}d")
        return EXIT_OK
    if args.command == "status":
        return output.print_status(status_command.status(settings, args.run_id), args.json)
    if args.command == "runs":
        return output.print_runs(status_command.list_runs(settings), args.json)
    if args.command == "validate":
        report = validate_command.validate(settings, args.plan, args.schema, args.run_id)
        return output.print_report(report, args.json, args.output)
    if args.command == "rollback":
        outcome = rollback_command.rollback(
            settings, args.yes, args.force, args.plan, run_id=args.run_id
        )
        return output.report_rollback(outcome)
    if args.command == "demo":
        return demo.demo(settings, args.rows, args.workers, args.keep)
    if args.command == "flower":
        return observe.flower(settings, args.address, args.port)
    if args.command == "metrics":
        return observe.serve_metrics(settings, args.address, args.port)
    raise ConfigError(f"unknown command {args.command}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in SERVERS:  # the servers stop on Ctrl-C by themselves
        stopping.stop_on_signals()
    try:
        return dispatch(args)
    except MigrateError as exc:
        return _fail(str(exc))
    except psycopg2.Error as exc:
        return _fail(f"PostgreSQL: {_first_line(exc)}")
    except redis.RedisError as exc:
        return _fail(f"Redis: {_first_line(exc)}")
    except BrokerError as exc:
        return _fail(f"broker unreachable: {_first_line(exc)}")
    except KeyboardInterrupt as exc:
        return _interrupted(args.command, exc)


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """Exit as a shell shows a process ended by the signal: 128 + its number."""
    signum = exc.signum if isinstance(exc, stopping.Interrupted) else signal.SIGINT
    hint = RESUME_HINT.get(command)
    message = f"interrupted by {signal.Signals(signum).name}" + (f"; {hint}" if hint else "")
    return _fail(message, code=128 + signum)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return mask_secrets(lines[0]) if lines else type(exc).__name__


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) still gets the exit code
        print(f"uuid-migrate: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
