"""Every kind of table and reference, across two schemas, migrated by discovery with two
workers: each translated value checked with our own joins, the tool's validation passing,
and rollback giving back the same `pg_dump -s` and the same data."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from producer import commands, rollback_command, status_command
from uuid_migrate.errors import PlanError
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery, plan_file

from .helpers import database_dump, rows, scalar
from .test_nothing_skipped_silently import _assert_batches_match

pytestmark = pytest.mark.e2e

SALES = "Sales EU"  # a schema name that needs quoting everywhere
LONG = "a_reference_whose_name_is_long_enough_to_pass_the_limit_once_id"
SCHEMA = f"""
CREATE SCHEMA "{SALES}";
CREATE TABLE users (id text PRIMARY KEY, code text UNIQUE NOT NULL);
CREATE TABLE user_roles (user_id text REFERENCES users, role text, PRIMARY KEY (user_id, role));
CREATE TABLE audit_log (actor text REFERENCES users, what text);
CREATE TABLE comments (id integer PRIMARY KEY, user_id text REFERENCES users,
                       {LONG} text REFERENCES users);
CREATE TABLE posts (id text PRIMARY KEY, user_code text REFERENCES users (code));
CREATE TABLE events (id text PRIMARY KEY) PARTITION BY HASH (id);
CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE event_refs (id text PRIMARY KEY, event_id text REFERENCES events);
CREATE TABLE orders (id text PRIMARY KEY, user_id text REFERENCES users);
CREATE TABLE order_lines (order_id text REFERENCES orders, line_no integer,
                          PRIMARY KEY (order_id, line_no));
CREATE TABLE shipments (id text PRIMARY KEY, order_id text, line_no integer,
                        FOREIGN KEY (order_id, line_no) REFERENCES order_lines);
CREATE TABLE "{SALES}".accounts (id varchar(20) PRIMARY KEY, user_id text REFERENCES public.users);
CREATE TABLE accounts (id text PRIMARY KEY,
                       sales_account_id varchar(20) REFERENCES "{SALES}".accounts);
CREATE TABLE "{SALES}".invoices (id text PRIMARY KEY,
                                 account_id varchar(20) REFERENCES "{SALES}".accounts,
                                 public_account_id text REFERENCES public.accounts);
-- codes in the reverse order of ids: a translation through the key would pick other rows
INSERT INTO users SELECT 'u' || i, 'c' || (301 - i) FROM generate_series(1, 300) i;
INSERT INTO user_roles SELECT 'u' || i, r FROM generate_series(1, 300) i,
    unnest(ARRAY['admin', 'editor']) r WHERE i % 3 <> 0 OR r = 'admin';
