"""`uuid-migrate`: the entry point. It parses the command line, starts the local workers of
`run --workers N` at once, then loads the rest of the tool (`producer.cli_commands`, where
the commands' errors become messages; an interrupt, or workers that cannot start, become
theirs here) and hands over.

Loading the rest (Celery, kombu, Redis, the migration's code) takes about half a second of
CPU, and each worker about a second to come up: started first, the workers come up while the
producer loads and prepares the run, and take their first batches sooner.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence

from config.settings import load_settings
from producer import local_workers, stopping
from producer.arguments import build_parser
from producer.local_workers import LocalWorkers
from uuid_migrate.errors import ConfigError, WorkersFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SERVERS = ("flower", "metrics")
#: Commands that start local workers (`--workers N`).
WITH_WORKERS = ("run", "retry", "demo")
#: What to do after an interrupted command, by command.
RESUME_HINT = dict.fromkeys(("run", "retry"), "`uuid-migrate run` resumes the same run") | {
    "rollback": "`uuid-migrate rollback` resumes where it stopped"
}

__all__ = ["build_parser", "fail", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in SERVERS:  # the servers stop on Ctrl-C by themselves
        stopping.stop_on_signals()
    spawned = None
    try:
        spawned = workers_started_early(args)
        from producer import cli_commands  # here: loaded while the workers come up

        return cli_commands.run_command(args, spawned)
    except WorkersFailed as exc:  # from the early start; the command's own become messages there
        return fail(str(exc))
    except KeyboardInterrupt as exc:
        return _interrupted(args.command, exc)
    finally:
        _discard_unclaimed(spawned)


def workers_started_early(args: argparse.Namespace) -> LocalWorkers | None:
    """The local workers of `run --workers N`, started; None for any other command, or when
    a setting is refused: the command itself then says what, before starting any. Workers
    that cannot be started raise WorkersFailed (those already started are stopped)."""
    if args.command != "run" or not args.workers or (args.schema and args.plan):
        return None
    try:
        settings = load_settings().with_overrides(batch_size=args.batch_size)
        settings.require_database()
        local_workers.check_count(settings, args.workers)
        return local_workers.spawn(settings, args.workers, args.worker_logs)
    except ConfigError:
        return None


def _discard_unclaimed(spawned: LocalWorkers | None) -> None:
    """Stop workers started early that no run took over (the command ended before). A stop
    signal during this is the first one (later ones are ignored): the stop is done anyway."""
    if spawned is None or spawned.claimed:
        return
    try:
        spawned.discard()
    except KeyboardInterrupt:
        spawned.discard()


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """Exit as a shell shows a process ended by the signal: 128 + its number."""
    signum = exc.signum if isinstance(exc, stopping.Interrupted) else signal.SIGINT
    hint = RESUME_HINT.get(command)
    message = f"interrupted by {signal.Signals(signum).name}" + (f"; {hint}" if hint else "")
    return fail(message, code=128 + signum)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    with contextlib.suppress(OSError):  # a closed terminal (SIGHUP) still gets the exit code
        print(f"uuid-migrate: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
