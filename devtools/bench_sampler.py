"""What the benchmark samples while `uuid-migrate run` works, in a thread of the bench process.

Every POLL_S: the resident memory of the producer, each worker main process and each pool
child (by pid; the peak of each is kept), Redis' `used_memory`. With `deep` (the scale-out),
also the CPU seconds of the database's processes (the backends of the run's database and the
server's own writers) and of the tool's processes, the WAL position, and how many backends
wait on a lock (`pg_stat_activity.wait_event_type = 'Lock'`) or on anything else.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

import psutil
import redis

from uuid_migrate import db

POLL_S = 0.1
#: The server's own processes whose work a run causes (WAL, dirty pages).
SERVER_WRITERS = ("walwriter", "checkpointer", "background writer")


@dataclass
class Samples:
    """Peaks and totals over the sampled span."""

    rss_mb: dict[str, float] = field(default_factory=dict)  # "producer", "worker 1", ...
    worker_started: float | None = None  # epoch seconds a worker process was first seen
    workers_gone: float | None = None  # epoch seconds the last worker process was last seen
    redis_before: float = 0.0  # MB used at the start
    redis_peak: float = 0.0  # highest MB sampled
    redis_after: float = 0.0  # MB used once the run ended
    redis_server_peak: float = 0.0  # INFO used_memory_peak: the server's, since it started
    redis_keys: tuple[int, int] = (0, 0)  # DBSIZE before, after
    run_keys: dict[str, int] = field(default_factory=dict)  # what of the run stays, by kind
    cpu_s: dict[str, float] = field(default_factory=dict)  # "database", "tool"
    machine_busy: float = 0.0  # share of all CPUs busy over the span
    wal_bytes: int = 0
    lock_waits: int = 0  # samples x backends waiting on a lock
    other_waits: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    span_s: float = 0.0


class Sampler:
    """Start with the producer's pid; `stop()` returns the Samples."""

    def __init__(self, pid: int, url: str, redis_url: str, deep: bool = False) -> None:
        self.root = psutil.Process(pid)
        self.url, self.deep, self.samples = url, deep, Samples()
        self.redis = redis.Redis.from_url(redis_url)
        self._cpu: dict[int, tuple[str, float, float]] = {}  # pid: (group, first, last)
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        used = self._redis_mb()
        self.samples.redis_before = self.samples.redis_peak = used
        self.samples.redis_keys = (self.redis.dbsize(), 0)
        self._started = time.perf_counter()
        psutil.cpu_percent()  # the next call measures from here
        self._conn = db.connect(url, autocommit=True) if deep else None
        self._wal = self._wal_lsn() if deep else 0
        self._thread.start()

    def stop(self) -> Samples:
        self._stop.set()
        self._thread.join()
        s = self.samples
        s.span_s = time.perf_counter() - self._started
        s.machine_busy = psutil.cpu_percent() / 100
        s.redis_after, s.redis_keys = self._redis_mb(), (s.redis_keys[0], self.redis.dbsize())
        s.redis_server_peak = float(self.redis.info("memory")["used_memory_peak"]) / 2**20
        for group, first, last in self._cpu.values():
            s.cpu_s[group] = s.cpu_s.get(group, 0.0) + last - first
        if self._conn is not None:
            s.wal_bytes = self._wal_lsn() - self._wal
            self._conn.close()
        return s

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(psutil.Error, redis.RedisError):
                self._tool_processes()
                self.samples.redis_peak = max(self.samples.redis_peak, self._redis_mb())
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._database()
            self.samples.polls += 1

    def _tool_processes(self) -> None:
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                role = self._role(p)
                if role != "producer":
                    self.samples.workers_gone = time.time()
                peaks = self.samples.rss_mb
                peaks[role] = max(peaks.get(role, 0.0), p.memory_info().rss / 2**20)
                if self.deep:
                    self._cpu_of(p, "tool")

    def _role(self, p: psutil.Process) -> str:
        if p.pid not in self._roles:
            if p.pid == self.root.pid:
                role = "producer"
            elif p.ppid() == self.root.pid:
                role = f"worker {sum(r.startswith('worker ') for r in self._roles.values()) + 1}"
                # First seen, not create_time(): that counts from the boot time in whole
                # seconds, up to a second off the ledger's clock; this is POLL_S off at most.
                if self.samples.worker_started is None:
                    self.samples.worker_started = time.time() - POLL_S / 2
            else:
                parent = self._roles.get(p.ppid(), "worker ?")
                role = f"{parent} pool child"
            self._roles[p.pid] = role
        return self._roles[p.pid]

    def _cpu_of(self, p: psutil.Process, group: str) -> None:
        times = p.cpu_times()
        used = times.user + times.system
        _, first, _ = self._cpu.get(p.pid, (group, used, used))
        self._cpu[p.pid] = (group, first, used)

    def _database(self) -> None:
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT pid, wait_event_type FROM pg_stat_activity "
                "WHERE (datname = current_database() AND pid <> pg_backend_pid()) "
                "OR backend_type = ANY(%s)",
                (list(SERVER_WRITERS),),
            )
            for pid, wait in cur.fetchall():
                with contextlib.suppress(psutil.Error):
                    self._cpu_of(psutil.Process(pid), "database")
                if wait == "Lock":
                    self.samples.lock_waits += 1
                elif wait and wait not in ("Activity", "Client"):  # idle, not waiting on work
                    waits = self.samples.other_waits
                    waits[wait] = waits.get(wait, 0) + 1

    def _wal_lsn(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            return int(cur.fetchone()[0])

    def _redis_mb(self) -> float:
        return float(self.redis.info("memory")["used_memory"]) / 2**20