INSERT INTO audit_log SELECT 'u' || (1 + i % 300), 'did ' || i FROM generate_series(1, 700) i;
INSERT INTO comments SELECT i, 'u' || (1 + i % 300), 'u' || (1 + i % 7)
FROM generate_series(1, 600) i;
INSERT INTO posts SELECT 'p' || i, 'c' || (1 + i % 300) FROM generate_series(1, 150) i;
INSERT INTO events SELECT 'e' || i FROM generate_series(1, 130) i;
INSERT INTO event_refs SELECT 'r' || i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'e' || (1 + i % 130) END
FROM generate_series(1, 210) i;
INSERT INTO orders SELECT 'o' || i, 'u' || (1 + i % 300) FROM generate_series(1, 200) i;
INSERT INTO order_lines SELECT 'o' || o, l FROM generate_series(1, 200) o, generate_series(1, 2) l;
INSERT INTO shipments SELECT 's' || i, 'o' || (1 + i % 200), 1 + i % 2 FROM generate_series(1, 300) i;
-- the same ids in both accounts tables: their mappings must never mix
INSERT INTO "{SALES}".accounts SELECT 'a' || i, 'u' || (1 + i % 300) FROM generate_series(1, 150) i;
INSERT INTO accounts SELECT 'a' || i, 'a' || (1 + i % 150) FROM generate_series(1, 200) i;
INSERT INTO "{SALES}".invoices SELECT 'i' || i, 'a' || (1 + i % 150), 'a' || (1 + i % 200)
FROM generate_series(1, 400) i;
"""

#: (schema, table, key) of every migrated table; the plan's name for it.
MIGRATED = {
    ("public", "users", "id"): "users",
    ("public", "posts", "id"): "posts",
    ("public", "events", "id"): "events",
    ("public", "event_refs", "id"): "event_refs",
    ("public", "orders", "id"): "orders",
    ("public", "shipments", "id"): "shipments",
    ("public", "accounts", "id"): "accounts",
    (SALES, "accounts", "id"): f"{SALES}.accounts",
    (SALES, "invoices", "id"): f"{SALES}.invoices",
}
#: (schema, table, column, translated column, parent schema, parent, parent column)
TRANSLATED = [
    ("public", "user_roles", "user_id", "user_uuid_id", "public", "users", "id"),
    ("public", "audit_log", "actor", "actor_uuid_id", "public", "users", "id"),
    ("public", "comments", "user_id", "user_uuid_id", "public", "users", "id"),
    ("public", "posts", "user_code", "user_code_uuid_id", "public", "users", "code"),
    ("public", "event_refs", "event_id", "event_uuid_id", "public", "events", "id"),
    ("public", "orders", "user_id", "user_uuid_id", "public", "users", "id"),
    ("public", "order_lines", "order_id", "order_uuid_id", "public", "orders", "id"),
    ("public", "shipments", "order_id", "order_uuid_id", "public", "orders", "id"),
    (SALES, "accounts", "user_id", "user_uuid_id", "public", "users", "id"),
    ("public", "accounts", "sales_account_id", "sales_account_uuid_id", SALES, "accounts", "id"),
    (SALES, "invoices", "account_id", "account_uuid_id", SALES, "accounts", "id"),
    (SALES, "invoices", "public_account_id", "public_account_uuid_id", "public", "accounts", "id"),
]


def _q(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


def test_every_kind_in_two_schemas_is_migrated_checked_and_rolled_back(conn, settings):
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        plan = discovery.discover(cur)
    before = database_dump(conn, settings.database_url, ("public", SALES))
    assert plan.schema == "public" and plan.schemas() == ("public", SALES)
    assert {t.name for t in plan.migrated()} == set(MIGRATED.values())
    assert not plan.skipped, plan.skipped
    assert plan_file.load_text(plan_file.dumps(plan)) == plan
    long = next(r for r in plan.relations if r.column == LONG)
    assert len(long.uuid_column.encode()) <= 63

    out = io.StringIO()
    result = commands.run(settings, workers=2, out=out)

    assert result.status == RunStatus.SUCCEEDED, out.getvalue()
    assert status_command.status(settings)["validation"]["overallStatus"] == "passed"
    for (schema, table, key), name in MIGRATED.items():
        _assert_migrated(conn, schema, table, key, name)
    for entry in [*TRANSLATED, ("public", "comments", LONG, long.uuid_column, "public", "users", "id")]:
        _assert_translated(conn, *entry)
    assert scalar(conn, "SELECT count(*) FROM pg_tables WHERE tablename = 'id_mappings'") == 1
    same_ids = scalar(
        conn,
        "SELECT count(*) FROM id_mappings a JOIN id_mappings b ON a.old_id = b.old_id "
        "WHERE a.table_name = 'accounts' AND b.table_name = %s AND a.new_id <> b.new_id",
        (f"{SALES}.accounts",),
    )
    assert same_ids == 150  # a1..a150 in both tables, each with its own uuid
    _assert_batches_match(conn, result.run_id, "comments")
    assert scalar(conn, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back", outcome
    assert database_dump(conn, settings.database_url, ("public", SALES)) == before


def _assert_migrated(conn, schema: str, table: str, key: str, name: str) -> None:
    """Every row has a distinct uuid_id and exactly its one mapping, under the plan's name."""
    t = _q(schema, table)
    total, with_uuid, distinct = rows(
        conn, f"SELECT count(*), count(uuid_id), count(DISTINCT uuid_id) FROM {t}"
    )[0]
    assert total == with_uuid == distinct > 0, (name, total, with_uuid, distinct)
    agreeing = scalar(
        conn,
        f"SELECT count(*) FROM {t} x JOIN public.id_mappings m ON m.table_name = %s "
        f'AND m.old_id = x."{key}"::text AND m.new_id = x.uuid_id',
        (name,),
    )
    mapped = scalar(conn, "SELECT count(*) FROM public.id_mappings WHERE table_name = %s", (name,))
    assert agreeing == mapped == total, (name, agreeing, mapped, total)


