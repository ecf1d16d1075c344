"""The ledger's tables in PostgreSQL: runs, stages, batches and their records.

The ledger is the durable truth of a migration, in a schema of its own so it never mixes with
the application's tables. A batch's `succeeded` is written in the same transaction as its data.
"""

from __future__ import annotations

from typing import Any

from uuid_migrate.identifiers import LEDGER_SCHEMA

__all__ = ["LEDGER_SCHEMA", "ensure_schema", "ensure_worker_parts", "ledger_exists", "table_exists"]

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS uuid_migration.runs (
    run_id      text PRIMARY KEY,
    status      text NOT NULL,
    plan        jsonb NOT NULL,
    batch_size  integer NOT NULL,
    message     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS uuid_migration.stages (
    run_id          text NOT NULL REFERENCES uuid_migration.runs ON DELETE CASCADE,
    stage           text NOT NULL,
    position        integer NOT NULL,
    table_name      text NOT NULL,
    kind            text NOT NULL,
    depends_on      text[] NOT NULL,
    status          text NOT NULL DEFAULT 'pending',
    planned         boolean NOT NULL DEFAULT false,
    total_rows      bigint NOT NULL DEFAULT 0,
    batch_count     integer NOT NULL DEFAULT 0,
    dispatched_upto integer NOT NULL DEFAULT 0,
    started_at      timestamptz,
    finished_at     timestamptz,
    handed_off_at   timestamptz,
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS uuid_migration.batches (
    run_id      text NOT NULL,
    stage       text NOT NULL,
    batch_no    integer NOT NULL,
    lower_bound text,
    upper_bound text,
    planned_rows bigint NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'pending',
    attempts    integer NOT NULL DEFAULT 0,
    rows        bigint,
    started_at  timestamptz,
    finished_at timestamptz,
    worker      text,
    last_error  text,
    PRIMARY KEY (run_id, stage, batch_no),
    FOREIGN KEY (run_id, stage) REFERENCES uuid_migration.stages ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS batches_not_succeeded
    ON uuid_migration.batches (run_id, stage, batch_no) WHERE status <> 'succeeded';
CREATE TABLE IF NOT EXISTS uuid_migration.errors (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    table_name  text NOT NULL,
    row_id      text,
    column_name text NOT NULL DEFAULT '',
    error       text NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS errors_one_per_row
    ON uuid_migration.errors (table_name, row_id, column_name, error) WHERE row_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS errors_by_table ON uuid_migration.errors (table_name, id);
CREATE TABLE IF NOT EXISTS uuid_migration.reports (
    id         bigserial PRIMARY KEY,
    run_id     text,
    kind       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    report     jsonb NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS uuid_migration.ddl_step_order;
CREATE TABLE IF NOT EXISTS uuid_migration.ddl_steps (
    run_id     text NOT NULL,
    position   bigint NOT NULL DEFAULT nextval('uuid_migration.ddl_step_order'),
    step       jsonb NOT NULL,
    created    boolean NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS uuid_migration.snapshots (
    run_id     text NOT NULL REFERENCES uuid_migration.runs ON DELETE CASCADE,
    table_name text NOT NULL,
    definition jsonb NOT NULL,
    checksum   jsonb NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, table_name)
);
"""

#: What recovery added later: split lineage, when work was last sent, the pause flag, and the
#: transition log, written by a trigger in the same transaction as every change of a batch.
_RECOVERY_SQL = """
ALTER TABLE uuid_migration.batches ADD COLUMN IF NOT EXISTS parent_no integer;
ALTER TABLE uuid_migration.batches ADD COLUMN IF NOT EXISTS root_no integer;
ALTER TABLE uuid_migration.stages ADD COLUMN IF NOT EXISTS sent_at timestamptz;
ALTER TABLE uuid_migration.runs ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS uuid_migration.transitions (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    stage       text NOT NULL,
    batch_no    integer NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    error       text,
    attempts    integer NOT NULL,
    worker      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS transitions_by_batch
    ON uuid_migration.transitions (run_id, stage, batch_no, id);
CREATE INDEX IF NOT EXISTS transitions_by_time ON uuid_migration.transitions (run_id, at);
CREATE OR REPLACE FUNCTION uuid_migration.log_transition() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO uuid_migration.transitions
        (run_id, stage, batch_no, from_status, to_status, error, attempts, worker)
    VALUES (NEW.run_id, NEW.stage, NEW.batch_no,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
            CASE WHEN NEW.status IN ('failed', 'pending', 'split') THEN NEW.last_error END,
            NEW.attempts, NEW.worker);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER batches_transition_update AFTER UPDATE OF status
    ON uuid_migration.batches FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION uuid_migration.log_transition();
CREATE OR REPLACE TRIGGER batches_transition_split AFTER INSERT
    ON uuid_migration.batches FOR EACH ROW
    WHEN (NEW.parent_no IS NOT NULL) EXECUTE FUNCTION uuid_migration.log_transition();
"""

#: Steps are told apart by what they are; `position` is only the order they were applied in,
#: from a sequence, so concurrent index builds of one run never collide on it.
_STEP_ORDER_SQL = """
CREATE SEQUENCE IF NOT EXISTS uuid_migration.ddl_step_order;
SELECT setval('uuid_migration.ddl_step_order',
              (SELECT coalesce(max(position), 0) + 1 FROM uuid_migration.ddl_steps));
ALTER TABLE uuid_migration.ddl_steps ALTER COLUMN position TYPE bigint,
    ALTER COLUMN position SET DEFAULT nextval('uuid_migration.ddl_step_order');
"""

#: The rows a migration added to an id_mappings that was there before it (see
#: `added_mappings`): keyed as id_mappings is, with the inserting transaction of each row.
_ADDED_MAPPINGS_SQL = """
CREATE TABLE IF NOT EXISTS uuid_migration.added_mappings (
    run_id     text NOT NULL,
    table_name text NOT NULL,
    old_id     text NOT NULL,
    row_xmin   xid NOT NULL,
    PRIMARY KEY (run_id, table_name, old_id)
);
"""


#: The UUIDs batches drew into an adopted uuid_id (see `generated_values`).
_GENERATED_VALUES_SQL = """
CREATE TABLE IF NOT EXISTS uuid_migration.generated_values (
    run_id     text NOT NULL,
    table_name text NOT NULL,
    old_id     text NOT NULL,
    new_id     uuid NOT NULL,
    PRIMARY KEY (run_id, table_name, old_id)
);
"""

#: A run's row budget (see `throttles`).
_THROTTLES_SQL = """
CREATE TABLE IF NOT EXISTS uuid_migration.throttles (
    run_id              text PRIMARY KEY,
    max_rows_per_second integer NOT NULL CHECK (max_rows_per_second >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
"""

#: The key in the middle of each batch as planned, from the planner's walk: a batch cut before
#: it runs is cut there (see `execution.split`). A table of its own, not a column of `batches`:
#: adding one would lock `batches` against the workers of a run resumed from an older ledger.
_BATCH_MIDDLES_SQL = """
CREATE TABLE IF NOT EXISTS uuid_migration.batch_middles (
    run_id       text NOT NULL,
    stage        text NOT NULL,
    batch_no     integer NOT NULL,
    middle_bound text NOT NULL,
    PRIMARY KEY (run_id, stage, batch_no)
);
"""

#: When a stage handed its table over to the stages that depend on it: batches and final
#: sweep done, its unique index possibly still building (see `progression.closing`).
_HANDOFF_SQL = "ALTER TABLE uuid_migration.stages ADD COLUMN IF NOT EXISTS handed_off_at timestamptz"

#: Ledger tables later versions added, created where a ledger lacks them.
_LATER_TABLES = {
    "added_mappings": _ADDED_MAPPINGS_SQL,
    "batch_middles": _BATCH_MIDDLES_SQL,
    "generated_values": _GENERATED_VALUES_SQL,
    "throttles": _THROTTLES_SQL,
}


def ensure_schema(cur: Any) -> None:
    """Create what is missing, part by part. A part that is there is left alone: ALTER TABLE
    and CREATE TRIGGER would lock the batches table against the workers of a resumed run."""
    # CREATE SCHEMA IF NOT EXISTS asks for CREATE on the database even when the schema is there
    # (a DBA may have made it for a role without that right)
    cur.execute("SELECT to_regnamespace('uuid_migration') IS NULL")
    if cur.fetchone()[0]:
        cur.execute("CREATE SCHEMA uuid_migration")
    if not ledger_exists(cur):
        cur.execute(_SCHEMA_SQL)
    if not _has_recovery(cur):
        cur.execute(_SCHEMA_SQL)
        cur.execute(_RECOVERY_SQL)
    ensure_worker_parts(cur)


def ensure_worker_parts(cur: Any) -> None:
    """What the batches and index builds of this version write to and a ledger begun by an
    older version lacks; workers call this too, so they can take over such a run."""
    ensure_step_order(cur)
    cur.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
        "'uuid_migration.stages'::regclass AND attname = 'handed_off_at' AND NOT attisdropped)"
    )
    if cur.fetchone()[0]:
        cur.execute(_HANDOFF_SQL)
    for name, create in _LATER_TABLES.items():
        if not table_exists(cur, name):
            cur.execute(create)


def ensure_step_order(cur: Any) -> None:
    """The sequence that orders step records; workers call this too (only `ddl_steps` is
    touched), so a run begun by an older version can record its index builds."""
    cur.execute("SELECT to_regclass('uuid_migration.ddl_step_order') IS NOT NULL")
    if not cur.fetchone()[0]:
        cur.execute(_STEP_ORDER_SQL)


def _has_recovery(cur: Any) -> bool:
    cur.execute(
        "SELECT to_regclass('uuid_migration.transitions') IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM pg_trigger WHERE tgname = 'batches_transition_split' "
        "AND tgrelid = 'uuid_migration.batches'::regclass)"
    )
    return bool(cur.fetchone()[0])


def ledger_exists(cur: Any) -> bool:
    cur.execute("SELECT to_regclass('uuid_migration.runs') IS NOT NULL")
    return bool(cur.fetchone()[0])


def table_exists(cur: Any, table: str) -> bool:
    """A ledger table by its bare name (a ledger written by an older version may lack one)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{LEDGER_SCHEMA}.{table}",))
    return bool(cur.fetchone()[0])
