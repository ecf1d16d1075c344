"""Features production databases have, met before any change: the application's triggers
never see the backfill (or the run refuses, naming them), row-level security never yields a
partial success, a publication without replica identity is refused up front, and a missing
privilege is named. A refusal leaves the database exactly as it was."""

from __future__ import annotations

import io
import secrets
from dataclasses import replace

import psycopg2
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from producer import commands, rollback_command, validate_command
from uuid_migrate import retrying
from uuid_migrate.errors import PlanError
from uuid_migrate.ledger.states import RunStatus

from .helpers import database_dump, scalar, table_checksum

pytestmark = pytest.mark.e2e

APP = """
CREATE TABLE users (id text PRIMARY KEY, name text, updated_at timestamptz NOT NULL
                    DEFAULT '2020-01-01');
CREATE TABLE dashboards (id text PRIMARY KEY, user_id text REFERENCES users, title text,
                         updated_at timestamptz NOT NULL DEFAULT '2020-01-01');
CREATE TABLE audit (n bigserial PRIMARY KEY, tbl text, at timestamptz DEFAULT now());
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN NEW.updated_at = now(); RETURN NEW; END $$;
CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN INSERT INTO audit (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TRIGGER users_audit AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audited();
CREATE TRIGGER dashboards_touch BEFORE UPDATE ON dashboards FOR EACH ROW EXECUTE FUNCTION touch();
-- fires only on updates of title: the migration's updates never set it
CREATE TRIGGER dashboards_title AFTER UPDATE OF title ON dashboards
    FOR EACH ROW EXECUTE FUNCTION audited();
INSERT INTO users (id, name) SELECT 'u' || i, 'n' || i FROM generate_series(1, 400) i;
INSERT INTO dashboards (id, user_id, title)
    SELECT 'd' || i, 'u' || (1 + i % 400), 't' FROM generate_series(1, 600) i;
"""


@pytest.fixture
def app(conn):
    with conn.cursor() as cur:
        cur.execute(APP)
    return conn


@pytest.fixture
def owner(conn, settings):
    """A login role that is not a superuser and owns the application's tables: the role an
    application usually migrates with."""
    role = f"uuidm_owner_{secrets.token_hex(4)}"
    database = make_url(settings.database_url).database
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cur.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {r}; GRANT CREATE ON SCHEMA public TO {r}").format(
                sql.Identifier(database), r=sql.Identifier(role)
            )
        )
    url = make_url(settings.database_url).set(username=role).render_as_string(hide_password=False)
    yield role, replace(settings, database_url=url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        cur.execute(sql.SQL("REASSIGN OWNED BY {r} TO postgres; DROP OWNED BY {r}").format(
            r=sql.Identifier(role)))  # fmt: skip
        cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _own_everything(conn, role: str) -> None:
    with conn.cursor() as cur:
        for table in ("users", "dashboards", "audit"):
            cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                sql.Identifier(table), sql.Identifier(role)))  # fmt: skip
        cur.execute(sql.SQL("ALTER SEQUENCE audit_n_seq OWNER TO {}").format(sql.Identifier(role)))


def _originals(conn) -> dict[str, str]:
    """A checksum of every original column of the application's tables."""
    return {
        "users": scalar(
            conn,
            "SELECT md5(string_agg(concat_ws('|', id, name, updated_at), ',' ORDER BY id)) FROM users",
        ),
        "dashboards": scalar(
            conn,
            "SELECT md5(string_agg(concat_ws('|', id, user_id, title, updated_at), ',' ORDER BY id)) "
            "FROM dashboards",
        ),
    }  # fmt: skip