def _assert_translated(
    conn, schema: str, table: str, column: str, target: str, parent_schema: str, parent: str,
    parent_column: str,
) -> None:  # fmt: skip
    """Each translated value is the uuid_id of the parent row the reference names."""
    wrong = scalar(
        conn,
        f'SELECT count(*) FROM {_q(schema, table)} c LEFT JOIN {_q(parent_schema, parent)} p '
        f'ON p."{parent_column}" = c."{column}" WHERE c."{target}" IS DISTINCT FROM p.uuid_id',
    )
    filled = scalar(conn, f'SELECT count("{target}") FROM {_q(schema, table)}')
    assert wrong == 0 and filled > 0, (schema, table, column, wrong, filled)


def test_schemas_are_chosen_with_a_comma_list_and_named_when_nothing_is_found(conn, settings):
    with conn.cursor() as cur:
        cur.execute(
            'CREATE SCHEMA app; CREATE SCHEMA "empty one";'
            "CREATE TABLE app.people (id text PRIMARY KEY);"
            "CREATE TABLE app.pets (id text PRIMARY KEY, owner text REFERENCES app.people);"
            "CREATE TABLE public.counters (n integer PRIMARY KEY);"
        )
        everything = discovery.discover(cur)
        with pytest.raises(PlanError) as nothing:
            discovery.discover(cur, ["public", "empty one"])
    # every table outside public: the plan's own schema is the one that has them
    assert everything.schema == "app" and {t.name for t in everything.tables} == {"people", "pets"}
    assert "schemas public, empty one" in str(nothing.value)
    assert "schemas with such tables: app" in str(nothing.value)

    cli = [sys.executable, "-m", "producer.cli"]
    env = {**os.environ, **settings.to_environment()}
    shown = subprocess.run([*cli, "plan", "--schema", "app"], capture_output=True, text=True, env=env)
    missing = subprocess.run(
        [*cli, "plan", "--schema", "public,nowhere"], capture_output=True, text=True, env=env
    )
    both = subprocess.run(
        [*cli, "run", "--schema", "app", "--plan", "clinic"], capture_output=True, text=True, env=env
    )

    assert shown.returncode == 0, shown.stderr
    assert 'schema = "app"' in shown.stdout and 'name = "pets"' in shown.stdout
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1].endswith("schema 'nowhere' does not exist")
    assert both.returncode != 0 and "give one or the other" in both.stderr
    assert "Traceback" not in both.stderr


