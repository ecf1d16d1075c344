"""Real Celery worker processes on this machine, for a one-machine run (`--workers N`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from config.settings import ENVIRONMENT, Settings

#: How long workers get to finish their current batch when asked to stop.
STOP_GRACE_S = 20
#: How long a run waits for its local workers to come up before sending work anyway.
READY_TIMEOUT_S = 30


class LocalWorkers:
    """N worker nodes (one process each plus its pool child), logging to a temporary directory."""

    def __init__(self, settings: Settings, count: int, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.count = count
        self._log_dir = log_dir
        #: The log folder is ours to remove: none was given.
        self.temporary = log_dir is None
        self.processes: list[subprocess.Popen[bytes]] = []

    def environment(self) -> dict[str, str]:
        """This environment with exactly the producer's settings (one conversion, both ways)."""
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        env.update(self.settings.to_environment())
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
            f"uuid-migrate-{index}-{os.getpid()}@%h",
        ]

    @property
    def log_dir(self) -> Path:
        """Where the workers log: the folder given, or a new temporary one, made on first use."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="uuid-migrate-workers-"))
        return self._log_dir

    def start(self) -> LocalWorkers:
        for index in range(1, self.count + 1):
            log = open(self.log_dir / f"worker-{index}.log", "ab")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(
                    self.command(index),
                    env=self.environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()
        return self

    def node_prefixes(self) -> list[str]:
        return [f"uuid-migrate-{i}-{os.getpid()}@" for i in range(1, self.count + 1)]

    def wait_ready(self, app: Any, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Wait until every worker answers a ping, so work starts spread over all of them.

        Returns how many answered; a slow or dead worker only costs the wait, never the run.
        """
        deadline = time.monotonic() + timeout_s
        ready = 0
        while time.monotonic() < deadline and self.alive():
            replies = app.control.ping(timeout=0.5) or []
            names = [name for reply in replies for name in reply]
            ready = sum(1 for p in self.node_prefixes() if any(n.startswith(p) for n in names))
            if ready == self.count:
                break
        return ready

    def alive(self) -> int:
        return sum(1 for p in self.processes if p.poll() is None)

    def stop(self) -> None:
        """Warm shutdown (finish the current batch), then kill whatever is left."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the main process stops its pool itself
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.processes:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
