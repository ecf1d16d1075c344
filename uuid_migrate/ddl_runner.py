"""Running schema changes on a live database without queueing behind long transactions.

Each change takes its lock with `lock_timeout`; if a long transaction holds the table, it gives
up at once (so the application's queries never queue behind our waiting ALTER), backs off and
tries again, and after a few tries says who is in the way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2.errors

from uuid_migrate.errors import LockBusy

#: Tries to take a DDL lock before giving up; each waits lock_timeout, then backs off.
DDL_LOCK_ATTEMPTS = 5
#: Longest pause between two tries, in seconds.
MAX_BACKOFF_S = 8.0


def lock_backoff_s(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, ... capped: time for the blocking transaction to finish."""
    return min(2**attempt * 0.5, MAX_BACKOFF_S)


def run_ddl(conn: Any, work: Callable[[Any], None], lock_timeout_ms: int, target: str) -> None:
    """`work(cursor)` in one transaction (or, on an autocommit connection, statement by statement)."""
    for attempt in range(DDL_LOCK_ATTEMPTS):
        try:
            with conn.cursor() as cur:
                scope = "" if conn.autocommit else "LOCAL "
                cur.execute(f"SET {scope}lock_timeout = %s", (lock_timeout_ms,))
                work(cur)
            if not conn.autocommit:
                conn.commit()
            return
        except psycopg2.errors.LockNotAvailable:
            if not conn.autocommit:
                conn.rollback()
            time.sleep(lock_backoff_s(attempt))
    raise LockBusy(
        f"could not lock {target} within {lock_timeout_ms} ms after {DDL_LOCK_ATTEMPTS} tries: "
        "a long transaction holds it; run again when it has finished"
    )


#: Pause between two tries of an advisory lock held by an index build.
ADVISORY_POLL_S = 0.2


def take_advisory_lock(cur: Any, key: int) -> None:
    """A session advisory lock, by polling: a blocked `pg_advisory_lock` keeps a snapshot while
    it waits, which a CREATE INDEX CONCURRENTLY holding the lock would wait for in turn."""
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if cur.fetchone()[0]:
            return
        time.sleep(ADVISORY_POLL_S)
