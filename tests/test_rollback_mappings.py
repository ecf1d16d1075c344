"""Rollback and an id_mappings the application already had, against real services.

The application's table holds rows of its own (some under the name of a table the migration
touches), and keeps writing rows while a two-worker run goes on. Rollback must delete exactly
the rows the migration added, keep every other one, drop only the indexes it built, and its
verification must compare the table with its state before the run. Judged from outside:
pg_dump's schema and ordered checksums, and the test's own queries.
"""

from __future__ import annotations

import io
import threading

import pytest

from producer import rollback_command, validate_command
from uuid_migrate import db
from uuid_migrate.schema import rollback as undoing

from .helpers import CLINIC_TABLES, database_dump, rows, run_clinic, scalar
from .test_cli_and_batches import uuid_migrate

pytestmark = pytest.mark.e2e

#: Two shapes of the application's table: its own index serves ON CONFLICT (so the migration
#: adds only the one on new_id), or it serves uniqueness of new_id (the migration adds the other).
APP_TABLES = {
    "keyed": """
        CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL,
            new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, old_id));
        CREATE INDEX id_mappings_by_time ON id_mappings (created_at);
    """,
    "bare": """
        CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL,
            new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), note text,
            CONSTRAINT app_new_id_unique UNIQUE (new_id));
        CREATE INDEX id_mappings_old_id_idx ON id_mappings (old_id);
    """,
}
#: (kept by the application, built by the migration and dropped by rollback)
APP_INDEXES = {
    "keyed": ({"id_mappings_pkey", "id_mappings_by_time"}, "id_mappings_new_id_key"),
    "bare": ({"app_new_id_unique", "id_mappings_old_id_idx"}, "id_mappings_table_name_old_id_key"),
}
#: Rows of the application's own: one named like a migrated table with a time in the future
#: (a rule by table name and time would take it), one of a table the migration never heard of.
APP_ROWS = """
INSERT INTO id_mappings (table_name, old_id, new_id, created_at) VALUES
    ('users', 'legacy-1', gen_random_uuid(), now() - interval '30 days'),
    ('users', 'legacy-2', gen_random_uuid(), now() + interval '1 day'),
    ('clinics', 'legacy-clinic', gen_random_uuid(), now() - interval '1 day'),
    ('billing', 'inv-1', gen_random_uuid(), now() - interval '2 days');
"""



def snapshot_taken(conn) -> bool:
    return bool(
        scalar(conn, "SELECT to_regclass('uuid_migration.snapshots') IS NOT NULL")
        and scalar(conn, "SELECT count(*) FROM uuid_migration.snapshots WHERE table_name = 'id_mappings'")
    )


