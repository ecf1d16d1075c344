"""The transition log: every change of a batch's status, appended with its error and worker.

A trigger on uuid_migration.batches writes it, in the same transaction as the change, so no
code path can move a batch without leaving a line here. Also the ledger columns recovery adds:
split lineage of batches, when work was last sent for a stage, and the run's pause flag.
"""

from __future__ import annotations

from typing import Any

SCHEMA_SQL = """
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


def ensure_schema(cur: Any) -> None:
    """Add what is missing; a ledger that has it all is left alone, since ALTER TABLE and
    CREATE TRIGGER lock the batches table against the workers of a run being resumed."""
    cur.execute(
        "SELECT to_regclass('uuid_migration.transitions') IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM pg_trigger WHERE tgname = 'batches_transition_split' "
        "AND tgrelid = 'uuid_migration.batches'::regclass)"
    )
    if not cur.fetchone()[0]:
        cur.execute(SCHEMA_SQL)


def history(cur: Any, run_id: str, stage: str, batch_no: int) -> list[dict[str, Any]]:
    """A batch's transitions, oldest first."""
    cur.execute(
        "SELECT from_status, to_status, error, attempts, worker, "
        "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
        "FROM uuid_migration.transitions WHERE run_id = %s AND stage = %s AND batch_no = %s "
        "ORDER BY id",
        (run_id, stage, batch_no),
    )
    keys = ("from", "to", "error", "attempts", "worker", "at")
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def last_activity(cur: Any, run_id: str) -> Any:
    """When a batch of the run last changed status, or work was last sent (None: never)."""
    cur.execute(
        "SELECT greatest((SELECT max(at) FROM uuid_migration.transitions WHERE run_id = %s), "
        "(SELECT max(greatest(sent_at, started_at)) FROM uuid_migration.stages "
        "WHERE run_id = %s))",
        (run_id, run_id),
    )
    return cur.fetchone()[0]