def test_user_triggers_never_see_the_backfill_and_the_ledger_still_logs(app, settings):
    before = _originals(app)
    report = validate_command.validate(settings)
    triggers = {c["actual"] for c in report["checks"] if c["name"] == "user_triggers"}

    result = commands.run(settings, workers=2, out=io.StringIO())

    assert triggers == {
        "trigger users_touch (UPDATE): silenced during batches",
        "trigger users_audit (UPDATE): silenced during batches",
        "trigger dashboards_touch (UPDATE): silenced during batches",
    }  # dashboards_title fires on title updates only: not listed
    assert report["overallStatus"] == "passed"
    assert result.status == RunStatus.SUCCEEDED
    assert _originals(app) == before
    assert scalar(app, "SELECT count(*) FROM audit") == 0
    assert scalar(app, "SELECT count(*) FROM dashboards WHERE user_uuid_id IS NULL") == 0
    # the ledger's own trigger saw every batch end, under the same transactions
    succeeded = scalar(
        app,
        "SELECT count(*) FROM uuid_migration.transitions WHERE run_id = %s AND to_status = 'succeeded'",
        (result.run_id,),
    )
    assert succeeded == scalar(
        app, "SELECT count(*) FROM uuid_migration.batches WHERE run_id = %s", (result.run_id,)
    )


