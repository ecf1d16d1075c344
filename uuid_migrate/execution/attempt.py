"""One attempt of a batch: its data change and its ledger row commit together or not at all."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2
from psycopg2 import errors as pg_errors

from uuid_migrate import db
from uuid_migrate.errors import TriggersWouldFire
from uuid_migrate.execution.statement import batch_statement
from uuid_migrate.identifiers import regclass_text
from uuid_migrate.ledger import batches, runs
from uuid_migrate.ledger.batches import Batch
from uuid_migrate.ledger.states import SETTLED_BATCH_STATES, BatchStatus
from uuid_migrate.plan.model import MAPPING_TABLE, Plan, written_columns
from uuid_migrate.plan.plan_data import from_dict
from uuid_migrate.plan.stages import Stage, stages
from uuid_migrate.schema import app_triggers
from uuid_migrate.schema.triggers import BATCH_SETTING

#: Plans parsed once per process and run, since every batch of a run shares one.
_PLANS: dict[str, tuple[Plan, dict[str, Stage]]] = {}
#: Whether the role of a connection string may set session_replication_role.
_SILENCING: dict[str, bool] = {}
#: The application's triggers that fire on a table's batches, by (dsn, run, table).
_FIRING: dict[tuple[str, str, str], list[str]] = {}
#: Stages (run, stage) whose batch statement found an old id mapped already in this process.
#: While the application writes, its rows carry the mapping the tool's trigger gave them and
#: come back into later batches for their translations: nearly every batch would fail
#: unguarded and run twice, so after the first the stage's batches here start guarded.
_GUARDED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class BatchOutcome:
    """What a batch did: succeeded, skipped (already done), failed, split (into halves run
    after it), cancelled (the run is not active) or unknown (the ledger was unreachable)."""

    run_id: str
    stage: str
    table: str
    batch_no: int
    status: str
    key_range: str = ""
    rows: int = 0
    planned_rows: int = 0
    mappings: int = 0
    orphans: int = 0
    attempt: int = 0
    duration_ms: int = 0
    #: Of that, the successful try's transaction: the batch's work, without claims or waits.
    work_ms: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_of_run(cur: Any, run_id: str) -> tuple[Plan, dict[str, Stage]] | None:
    if run_id not in _PLANS:
        run = runs.get_run(cur, run_id)
        if run is None:
            return None
        plan = from_dict(run["plan"], stored=True)
        _PLANS[run_id] = (plan, {s.name: s for s in stages(plan)})
    return _PLANS[run_id]


@dataclass(frozen=True)
class Claim:
    """A batch stamped `running` for this attempt, and the status it had before."""

    batch: Batch
    previous: str
    #: The rows the batch held when it was planned (its halves': when it was split).
    planned_rows: int = 0


def claim(conn: Any, run_id: str, stage: str, batch_no: int, worker: str) -> Claim | None:
    """Stamp the batch running (its own commit, so the attempt shows); None if already done.

    A `split` batch is returned unclaimed (previous == split): its halves carry the work.
    The commit does not wait for its WAL to reach disk: the attempt's own commit, later in
    the same WAL, does; a stamp lost with the server only counts one attempt fewer.
    """
    with conn.cursor() as cur:
        locked = batches.lock_with_planned_rows(
            cur, run_id, stage, batch_no, "SET LOCAL synchronous_commit = off; "
        )
        if locked is None or locked[0].status == BatchStatus.SUCCEEDED:
            conn.commit()
            return None
        found, planned = locked
        if found.status == BatchStatus.SPLIT:
            conn.commit()
            return Claim(found, BatchStatus.SPLIT, planned)
        claimed = batches.start_attempt(cur, found, worker)
    conn.commit()
    return Claim(claimed, found.status, planned)


def attempt(
    conn: Any, plan: Plan, stage: Stage, batch: Batch, statement_timeout_ms: int,
    lock_timeout_ms: int = 0,
) -> tuple[int, int, int, int] | None:  # fmt: skip
    """One try of the batch's transaction: (rows, mappings, orphans, planned), or None when
    another delivery finished it first. Raises the database's error; the caller decides (a
    lock timeout splits the batch or tries it again later).

    Four round trips besides BEGIN and COMMIT: the fence with the batch's lock, the
    settings, the statement, the ledger row."""
    with conn.cursor() as cur:
        # Serialises two deliveries of the same batch: the second waits, then sees it done.
        found = batches.lock_unless_fenced(
            cur, batch, "SET LOCAL statement_timeout = %(timeout)s; ",
            {"timeout": statement_timeout_ms},
        )  # fmt: skip
        if found is None or found[0].status in SETTLED_BATCH_STATES:
            conn.rollback()
            return None
        planned = found[1]
        silenced = may_silence(conn, cur, plan, stage.table, batch.run_id)
        rows, mappings, orphans = _batch_statement(cur, plan, stage, batch, lock_timeout_ms, silenced)
        # The lock timeout ends with the statement; the ledger's own transition trigger must
        # see the ledger update.
        after = "SET LOCAL lock_timeout = 0; " + (_UNSILENCE if silenced else "")
        batches.succeed(cur, batch, rows, after)
    conn.commit()
    return rows, mappings, orphans, planned


#: Where the batch statement can be taken back to, to try it again guarded.
_SAVEPOINT = "batch_statement"
_SILENCE = "SET LOCAL session_replication_role = replica; "
_UNSILENCE = "SET LOCAL session_replication_role = DEFAULT; "


def _batch_statement(
    cur: Any, plan: Plan, stage: Stage, batch: Batch, lock_timeout_ms: int, silenced: bool
) -> tuple[int, int, int]:
    """The batch's statement, unguarded first (statement.py); an old id mapped already takes
    it back to the savepoint and runs it guarded, as the stage's later batches here are
    (`_GUARDED`)."""
    guarded = (batch.run_id, stage.name) in _GUARDED
    cur.execute(
        (_SILENCE if silenced else "") + _SETTINGS + ("" if guarded else f"; SAVEPOINT {_SAVEPOINT}"),
        (BATCH_SETTING, f"{int(lock_timeout_ms)}ms"),
    )
    try:
        cur.execute(batch_statement(plan, stage, batch.run_id, batch.key_range, guarded=guarded))
    except pg_errors.UniqueViolation as exc:
        if guarded or exc.diag.table_name != MAPPING_TABLE:
            raise
        cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        if not _old_id_taken(cur, exc):
            raise  # a drawn UUID mapped already (new_id): the retry draws fresh ones
        _GUARDED.add((batch.run_id, stage.name))
        cur.execute(batch_statement(plan, stage, batch.run_id, batch.key_range))
    rows, mappings, orphans = cur.fetchone()
    return rows, mappings, orphans


def _old_id_taken(cur: Any, exc: pg_errors.UniqueViolation) -> bool:
    """The violated index is the unique (table_name, old_id), whatever its name (an
    id_mappings the application had may name it otherwise), read from the catalog: the
    message's wording depends on the server's language."""
    cur.execute(_INDEX_COLUMNS, (exc.diag.schema_name, exc.diag.constraint_name))
    return cur.fetchone()[0] == ["table_name", "old_id"]


_INDEX_COLUMNS = """
SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_class c
JOIN pg_namespace s ON s.oid = c.relnamespace JOIN pg_index i ON i.indexrelid = c.oid
CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE s.nspname = %s AND c.relname = %s
"""


#: The batch statement's settings, for the transaction: the tool's own triggers leave its
#: writes alone (also where session_replication_role cannot be set); it waits at most the
#: lock timeout for a row the application holds, so the application never waits long behind
#: it; and it is not compiled (JIT): at 10,000 rows its estimated cost passes the threshold,
#: and compiling took 25-40 ms of a 300 ms batch, more than it saved.
_SETTINGS = (
    "SELECT set_config(%s, 'on', true), set_config('lock_timeout', %s, true), "
    "set_config('jit', 'off', true)"
)


def run_statement(cur: Any, statement: Any, lock_timeout_ms: int) -> tuple[int, int, int]:
    """A batch statement (guarded) with the batch's settings (`_SETTINGS`); the lock timeout
    ends with the statement (the ledger row after it is the batch's own)."""
    cur.execute(_SETTINGS, (BATCH_SETTING, f"{int(lock_timeout_ms)}ms"))
    cur.execute(statement)
    rows, mappings, orphans = cur.fetchone()
    cur.execute("SET LOCAL lock_timeout = 0")
    return rows, mappings, orphans


def silence_user_triggers(conn: Any, cur: Any, plan: Plan, table: str, run_id: str) -> bool:
    """`may_silence`, and if so `session_replication_role = replica` for the transaction."""
    if may_silence(conn, cur, plan, table, run_id):
        cur.execute(_SILENCE)
        return True
    return False


def may_silence(conn: Any, cur: Any, plan: Plan, table: str, run_id: str) -> bool:
    """Whether the batch runs with `session_replication_role = replica`, as where the role may
    set it: the application's triggers (an `updated_at` stamp, an audit log) never see the
    backfill, which only fills the migration's own columns. Constraint triggers are silenced
    too, and need not run: a batch never changes a key or a foreign-key column.

    Where it may not (a worker under another role than the producer's, a privilege revoked
    since the run began), a trigger that would fire stops the batch, unless the run accepted
    them."""
    if conn.dsn not in _SILENCING:
        _SILENCING[conn.dsn] = db.can_set_replication_role(cur)
    if _SILENCING[conn.dsn]:
        return True
    if not plan.allow_user_triggers:
        firing = _firing(cur, conn.dsn, plan, table, run_id)
        if firing:
            raise TriggersWouldFire(
                f"{', '.join(firing)} would fire on this batch: this worker's role may not set "
                "session_replication_role, and the run did not accept the application's "
                "triggers (run --allow-triggers)"
            )
    return False


def _firing(cur: Any, dsn: str, plan: Plan, table: str, run_id: str) -> list[str]:
    """The triggers and rules that would fire on the table's batches (looked up once)."""
    key = (dsn, run_id, table)
    if key not in _FIRING:
        relation = regclass_text(*plan.where(table))
        found = app_triggers.on_writes(cur, relation, "UPDATE", written_columns(plan, table), False)
        mappings = regclass_text(plan.schema, MAPPING_TABLE)
        found += app_triggers.on_writes(cur, mappings, "INSERT", set(), False)
        _FIRING[key] = [f.describe() for f in found if f.fires]
    return _FIRING[key]


def mark_retrying(conn: Any, batch: Batch, message: str) -> None:
    """Back to pending with the error, so the ledger and transition log show every try."""
    with conn.cursor() as cur:
        batches.back_to_pending(cur, batch, message)
    conn.commit()


def mark_failed(conn: Any, batch: Batch, table: str, message: str) -> None:
    """Failed for good (until `retry`), with its error record and the range."""
    with conn.cursor() as cur:
        batches.fail(cur, batch, table, message)
    conn.commit()


def rollback_quietly(conn: Any) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.rollback()
