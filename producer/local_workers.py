"""Real Celery worker processes on this machine, for a one-machine run (`--workers N`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config.settings import ENVIRONMENT, PRODUCER_PID_VARIABLE, Settings
from uuid_migrate.errors import ConfigError, WorkersFailed

#: How long a run waits for its local workers to answer (its first pages are sent already).
READY_TIMEOUT_S = 30
#: How long one ping waits for the workers that have not answered yet.
PING_TIMEOUT_S = 0.2
#: After a run that succeeded, idle workers get this long after SIGTERM (for a last log line
#: to be written) before they are killed: Celery's warm shutdown of an idle worker still
#: takes seconds (its event loop's poll, the pool's join), and there is nothing to finish.
IDLE_STOP_S = 0.2


def check_count(settings: Settings, workers: int) -> None:
    """Refuse `--workers` above the limit before anything is planned or started."""
    if workers > settings.max_local_workers:
        raise ConfigError(
            f"--workers {workers} is above the limit of {settings.max_local_workers} "
            "(MAX_LOCAL_WORKERS; by default 4 per CPU)"
        )


def spawn(settings: Settings, workers: int, log_dir: Path | None = None) -> LocalWorkers | None:
    """N local worker processes, started, not waited for: they come up while the producer
    prepares the run."""
    if not workers:
        return None
    if log_dir is not None:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --worker-logs {log_dir}: {exc.strerror}") from None
    return LocalWorkers(settings, workers, log_dir).start()


class LocalWorkers:
    """N worker nodes (one process each plus its pool child), logging to a temporary directory."""

    def __init__(self, settings: Settings, count: int, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.count = count
        self._log_dir = log_dir
        #: The log folder is ours to remove: none was given.
        self.temporary = log_dir is None
        #: A run took them over (`claim`): it stops them, and says where their logs are.
        self.claimed = False
        self.processes: list[subprocess.Popen[bytes]] = []

    def environment(self) -> dict[str, str]:
        """This environment with exactly the producer's settings (one conversion, both ways),
        and this process's pid: a worker whose producer is gone stops (worker.watchdog)."""
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env.update(self.settings.to_environment())
        env[PRODUCER_PID_VARIABLE] = str(os.getpid())
        return env

    def command(self, index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--queues",
            self.settings.queue,
            "--events",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            self.node_name(index),
        ]

    def node_name(self, index: int) -> str:
        # The host as Celery's `%h` would give it, spelt out so `wait_ready` pings these
        # nodes by name.
        return f"uuid-migrate-{index}-{os.getpid()}@{socket.gethostname()}"

    @property
    def log_dir(self) -> Path:
        """Where the workers log: the folder given, or a new temporary one, made on first use."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="uuid-migrate-workers-"))
        return self._log_dir

    def start(self) -> LocalWorkers:
        """Start them all, or none: one that cannot be started stops those already started."""
        for index in range(1, self.count + 1):
            try:
                self._start_one(index)
            except BaseException as exc:  # an interrupt too: none is left without its producer
                self.discard()
                if not isinstance(exc, OSError):
                    raise
                raise WorkersFailed(
                    f"cannot start local worker {index} of {self.count}: "
                    f"{exc.strerror or exc}: {exc.filename or self.command(index)[0]}"
                ) from None
        return self

    def _start_one(self, index: int) -> None:
        with open(self.log_dir / f"worker-{index}.log", "ab") as log:
            # Its own session: Ctrl-C at the terminal reaches the producer only, which
            # then stops the workers with their grace period.
            self.processes.append(
                subprocess.Popen(
                    self.command(index),
                    env=self.environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def node_prefixes(self) -> list[str]:
        return [f"uuid-migrate-{i}-{os.getpid()}@" for i in range(1, self.count + 1)]

    def wait_ready(self, app: Any, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Wait until every worker answers a ping, so work starts spread over all of them.

        Only our nodes are asked, and a ping returns as soon as all have answered. Returns
        how many answered; a slow worker only costs the wait. One that exits before it
        answered could not be started: WorkersFailed (the caller stops the others).
        """
        deadline = time.monotonic() + timeout_s
        names = [self.node_name(i) for i in range(1, self.count + 1)]
        ready: set[str] = set()
        while time.monotonic() < deadline:
            self._raise_if_one_exited()
            waiting = [n for n in names if n not in ready]
            replies = app.control.ping(
                destination=waiting, timeout=PING_TIMEOUT_S, limit=len(waiting)
            ) or []
            ready.update(name for reply in replies for name in reply if name in waiting)
            if len(ready) == self.count:
                break
        return len(ready)

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def _raise_if_one_exited(self) -> None:
        for index, proc in enumerate(self.processes, start=1):
            if proc.poll() is not None:
                raise WorkersFailed(
                    f"local worker {index} exited at start (exit code {proc.returncode}); "
                    f"its log: {self.log_dir / f'worker-{index}.log'}"
                )

    def stop(self, idle: bool = False) -> None:
        """Warm shutdown (finish the current batch), then kill whatever is left once the
        grace (settings.worker_stop_grace_s) is over; `idle` workers (nothing left to do)
        are killed after IDLE_STOP_S instead."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the main process stops its pool itself
        grace = IDLE_STOP_S if idle else self.settings.worker_stop_grace_s
        deadline = time.monotonic() + grace
        for proc in self.processes:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def claim(self) -> LocalWorkers:
        self.claimed = True
        return self

    def discard(self) -> None:
        """Stop workers that were never sent work at once; a temporary log folder goes too."""
        self.stop(idle=True)
        if self.temporary:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
