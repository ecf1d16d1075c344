"""The batch statement's mapping insert runs unguarded (no ON CONFLICT) and falls back to its
guarded form when an old id is mapped already: the batch still succeeds, the mapping found
there is left as it was, and validation names the row whose mapping disagrees."""

from __future__ import annotations

import io

import psycopg2
from psycopg2.extras import LoggingConnection

from tests.helpers import rows, run_clinic, scalar
from tests.recovery_support import plan_only
from uuid_migrate.execution import attempt

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


def test_after_one_mapped_old_id_a_workers_later_batches_of_the_stage_start_guarded(
    clinic, settings
):
    """While the application writes, its rows come back into later batches with the mapping
    the tool's trigger gave them: each batch would otherwise run its statement twice."""
    run_id = plan_only(clinic, settings)  # batches of settings.batch_size, 50 rows
    ranges = rows(
        clinic,
        "SELECT batch_no, lower_bound, upper_bound FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = 'users' ORDER BY batch_no LIMIT 2",
        (run_id,),
    )
    taken = []
    for _, lower, upper in ranges:  # one old id of each batch's range is mapped already
        taken += [r[0] for r in rows(
            clinic,
            "INSERT INTO id_mappings (table_name, old_id, new_id) SELECT 'users', max(id), "
            "gen_random_uuid() FROM users WHERE id > coalesce(%s, '') AND id <= %s "
            "RETURNING old_id",
            (lower, upper),
        )]  # fmt: skip

    log = io.StringIO()
    work = psycopg2.connect(settings.database_url, connection_factory=LoggingConnection)
    work.initialize(log)
    statements = []
    try:
        for batch_no, _, _ in ranges:
            log.seek(0)
            log.truncate()
            claimed = attempt.claim(work, run_id, "users", batch_no, "test")
            with work.cursor() as cur:
                found_plan, stage_map = attempt.plan_of_run(cur, run_id)
            work.commit()
            done = attempt.attempt(work, found_plan, stage_map["users"], claimed.batch, 60_000)
            assert done is not None and done[0] == 50 and done[1] == 49, done
            statements.append(log.getvalue())
    finally:
        work.close()

    first, second = statements
    assert first.count("WITH upd AS") == 2 and "ROLLBACK TO SAVEPOINT" in first
    assert first.split("WITH upd AS")[1].count("ON CONFLICT (table_name, old_id)") == 0
    assert second.count("WITH upd AS") == 1 and "SAVEPOINT" not in second
    assert "ON CONFLICT (table_name, old_id) DO NOTHING" in second
    kept = rows(clinic, "SELECT old_id FROM id_mappings m JOIN users u ON u.id = m.old_id "
                "WHERE m.table_name = 'users' AND m.new_id <> u.uuid_id ORDER BY 1")  # fmt: skip
    assert [k for (k,) in kept] == sorted(taken)
