"""The application's own columns are never overwritten: a target column the tool did not add
is refused before any change, unless the plan adopts it; an adopted uuid_id keeps its values,
is checked first, and a rollback clears only the values the migration wrote."""

from __future__ import annotations

import io

import pytest

from producer import commands, rollback_command, validate_command
from uuid_migrate.errors import PlanError
from uuid_migrate.ledger.states import RunStatus

from .helpers import database_dump, scalar

pytestmark = pytest.mark.e2e

APP = """
CREATE TABLE users (id text PRIMARY KEY, name text);
CREATE TABLE dashboards (id text PRIMARY KEY, user_id text REFERENCES users);
INSERT INTO users SELECT 'u' || i, 'n' || i FROM generate_series(1, 300) i;
INSERT INTO dashboards SELECT 'd' || i, 'u' || (1 + i % 300) FROM generate_series(1, 500) i;
"""
#: A hand migration half done: a third of the users have their uuid_id already.
HALF_DONE = """
ALTER TABLE users ADD COLUMN uuid_id uuid;
UPDATE users SET uuid_id = md5(id)::uuid WHERE right(id, 1) IN ('1', '4', '7');
"""


def _plan(tmp_path, adopt: str = "") -> str:
    path = tmp_path / "plan.toml"
    path.write_text(
        f'[[tables]]\nname = "users"\n{adopt}\n[[tables]]\nname = "dashboards"\n'
        '[[relations]]\ntable = "dashboards"\ncolumn = "user_id"\nparent = "users"\n'
    )
    return str(path)


def test_an_existing_translated_column_of_the_application_is_refused_before_any_change(conn, settings):
    with conn.cursor() as cur:
        cur.execute(APP)
        cur.execute("ALTER TABLE dashboards ADD COLUMN user_uuid_id uuid DEFAULT gen_random_uuid()")
    before = database_dump(conn, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(settings, workers=1, out=io.StringIO())
    report = validate_command.validate(settings)

    assert "dashboards.user_uuid_id already exists and was not added by uuid-migrate" in str(refused.value)
    assert "another uuid_column" in str(refused.value)
    assert database_dump(conn, settings.database_url) == before
    assert report["overallStatus"] == "failed"


def test_a_half_done_uuid_id_is_refused_unless_adopted_and_a_duplicate_is_named(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(APP + HALF_DONE)
        cur.execute("UPDATE users SET uuid_id = (SELECT uuid_id FROM users WHERE id = 'u1') WHERE id = 'u4'")
    before = database_dump(conn, settings.database_url)

    with pytest.raises(PlanError) as not_adopted:
        commands.run(settings, plan_file=_plan(tmp_path), workers=1, out=io.StringIO())
    with pytest.raises(PlanError) as duplicated:
        commands.run(settings, plan_file=_plan(tmp_path, 'adopt = ["uuid_id"]'), workers=1, out=io.StringIO())

    assert 'adopt = ["uuid_id"]' in str(not_adopted.value)
    assert "shared by several rows" in str(duplicated.value) and "u1, u4" in str(duplicated.value)
    assert database_dump(conn, settings.database_url) == before
    assert scalar(conn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0


def test_an_adopted_uuid_id_keeps_its_values_and_rollback_clears_only_the_ones_written(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(APP + HALF_DONE)
    before = database_dump(conn, settings.database_url)
    kept = scalar(
        conn,
        "SELECT md5(string_agg(id || uuid_id::text, ',' ORDER BY id)) FROM users WHERE uuid_id IS NOT NULL",
    )
    adopting = _plan(tmp_path, 'adopt = ["uuid_id"]')

    result = commands.run(settings, plan_file=adopting, workers=2, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    assert scalar(conn, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0
    assert scalar(
        conn,
        "SELECT md5(string_agg(id || uuid_id::text, ',' ORDER BY id)) FROM users "
        "WHERE right(id, 1) IN ('1', '4', '7')",
    ) == kept
    assert scalar(
        conn,
        "SELECT count(*) FROM users u JOIN id_mappings m ON m.table_name = 'users' "
        "AND m.old_id = u.id AND m.new_id = u.uuid_id",
    ) == 300
    assert scalar(
        conn,
        "SELECT count(*) FROM dashboards d JOIN users u ON u.id = d.user_id "
        "WHERE d.user_uuid_id IS DISTINCT FROM u.uuid_id",
    ) == 0

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed"
    assert database_dump(conn, settings.database_url) == before


def test_an_adopted_column_of_the_wrong_type_and_an_id_mappings_of_another_shape_are_refused(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(APP + "ALTER TABLE users ADD COLUMN uuid_id text;")
    before = database_dump(conn, settings.database_url)

    with pytest.raises(PlanError) as wrong_type:
        commands.run(settings, plan_file=_plan(tmp_path, 'adopt = ["uuid_id"]'), out=io.StringIO())
    unchanged = database_dump(conn, settings.database_url) == before
    with conn.cursor() as cur:
        cur.execute(
            "ALTER TABLE users DROP COLUMN uuid_id;"
            "CREATE TABLE id_mappings (table_name text, old_id text, new_id text, created_at timestamptz)"
        )
    before = database_dump(conn, settings.database_url)
    with pytest.raises(PlanError) as shape:
        commands.run(settings, plan_file=_plan(tmp_path), out=io.StringIO())

    assert str(wrong_type.value) == "column users.uuid_id is text, not uuid: it cannot be adopted"
    assert "id_mappings exists but is not a (table_name, old_id, new_id, created_at) table" in str(shape.value)
    assert scalar(conn, "SELECT to_regnamespace('uuid_migration') IS NULL")
    assert unchanged and database_dump(conn, settings.database_url) == before
