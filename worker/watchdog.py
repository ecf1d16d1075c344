"""A local worker never outlives the `uuid-migrate … --workers N` that started it.

The producer normally stops its workers itself; killed with SIGKILL it cannot. Its workers
run in sessions of their own (so Ctrl-C at the terminal reaches the producer only), hence
nothing else stops them: a thread in each worker's main process polls its parent, and once
the producer is gone shuts the worker down warm (finish the current batch), then cold after
the grace (WORKER_STOP_GRACE_S): the whole process group, pool process included, is killed.
A batch cut short is rolled back by PostgreSQL and sent again by the next `run` (its
heartbeat is gone).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

#: How often a worker looks whether its producer is still there.
POLL_S = 1.0

log = logging.getLogger("uuid_migrate.worker")


def guard(producer_pid: int, grace_s: float) -> threading.Thread:
    """Start the watchdog thread of this worker's main process; `grace_s` is the time its
    batch gets between the warm and the cold stop (settings.worker_stop_grace_s)."""
    thread = threading.Thread(
        target=_watch,
        args=(producer_pid, os.getppid(), grace_s),
        name="producer-watchdog",
        daemon=True,
    )
    thread.start()
    return thread


def _watch(producer_pid: int, parent: int, grace_s: float) -> None:
    while not producer_gone(producer_pid, parent):
        time.sleep(POLL_S)
    log.warning(
        "the uuid-migrate producer (pid %s) is gone: stopping after the current batch", producer_pid
    )
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown
    time.sleep(grace_s)
    log.warning("still running %s s later: stopping now; a batch cut short is sent again", grace_s)
    _kill_all()


def producer_gone(producer_pid: int, parent: int) -> bool:
    """Orphaned, a process is re-parented (to init or a subreaper): its parent pid changes.
    The producer's own pid is looked at too, in case a wrapper stood between the two."""
    if os.getppid() != parent:
        return True
    try:
        os.kill(producer_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of someone else: not ours, but it exists
        return False
    return False


def _kill_all() -> None:
    """SIGKILL this worker and its pool: its process group when it leads one (a local worker
    does), else itself (the pool processes die with it: Celery sets their PDEATHSIG)."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