def test_a_plan_file_names_tables_of_other_schemas_as_schema_dot_table(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE SCHEMA billing; CREATE TABLE users (id text PRIMARY KEY);"
            "CREATE TABLE billing.cards (id text PRIMARY KEY, holder text);"  # no constraint
            "INSERT INTO users SELECT 'u' || i FROM generate_series(1, 50) i;"
            "INSERT INTO billing.cards SELECT 'k' || i, 'u' || (1 + i % 50) FROM generate_series(1, 80) i"
        )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[tables]]\nname = "users"\n[[tables]]\nname = "billing.cards"\n'
        '[[relations]]\ntable = "billing.cards"\ncolumn = "holder"\nparent = "public.users"\n'
        "declared = false\n"
    )

    result = commands.run(settings, plan_file=str(plan), workers=1, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    _assert_migrated(conn, "billing", "cards", "id", "billing.cards")
    _assert_translated(conn, "billing", "cards", "holder", "holder_uuid_id", "public", "users", "id")


def test_later_runs_keep_the_first_runs_schema_and_rollback_undoes_every_run(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE SCHEMA app; CREATE TABLE app.users (id text PRIMARY KEY);"
            "CREATE TABLE app.posts (id text PRIMARY KEY, user_id text REFERENCES app.users);"
            "INSERT INTO app.users SELECT 'u' || i FROM generate_series(1, 60) i;"
            "INSERT INTO app.posts SELECT 'p' || i, 'u' || (1 + i % 60) FROM generate_series(1, 90) i;"
            "CREATE TABLE public.users (id text PRIMARY KEY);"
            "INSERT INTO public.users SELECT 'u' || i FROM generate_series(1, 40) i"
        )
    before = database_dump(conn, settings.database_url, ("public", "app"))
    first = commands.run(settings, schemas=["app"], workers=1, out=io.StringIO())
    with pytest.raises(PlanError) as other_home:  # id_mappings would move to public
        commands.run(settings, schemas=["public", "app"], out=io.StringIO())

    second = commands.run(settings, workers=1, out=io.StringIO())  # every schema, now

    assert first.status == second.status == RunStatus.SUCCEEDED
    assert "keep id_mappings in schema 'app'" in str(other_home.value)
    assert scalar(conn, "SELECT to_regclass('public.id_mappings') IS NULL")
    _assert_migrated_in(conn, "app", "public", "users", "public.users")
    _assert_migrated_in(conn, "app", "app", "users", "users")
    assert status_command.status(settings)["validation"]["overallStatus"] == "passed"
    plan = tmp_path / "only.toml"  # a third run on a plan of one table
    plan.write_text('schema = "app"\n[[tables]]\nname = "users"\n')
    commands.run(settings, plan_file=str(plan), workers=1, out=io.StringIO())

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed", outcome
    assert database_dump(conn, settings.database_url, ("public", "app")) == before


def _assert_migrated_in(conn, home: str, schema: str, table: str, name: str) -> None:
    """Every row has its uuid_id and the one mapping under `name`, in the home's id_mappings."""
    missing = scalar(
        conn,
        f"SELECT count(*) FROM {_q(schema, table)} x LEFT JOIN {_q(home, 'id_mappings')} m "
        "ON m.table_name = %s AND m.old_id = x.id WHERE x.uuid_id IS NULL "
        "OR m.new_id IS DISTINCT FROM x.uuid_id",
        (name,),
    )
    assert missing == 0, (schema, table, missing)


def test_a_foreign_key_a_plan_file_leaves_out_is_said_before_the_run(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY);"
            "CREATE TABLE posts (id text PRIMARY KEY, user_id text REFERENCES users);"
            "INSERT INTO users SELECT 'u' || i FROM generate_series(1, 30) i;"
            "INSERT INTO posts SELECT 'p' || i, 'u' || (1 + i % 30) FROM generate_series(1, 40) i"
        )
    plan = tmp_path / "plan.toml"
    plan.write_text('[[tables]]\nname = "users"\n')  # posts.user_id is left out
    out = io.StringIO()

    result = commands.run(settings, plan_file=str(plan), workers=1, out=out)

    assert result.status == RunStatus.SUCCEEDED
    assert (
        "not migrated: foreign key public.posts(user_id) -> public.users [posts_user_id_fkey]: "
        "not in the plan file" in out.getvalue()
    )
    report = status_command.status(settings)["validation"]
    assert [c["table"] for c in report["checks"] if c["name"] == "not_migrated"] == [
        "public.posts(user_id) -> public.users [posts_user_id_fkey]"
    ]
