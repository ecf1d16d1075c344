"""Applying and reversing schema steps on a live database without queueing behind it.

Each change takes its lock with `lock_timeout`: if a long transaction holds the table, it
gives up at once (so the application's queries never queue behind our waiting ALTER), backs
off and tries again, and after a few tries says who is in the way. Every forward step goes
through `apply_step`, which also records it, in the same transaction where there is one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2

from uuid_migrate import retrying
from uuid_migrate.errors import LockBusy, MigrateError
from uuid_migrate.ledger import runs, step_records
from uuid_migrate.schema.steps import (
    MappingIndex,
    PartitionedUniqueIndex,
    Step,
    UniqueIndex,
    step_from_dict,
    step_to_dict,
)

#: Tries to take a DDL lock before giving up; each waits lock_timeout, then backs off.
DDL_LOCK_ATTEMPTS = 5
#: First and longest pause between two tries (full jitter between): time for the blocking
#: transaction to finish.
DDL_BACKOFF_MS = 500
DDL_BACKOFF_MAX_MS = 8000
#: Pause between two tries of an advisory lock held by an index build.
ADVISORY_POLL_S = 0.2
#: Builds of a partitioned index before giving up on it being valid.
PARTITIONED_INDEX_PASSES = 3


def run_ddl(
    conn: Any,
    work: Callable[[Any], None],
    lock_timeout_ms: int,
    target: str,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """`work(cursor)` in one transaction (or, on an autocommit connection, statement by
    statement), tried again after a lock timeout (0.5 s, 1 s, 2 s, 4 s apart)."""
    for attempt in range(1, DDL_LOCK_ATTEMPTS + 1):
        try:
            with conn.cursor() as cur:
                scope = "" if conn.autocommit else "LOCAL "
                cur.execute(f"SET {scope}lock_timeout = %s", (lock_timeout_ms,))
                work(cur)
            if not conn.autocommit:
                conn.commit()
            return
        except Exception as exc:
            if not conn.autocommit:
                conn.rollback()
            if not retrying.lock_timed_out(exc):
                raise
            if not retrying.should_retry(retrying.SPLIT, attempt, DDL_LOCK_ATTEMPTS):
                break
            sleep(retrying.compute_backoff(attempt, DDL_BACKOFF_MS, DDL_BACKOFF_MAX_MS, _ceiling) / 1000)
    raise LockBusy(
        f"could not lock {target} within {lock_timeout_ms} ms after {DDL_LOCK_ATTEMPTS} tries: "
        "a long transaction holds it; run again when it has finished"
    )


def _ceiling() -> float:
    """No jitter: one producer backs off, not a crowd, and the full wait gives the blocking
    transaction the most time to end."""
    return 1.0


def created_by_live_runs(cur: Any) -> set[str]:
    """The identities of the steps that runs not rolled back created: what is the tool's."""
    live = [r["run_id"] for r in runs.live_runs(cur)]
    if not live:
        return set()
    return {step_from_dict(d).identity() for d, created in step_records.of_runs(cur, live) if created}


def apply_step(
    conn: Any, run_id: str, step: Step, lock_timeout_ms: int, wait_for_lock: bool = True
) -> bool | None:
    """Apply one forward step for the run and record it; False (nothing done) once a
    rollback has fenced the run; None (nothing done) when `wait_for_lock` is False and
    another session holds a concurrent step's advisory lock.

    Only a step that creates its object runs its forward SQL: what was there already (a
    column, an index the application had) is taken as it is and recorded as not created.
    A step that `replaces` its object (the tool's triggers, from an earlier run) runs it
    always, and is recorded as created only when the object was absent.

    A concurrent step (a unique index) runs outside a transaction (the connection is
    switched to autocommit for it, and back), under the index's advisory lock, which a
    rollback takes too: either the build ends before the rollback looks, or it sees the
    rollback's fence and builds nothing. It waits without a lock timeout: its lock blocks
    neither reads nor writes, and what it waits for is old snapshots to end, which retrying
    would only make it wait for again.
    """
    applied = False

    def work(cur: Any) -> None:
        nonlocal applied
        if runs.run_is_fenced(cur, run_id):
            return
        created = _created_by_this_run(cur, step)
        if created or getattr(step, "replaces", False):
            _forward(cur, step)
        step_records.record(cur, run_id, step_to_dict(step), created)
        applied = True

    if not step.concurrent:
        run_ddl(conn, work, lock_timeout_ms, step.describe())
        return applied
    key = step.lock_key()
    with _autocommit(conn), conn.cursor() as cur, advisory_lock(cur, key, wait_for_lock) as held:
        if not held:
            return None
        run_ddl(conn, work, 0, step.describe())
    return applied


