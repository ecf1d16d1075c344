"""An application for the online benchmark: threads writing and reading the clinic schema.

Each thread, on its own connection (autocommit, as most applications run), loops over four
operations in turn: insert a user, insert a dashboard of a random user, update a random user,
read a random dashboard. Keys are `<prefix>_` + a random hex, so new rows fall in every key
range a migration walks. Each thread paces itself (one operation per `interval_s`), as an
application serving requests does, rather than saturating the 2 cores by itself.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from uuid_migrate import db

#: What the workload calls itself in pg_stat_activity (the tool's throttle sees it as the
#: application, as any session that is not the tool's own).
APPLICATION_NAME = "bench-application"
OPERATIONS = ("insert user", "insert dashboard", "update user", "read dashboard")
#: Hard bound of one workload: it stops after this long even if nobody stops it.
MAX_SECONDS = 900


@dataclass
class Timings:
    """(start, seconds) of every operation, by operation; the errors that stopped a thread."""

    ops: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {op: [] for op in OPERATIONS}
    )
    errors: list[str] = field(default_factory=list)

    def latencies(self, start: float, end: float) -> list[float]:
        """Every operation's seconds that began within [start, end), sorted."""
        return sorted(s for op in self.ops.values() for t, s in op if start <= t < end)

    def writes(self, start: float, end: float) -> int:
        return sum(
            1 for name in ("insert user", "insert dashboard", "update user")
            for t, _ in self.ops[name] if start <= t < end
        )  # fmt: skip


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


class Workload:
    """`threads` application threads against `url`, until `stop()` (or MAX_SECONDS)."""

    def __init__(self, url: str, threads: int = 4, interval_s: float = 0.005) -> None:
        self.url = url
        self.interval_s = interval_s
        self.timings = Timings()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def start(self) -> Workload:
        with db.connection(self.url) as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM users")
            self.users = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT id FROM dashboards")
            self.dashboards = [r[0] for r in cur.fetchall()]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Timings:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.timings

    def _run(self, n: int) -> None:
        rng = random.Random(n)
        deadline = time.monotonic() + MAX_SECONDS
        try:
            conn = psycopg_connect(self.url)
        except Exception as exc:  # reported by the benchmark
            self.timings.errors.append(repr(exc))
            return
        try:
            with conn.cursor() as cur:
                turn = n
                while not self._stop.is_set() and time.monotonic() < deadline:
                    began = time.monotonic()
                    op = OPERATIONS[turn % len(OPERATIONS)]
                    self._one(cur, rng, op)
                    took = time.monotonic() - began
                    with self._lock:
                        self.timings.ops[op].append((began, took))
                    turn += 1
                    self._stop.wait(max(0.0, self.interval_s - took))
        except Exception as exc:  # reported by the benchmark
            self.timings.errors.append(repr(exc))
        finally:
            conn.close()

    def _one(self, cur: Any, rng: random.Random, op: str) -> None:
        key = uuid.uuid4().hex
        if op == "insert user":
            cur.execute(
                "INSERT INTO users (id, email, name) VALUES (%s, 'app@example.com', 'app')",
                (f"usr_{key}",),
            )
            self.users.append(f"usr_{key}")  # list.append is atomic under the GIL
        elif op == "insert dashboard":
            cur.execute(
                "INSERT INTO dashboards (id, user_id, title) VALUES (%s, %s, 'app')",
                (f"dsh_{key}", rng.choice(self.users)),
            )
            self.dashboards.append(f"dsh_{key}")
        elif op == "update user":
            cur.execute("UPDATE users SET name = %s WHERE id = %s", (key, rng.choice(self.users)))
        else:
            cur.execute("SELECT title FROM dashboards WHERE id = %s", (rng.choice(self.dashboards),))
            cur.fetchall()


def psycopg_connect(url: str) -> Any:
    conn = db.connect(url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET application_name = %s", (APPLICATION_NAME,))
    return conn
