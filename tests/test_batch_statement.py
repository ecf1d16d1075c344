"""The batch statement's mapping insert runs unguarded (no ON CONFLICT) and falls back to its
guarded form when an old id is mapped already: the batch still succeeds, the mapping found
there is left as it was, and validation names the row whose mapping disagrees."""

from __future__ import annotations

from tests.helpers import rows, run_clinic, scalar

APP_UUID = "00000000-0000-4000-8000-000000000001"


def test_a_batch_meeting_a_mapping_already_there_keeps_it_and_succeeds(clinic, settings):
    with clinic.cursor() as cur:  # the application's id_mappings maps one user already
        cur.execute(
            "CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL, "
            "new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (table_name, old_id))"
        )
        cur.execute(
            "INSERT INTO id_mappings (table_name, old_id, new_id) "
            "SELECT 'users', min(id), %s FROM users RETURNING old_id",
            (APP_UUID,),
        )
        taken = cur.fetchone()[0]

    result = run_clinic(settings)

    assert rows(clinic, "SELECT DISTINCT status FROM uuid_migration.batches") == [("succeeded",)]
    assert scalar(clinic, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0
    assert rows(
        clinic, "SELECT old_id, new_id::text FROM id_mappings WHERE new_id = %s", (APP_UUID,)
    ) == [(taken, APP_UUID)]
    assert scalar(clinic, "SELECT count(*) FROM id_mappings WHERE table_name = 'users'") == scalar(
        clinic, "SELECT count(*) FROM users"
    )
    report = scalar(clinic, "SELECT report FROM uuid_migration.reports ORDER BY id DESC LIMIT 1")
    agree = next(
        c for c in report["checks"] if c["name"] == "id_mappings_agree" and c["table"] == "users"
    )
    assert (result.status, agree["actual"], agree["sample"]) == ("failed", 1, [taken])