def test_triggers_a_role_cannot_silence_are_refused_by_name_unless_accepted(app, settings, owner):
    role, as_owner = owner
    _own_everything(app, role)
    before = database_dump(app, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(as_owner, workers=1, out=io.StringIO())
    report = validate_command.validate(as_owner)

    message = str(refused.value)
    assert "\n" not in message
    assert all(t in message for t in ("users_touch", "users_audit", "dashboards_touch"))
    assert "dashboards_title" not in message and "--allow-triggers" in message
    assert database_dump(app, settings.database_url) == before
    assert scalar(app, "SELECT to_regnamespace('uuid_migration') IS NULL")
    failed = {c["table"] for c in report["checks"] if c["status"] == "failed"}
    assert failed == {"users", "dashboards"} and report["overallStatus"] == "failed"

    result = commands.run(as_owner, workers=1, out=io.StringIO(), allow_triggers=True)

    assert result.status == RunStatus.SUCCEEDED
    assert scalar(app, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0
    assert scalar(app, "SELECT count(*) FROM audit") == 400  # accepted: one per migrated user


def test_row_level_security_on_a_touched_table_is_refused_up_front(app, settings, owner):
    role, as_owner = owner
    _own_everything(app, role)
    with app.cursor() as cur:
        cur.execute("DROP TRIGGER users_touch ON users; DROP TRIGGER users_audit ON users;"
                    "DROP TRIGGER dashboards_touch ON dashboards")  # fmt: skip
        cur.execute(
            "ALTER TABLE dashboards ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
            "CREATE POLICY half ON dashboards USING (right(id, 1) IN ('0', '2', '4', '6', '8'))"
        )
    before = database_dump(app, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(as_owner, workers=1, out=io.StringIO())

    assert "dashboards: row-level security applies to this role" in str(refused.value)
    assert database_dump(app, settings.database_url) == before

    result = commands.run(settings, workers=1, out=io.StringIO())  # a superuser bypasses it

    assert result.status == RunStatus.SUCCEEDED
    assert scalar(app, "SELECT count(*) FROM dashboards WHERE uuid_id IS NULL OR user_uuid_id IS NULL") == 0


def test_a_table_published_without_replica_identity_is_refused_and_its_error_is_permanent(
    app, settings
):
    with app.cursor() as cur:
        cur.execute("CREATE PUBLICATION app_pub FOR TABLE users; ALTER TABLE users REPLICA IDENTITY NOTHING")
    before = database_dump(app, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(settings, workers=1, out=io.StringIO())

    assert "publication app_pub" in str(refused.value) and "REPLICA IDENTITY" in str(refused.value)
    assert database_dump(app, settings.database_url) == before
    with app.cursor() as cur, pytest.raises(psycopg2.Error) as update_error:
        cur.execute("UPDATE users SET name = name WHERE id = 'u1'")
    assert retrying.classify(update_error.value) == retrying.PERMANENT


def test_a_role_that_does_not_own_the_tables_is_told_so_before_any_change(app, settings, owner):
    role, as_other = owner
    with app.cursor() as cur:
        cur.execute(sql.SQL("GRANT SELECT, UPDATE ON users, dashboards TO {}").format(sql.Identifier(role)))
    before = database_dump(app, settings.database_url)
    checksum = table_checksum(app, "users")

    with pytest.raises(PlanError) as refused:
        commands.run(as_other, workers=1, out=io.StringIO(), allow_triggers=True)

    assert "users: this role does not own it" in str(refused.value)
    assert database_dump(app, settings.database_url) == before and table_checksum(app, "users") == checksum


def test_a_trigger_enabled_always_fires_even_when_silenced_so_it_is_refused_by_name(app, settings):
    with app.cursor() as cur:
        cur.execute("ALTER TABLE users ENABLE ALWAYS TRIGGER users_audit")
    before = database_dump(app, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(settings, workers=1, out=io.StringIO())

    assert "trigger users_audit (UPDATE) is enabled ALWAYS or REPLICA" in str(refused.value)
    assert "users_touch" not in str(refused.value)  # silenced: not in the way
    assert database_dump(app, settings.database_url) == before


def test_a_partitions_own_always_trigger_and_a_rule_are_refused_by_name(conn, settings):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE audit (n bigserial PRIMARY KEY, tbl text);"
            "CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$;"
            "CREATE TABLE users (id text PRIMARY KEY, name text);"
            "CREATE TABLE events (id text, region text, user_id text REFERENCES users,"
            " PRIMARY KEY (id, region)) PARTITION BY LIST (region);"
            "CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');"
            "CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');"
            "CREATE TRIGGER events_audit AFTER UPDATE ON events FOR EACH ROW EXECUTE FUNCTION audited();"
            "ALTER TABLE events_eu ENABLE ALWAYS TRIGGER events_audit;"
            "CREATE RULE users_log AS ON UPDATE TO users DO ALSO INSERT INTO audit (tbl) VALUES ('u');"
            "ALTER TABLE users ENABLE ALWAYS RULE users_log;"
            "INSERT INTO users SELECT 'u' || i, 'n' FROM generate_series(1, 20) i;"
            "INSERT INTO events SELECT 'e' || i, 'eu', 'u' || (1 + i % 20) FROM generate_series(1, 30) i"
        )
    before = database_dump(conn, settings.database_url)

    with pytest.raises(PlanError) as refused:
        commands.run(settings, workers=1, out=io.StringIO(), allow_triggers=True)

    message = str(refused.value)
    assert "rule users_log (UPDATE) fires on the migration's writes" in message  # never accepted
    assert database_dump(conn, settings.database_url) == before
    with conn.cursor() as cur:
        cur.execute("DROP RULE users_log ON users")
    with pytest.raises(PlanError) as partition:
        commands.run(settings, workers=1, out=io.StringIO())
    assert "trigger events_audit on partition events_eu (UPDATE) is enabled ALWAYS" in str(partition.value)
    assert scalar(conn, "SELECT count(*) FROM audit") == 0


def test_rollback_keeps_the_applications_delete_triggers_off_its_own_id_mappings(conn, settings):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE audit (n bigserial PRIMARY KEY, what text);"
            "CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL, "
            " new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (table_name, old_id), UNIQUE (new_id));"
            "INSERT INTO id_mappings (table_name, old_id, new_id) VALUES ('legacy', 'x', gen_random_uuid());"
            "CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit (what) VALUES (TG_OP); RETURN NULL; END $$;"
            "CREATE TRIGGER mappings_audit AFTER INSERT OR DELETE ON id_mappings "
            " FOR EACH ROW EXECUTE FUNCTION audited();"
            "CREATE TABLE users (id text PRIMARY KEY);"
            "INSERT INTO users SELECT 'u' || i FROM generate_series(1, 120) i"
        )
    before = database_dump(conn, settings.database_url)

    result = commands.run(settings, workers=1, out=io.StringIO())
    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED and outcome.status == "rolled_back"
    assert scalar(conn, "SELECT count(*) FROM audit") == 0  # neither the inserts nor the deletes
    assert database_dump(conn, settings.database_url) == before
