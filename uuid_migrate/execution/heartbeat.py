"""Heartbeats of running batches: a Redis key with a time to live, refreshed by a thread.

A worker killed in any way stops refreshing, the key expires, and the reconciler sees the
batch as stale after `timeout_s`; no broker visibility timeout (an hour on Redis) is involved.
Losing Redis only makes live batches look stale for a moment: running one twice is harmless.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from uuid_migrate.redis_store import heartbeat_key as key
from uuid_migrate.redis_store import heartbeat_pattern


class Heartbeat:
    """Keeps `key(...)` alive every timeout/3 seconds while a batch runs."""

    def __init__(self, conn: redis.Redis | None, timeout_s: int) -> None:
        self.conn = conn
        self.timeout_s = max(int(timeout_s), 1)

    @contextlib.contextmanager
    def beating(self, run_id: str, stage: str, batch_no: int, worker: str) -> Iterator[None]:
        if self.conn is None:
            yield
            return
        name = key(run_id, stage, batch_no)
        stop = threading.Event()
        self._beat(name, worker)
        thread = threading.Thread(
            target=self._loop, args=(name, worker, stop), name=f"heartbeat-{batch_no}", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.conn.delete(name)

    def _loop(self, name: str, worker: str, stop: threading.Event) -> None:
        while not stop.wait(self.timeout_s / 3):
            self._beat(name, worker)

    def _beat(self, name: str, worker: str) -> None:
        # Redis being away must not stop the batch; the reconciler copes with a missing beat.
        with contextlib.suppress(redis.RedisError):
            self.conn.set(name, worker, ex=self.timeout_s)


def alive(conn: redis.Redis, run_id: str, batches: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of the (stage, batch_no) pairs still have a heartbeat."""
    wanted = list(batches)
    if not wanted:
        return set()
    pipe = conn.pipeline(transaction=False)
    for stage, batch_no in wanted:
        pipe.exists(key(run_id, stage, batch_no))
    return {pair for pair, found in zip(wanted, pipe.execute(), strict=True) if found}


def any_alive(conn: Any, run_id: str) -> bool:
    """Is any batch of the run beating right now (some worker is busy with it)?"""
    return next(iter(conn.scan_iter(match=heartbeat_pattern(run_id), count=1000)), None) is not None