class AppWriter(threading.Thread):
    """The application, adding a mapping row every few milliseconds on its own connection,
    from the moment the run has taken its snapshot of id_mappings."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.written = url, threading.Event(), []

    def run(self) -> None:
        conn = db.connect(self.url, autocommit=True)
        try:
            while not (self.stop.wait(0.01) or snapshot_taken(conn)):
                pass
            while not self.stop.wait(0.01):
                name = "users" if len(self.written) % 2 else "billing"
                with conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO id_mappings (table_name, old_id, new_id) "
                        "VALUES (%s, %s, gen_random_uuid()) RETURNING table_name, old_id, "
                        "new_id::text, created_at",
                        (name, f"app-{len(self.written)}"),
                    )
                    self.written.append(cur.fetchone())
        finally:
            conn.close()


def index_names(conn) -> set[str]:
    return {r[0] for r in rows(conn, "SELECT indexname FROM pg_indexes WHERE tablename = 'id_mappings'")}


def tool_rows(conn) -> int:
    """Mapping rows naming a real row of a migrated table: only the migration writes those."""
    return sum(
        scalar(
            conn,
            f"SELECT count(*) FROM id_mappings m JOIN {t} x ON x.id = m.old_id WHERE m.table_name = %s",
            (t,),
        )
        for t in CLINIC_TABLES
    )


def check(report, name: str, table: str) -> dict:
    return next(c for c in report["checks"] if (c["name"], c["table"]) == (name, table))


@pytest.mark.parametrize("shape", sorted(APP_TABLES))
def test_rollback_restores_the_applications_id_mappings_exactly(clinic, settings, shape, monkeypatch):
    monkeypatch.setattr(undoing, "DELETE_CHUNK", 500)  # several chunks, one holding the kept row
    with clinic.cursor() as cur:
        cur.execute(APP_TABLES[shape])
        cur.execute(APP_ROWS)
    before = database_dump(clinic, settings.database_url)
    app_before = rows(clinic, "SELECT table_name, old_id, new_id::text FROM id_mappings ORDER BY 1, 2")
    kept_indexes, built_index = APP_INDEXES[shape]
    writer = AppWriter(settings.database_url)
    writer.start()
    try:
        run_clinic(settings)
    finally:
        writer.stop.set()
        writer.join()

    migrated_rows = sum(scalar(clinic, f"SELECT count(*) FROM {t}") for t in CLINIC_TABLES)
    assert tool_rows(clinic) == migrated_rows
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.added_mappings") == migrated_rows
    assert index_names(clinic) == kept_indexes | {built_index}
    started, ended = rows(clinic, "SELECT min(started_at), max(finished_at) FROM uuid_migration.batches")[0]
    assert any(started < at < ended for *_, at in writer.written), "the application wrote mid-run"
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.batches WHERE status <> 'succeeded'") == 0
    changed = scalar(clinic, "SELECT min(id) FROM users")
    with clinic.cursor() as cur:  # the application takes over one of the migration's rows
        cur.execute(
            "UPDATE id_mappings SET new_id = gen_random_uuid() "
            "WHERE table_name = 'users' AND old_id = %s",
            (changed,),
        )

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    report = outcome.report
    assert tool_rows(clinic) == 1  # only the changed one, kept as the application's
    assert check(report, "id_mappings_removed", "id_mappings")["actual"] == 0
    kept = check(report, "id_mappings_changed_kept", "id_mappings")
    assert (kept["status"], kept["sample"]) == ("warning", [f"users:{changed}"])
    added = [(t, o, n) for t, o, n, _ in writer.written]
    now = rows(clinic, "SELECT table_name, old_id, new_id::text FROM id_mappings ORDER BY 1, 2")
    assert set(app_before) | set(added) <= set(now)
    assert len(now) == len(app_before) + len(added) + 1
    assert index_names(clinic) == kept_indexes
    restored = check(report, "restored_as_before", "id_mappings")
    assert restored["actual"] == [
        f"data differs: {len(app_before)} rows before, {len(now)} now, checksum differs"
    ]
    assert {c["table"] for c in report["checks"] if c["status"] == "failed"} == {"id_mappings"}
    with clinic.cursor() as cur:  # without what the application wrote since, all is as before
        cur.execute("DELETE FROM id_mappings WHERE old_id LIKE 'app-%%' OR old_id = %s", (changed,))
    assert database_dump(clinic, settings.database_url) == before
    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_an_id_mappings_the_migration_created_is_dropped_and_no_row_is_noted(clinic, settings):
    before = database_dump(clinic, settings.database_url)
    run_clinic(settings)
    assert scalar(clinic, "SELECT count(*) FROM id_mappings") > 0
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.added_mappings") == 0
    recorded = dict(
        rows(
            clinic,
            "SELECT step->>'name', created FROM uuid_migration.ddl_steps "
            "WHERE step->>'kind' = 'mapping_index'",
        )
    )
    assert recorded == {"id_mappings_table_name_old_id_key": False, "id_mappings_new_id_key": False}

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.report["overallStatus"] == "passed"
    assert scalar(clinic, "SELECT to_regclass('public.id_mappings') IS NULL")
    assert database_dump(clinic, settings.database_url) == before


def test_duplicates_that_forbid_the_unique_index_are_refused_before_any_change(clinic, settings):
    with clinic.cursor() as cur:
        cur.execute(APP_TABLES["bare"])
        cur.execute(
            "INSERT INTO id_mappings (table_name, old_id, new_id) SELECT t, o, gen_random_uuid() "
            "FROM (VALUES ('users', 'dup-1'), ('users', 'dup-1'), ('billing', 'x'), "
            "('billing', 'x'), ('billing', 'x'), ('billing', 'once')) AS v(t, o)"
        )
    before = database_dump(clinic, settings.database_url)

    refused = uuid_migrate("run", "--plan", "clinic", DATABASE_URL=settings.database_url)

    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "2 duplicated (table_name, old_id)" in refused.stderr
    assert "(billing,x) 3 times, (users,dup-1) 2 times" in refused.stderr
    assert "once" not in refused.stderr
    assert database_dump(clinic, settings.database_url) == before
    assert scalar(clinic, "SELECT count(*) FROM pg_namespace WHERE nspname = 'uuid_migration'") == 0


def test_a_run_an_earlier_version_began_is_rolled_back_by_its_rule(clinic, settings):
    """An earlier version noted no rows, took no snapshot of id_mappings and recorded no
    index steps: rollback falls back to its rule (rows of the migrated tables created since
    the run began) and says so; the rows from before the run stay."""
    with clinic.cursor() as cur:
        cur.execute(APP_TABLES["keyed"])
        cur.execute(APP_ROWS)
    app_before = rows(clinic, "SELECT table_name, old_id FROM id_mappings ORDER BY 1, 2")
    run_clinic(settings)
    with clinic.cursor() as cur:  # what the earlier version would not have written
        cur.execute("DELETE FROM uuid_migration.added_mappings")
        cur.execute("DELETE FROM uuid_migration.snapshots WHERE table_name = 'id_mappings'")
        cur.execute("DELETE FROM uuid_migration.ddl_steps WHERE step->>'kind' = 'mapping_index'")

    out = io.StringIO()
    outcome = rollback_command.rollback(settings, yes=True, out=out)

    assert "the run began under an earlier version, which noted no rows" in out.getvalue()
    assert outcome.undone[0].startswith("delete the rows of the migrated tables created since")
    assert tool_rows(clinic) == 0
    assert check(outcome.report, "id_mappings_removed", "id_mappings")["actual"] == 0
    left = rows(clinic, "SELECT table_name, old_id FROM id_mappings ORDER BY 1, 2")
    # ('users', 'legacy-2') is dated in the future: the old rule takes it with the run's rows.
    assert left == [r for r in app_before if r != ("users", "legacy-2")]
    assert "id_mappings_new_id_key" in index_names(clinic)  # unrecorded, so left in place