def discard_failed_build(conn: Any, index: UniqueIndex | PartitionedUniqueIndex) -> None:
    """Drop what a failed concurrent build left (an invalid index, a partition's index not
    attached): the build is not recorded, so nothing else would ever drop it."""
    with _autocommit(conn), conn.cursor() as cur, advisory_lock(cur, index.lock_key()):
        for statement in index.leftovers(cur):
            cur.execute(statement)


@contextlib.contextmanager
def _autocommit(conn: Any) -> Iterator[None]:
    """The connection in autocommit for a while (it must be idle), then as it was."""
    before = conn.autocommit
    conn.autocommit = True
    try:
        yield
    finally:
        if not conn.closed:
            conn.autocommit = before


def _forward(cur: Any, step: Step) -> None:
    """The step's statement, or a partitioned index's statements one by one; those are read
    from the catalog again if a partition appeared meanwhile and left the index invalid."""
    if isinstance(step, MappingIndex):
        _build_mapping_index(cur, step)
        return
    if not isinstance(step, PartitionedUniqueIndex):
        cur.execute(step.forward())
        return
    for _ in range(PARTITIONED_INDEX_PASSES):
        for statement in step.forward(cur):
            cur.execute(statement)
        if step.validity(cur):
            return
    raise MigrateError(f"{step.describe()} is still invalid after it was built")


def _build_mapping_index(cur: Any, step: MappingIndex) -> None:
    """A failed build (a duplicate the application wrote meanwhile) leaves an invalid index
    under the step's name, which was free before: it is dropped, so none of it stays."""
    try:
        cur.execute(step.forward())
    except psycopg2.Error:
        with contextlib.suppress(psycopg2.Error):
            if step.validity(cur) is False:
                cur.execute(step.reverse())
        raise


def _created_by_this_run(cur: Any, step: Step) -> bool:
    """Whether the step's object is ours to drop later; an invalid index left by a crashed
    build is dropped first and built again (a partitioned one is completed: its valid
    partition indexes are kept)."""
    if isinstance(step, PartitionedUniqueIndex):
        return step.validity(cur) is not True
    if isinstance(step, UniqueIndex | MappingIndex) and step.validity(cur) is False:
        cur.execute(step.reverse())
    return not step.exists(cur)


def reverse_step(conn: Any, index_conn: Any, step: Step, lock_timeout_ms: int) -> None:
    """Drop what the step created; a concurrent one on the autocommit connection."""
    target = index_conn if step.concurrent else conn
    run_ddl(target, lambda cur: cur.execute(step.reverse()), lock_timeout_ms, step.describe())


@contextlib.contextmanager
def advisory_lock(cur: Any, key: int, wait: bool = True) -> Iterator[bool]:
    """A session advisory lock, taken by polling: a blocked `pg_advisory_lock` keeps a
    snapshot while it waits, which a CREATE INDEX CONCURRENTLY holding the lock would wait
    for in turn. Yields whether it is held: without `wait`, False when another session has it."""
    while True:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if cur.fetchone()[0]:
            break
        if not wait:
            yield False
            return
        time.sleep(ADVISORY_POLL_S)
    try:
        yield True
    finally:
        cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
