"""The commands behind `uuid-migrate` (`producer.cli` parses and hands over), and the only
place errors become messages."""

from __future__ import annotations

import argparse
import sys

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
    validate_command,
)
from producer.cli import EXIT_OK, SERVERS, WITH_WORKERS, fail
from producer.local_workers import LocalWorkers
from uuid_migrate.db import mask_secrets
from uuid_migrate.errors import ConfigError, MigrateError


def dispatch(args: argparse.Namespace, spawned: LocalWorkers | None = None) -> int:
    settings = load_settings()
    # Servers log what they do; the other commands talk to people and log only trouble.
    configure_logging(settings, "INFO" if args.command in SERVERS else "WARNING")
    if getattr(args, "schema", None) and getattr(args, "plan", None):
        raise ConfigError(
            "--schema chooses what discovery reads and a plan file names its own tables "
            "(schema.table): give one or the other"
        )
    if args.command in WITH_WORKERS:
        local_workers.check_count(settings, args.workers)
    if args.command == "plan":
        sys.stdout.write(commands.plan(settings, args.plan, args.schema))
        return EXIT_OK
    if args.command == "run":
        settings = settings.with_overrides(batch_size=args.batch_size)
        result = commands.run(
            settings, args.plan, args.schema, args.workers, args.wait,
            worker_logs=args.worker_logs, allow_triggers=args.allow_triggers,
            max_rows_per_second=args.max_rows_per_second, spawned=spawned,
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


def run_command(args: argparse.Namespace, spawned: LocalWorkers | None) -> int:
    """Run the parsed command; its errors become one-line messages and an exit code here."""
    try:
        return dispatch(args, spawned)
    except MigrateError as exc:
        return fail(str(exc))
    except psycopg2.Error as exc:
        return fail(f"PostgreSQL: {_first_line(exc)}")
    except redis.RedisError as exc:
        return fail(f"Redis: {_first_line(exc)}")
    except BrokerError as exc:
        return fail(f"broker unreachable: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return mask_secrets(lines[0]) if lines else type(exc).__name__
