"""Discovery on a schema with what the migration cannot translate yet: each such table and
foreign key is named with its reason by `plan`, `validate` and `run`, and in the run's report;
what it can migrate is migrated, checked with our own SQL."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from producer import commands, status_command, validate_command
from uuid_migrate.errors import PlanError
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery

from .helpers import rows, scalar

pytestmark = pytest.mark.e2e

LONG_COLUMN = "a_reference_whose_name_is_long_enough_to_pass_the_limit_once_id"
SCHEMA = f"""
CREATE TABLE users (id text PRIMARY KEY, code text UNIQUE NOT NULL);
CREATE TABLE orders (id text PRIMARY KEY, user_id text REFERENCES users);
CREATE TABLE order_items (order_id text REFERENCES orders, sku text, PRIMARY KEY (order_id, sku));
CREATE TABLE audit (actor text REFERENCES users, what text);
CREATE TABLE order_lines (order_id text REFERENCES orders, line_no integer,
                          PRIMARY KEY (order_id, line_no));
CREATE TABLE shipments (id text PRIMARY KEY, order_id text, line_no integer,
                        FOREIGN KEY (order_id, line_no) REFERENCES order_lines);
ALTER TABLE orders ADD COLUMN region text, ADD COLUMN channel text, ADD UNIQUE (region, channel);
CREATE TABLE promos (id text PRIMARY KEY, region text, channel text,
                     FOREIGN KEY (region, channel) REFERENCES orders (region, channel));
CREATE TABLE posts (id text PRIMARY KEY, user_code text REFERENCES users (code));
CREATE TABLE comments (id integer PRIMARY KEY, user_id text REFERENCES users,
                       {LONG_COLUMN} text REFERENCES users);
CREATE SCHEMA crm;
CREATE TABLE crm.contacts (id text PRIMARY KEY);
CREATE TABLE crm.notes (id text PRIMARY KEY, user_id text REFERENCES public.users);
CREATE TABLE events (id text PRIMARY KEY) PARTITION BY HASH (id);
CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE event_refs (id text PRIMARY KEY, event_id text REFERENCES events);
-- codes in the reverse order of ids: a translation through the key would pick other rows
INSERT INTO users SELECT 'u' || i, 'c' || (301 - i) FROM generate_series(1, 300) i;
INSERT INTO orders SELECT 'o' || i, 'u' || (1 + i % 300) FROM generate_series(1, 200) i;
INSERT INTO posts SELECT 'p' || i, 'c' || (1 + i % 300) FROM generate_series(1, 150) i;
INSERT INTO order_items SELECT 'o' || o, 'sku-' || k FROM generate_series(1, 200) o,
    generate_series(1, 3) k;
INSERT INTO audit SELECT 'u' || (1 + i % 300), 'did ' || i FROM generate_series(1, 2000) i;
INSERT INTO order_lines SELECT 'o' || o, l FROM generate_series(1, 200) o, generate_series(1, 2) l;
INSERT INTO shipments SELECT 's' || i, 'o' || (1 + i % 200), 1 + i % 2 FROM generate_series(1, 300) i;
-- integer keys whose text order differs from their order: 1, 10, 100, 1000, 1001, ...
INSERT INTO comments SELECT i, 'u' || (1 + i % 300), 'u' || (1 + i % 7)
FROM generate_series(1, 1200) i;
INSERT INTO events SELECT 'e' || i FROM generate_series(1, 130) i;
INSERT INTO event_refs SELECT 'r' || i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'e' || (1 + i % 130) END
FROM generate_series(1, 210) i;
"""


def test_what_cannot_be_translated_is_named_everywhere_and_the_rest_is_migrated(conn, settings):
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        plan = discovery.discover(cur, ["public"])
    reasons = {item.name: item.reason for item in plan.skipped}

    assert {t.name for t in plan.migrated()} == {
        "users", "orders", "posts", "event_refs", "events", "shipments", "promos"
    }
    assert "none of whose columns names a migrated key" in _reason(reasons, "public.promos")
    # shipments(order_id, line_no) -> order_lines, whose order_id references orders
    via_lines = next(r for r in plan.relations if r.table == "shipments")
    assert (via_lines.column, via_lines.parent, via_lines.parent_column) == ("order_id", "orders", "")
    assert plan.table("events").partitioned and plan.table("events").partition_key == ("id",)
    assert not any(name.startswith("public.order_items") for name in reasons)
    items = plan.table("order_items")
    assert (items.migrate, items.key_columns) == (False, ("order_id", "sku"))
    assert not any(name.startswith("public.audit") for name in reasons)
    audit = plan.table("audit")
    assert (audit.key, audit.key_columns) == ("", ())  # cut over its blocks
    assert "from schema crm is not among --schema public" in _reason(reasons, "crm.notes(user_id)")
    assert "--schema public,crm" in reasons["crm.contacts"]
    partitions = ("events_0", "events_1")
    assert not [t.name for t in plan.tables if t.name in partitions]
    assert not [name for name in reasons if any(p in name for p in partitions)], reasons
    assert not [name for name in reasons if "events" in name], reasons
    to_events = next(r for r in plan.relations if r.table == "event_refs")
    assert (to_events.column, to_events.parent, to_events.uuid_column) == (
        "event_id", "events", "event_uuid_id"
    )
    through_code = next(r for r in plan.relations if r.table == "posts")
    assert (through_code.column, through_code.parent_column) == ("user_code", "code")
    long = next(r for r in plan.relations if r.column == LONG_COLUMN)
    assert len(long.uuid_column.encode()) <= 63 and long.uuid_column.endswith("_uuid_id")

    toml = commands.plan(settings, schemas=["public"])
    assert toml.count("\n[[skipped]]\n") == len(plan.skipped) and "crm.notes" in toml
    assert 'cut = "block ranges (ctid): the table has no primary key"' in toml
    assert 'key_columns = [\n    "order_id",\n    "sku",\n]' in toml
    baseline = validate_command.validate(settings, schemas=["public"])
    warned = {c["table"] for c in baseline["checks"] if c["name"] == "not_migrated"}
    assert warned == set(reasons) and baseline["overallStatus"] == "passed"

    out = io.StringIO()
    result = commands.run(settings, schemas=["public"], workers=2, out=out)

    assert result.status == RunStatus.SUCCEEDED, out.getvalue()
    lines = out.getvalue().splitlines()
    printed = [line for line in lines if line.startswith("not migrated:")]
    assert len(printed) == len(plan.skipped)
    assert lines.index(printed[-1]) < next(i for i, line in enumerate(lines) if "worker" in line)
    report = status_command.status(settings)["validation"]
    assert {c["table"] for c in report["checks"] if c["name"] == "not_migrated"} == set(reasons)
    _assert_translated(conn, "comments", "user_id", "user_uuid_id")
    _assert_translated(conn, "posts", "user_code", "user_code_uuid_id", parent_column="code")
    _assert_translated(conn, "comments", LONG_COLUMN, long.uuid_column)
    assert scalar(conn, "SELECT count(*) FROM orders WHERE uuid_id IS NULL") == 0
    _assert_translated(conn, "order_items", "order_id", "order_uuid_id", parent="orders")
    _assert_batches_match(conn, result.run_id, "comments")
    _assert_batches_match(conn, result.run_id, "order_items")
    _assert_translated(conn, "audit", "actor", "actor_uuid_id")
    _assert_batches_match(conn, result.run_id, "audit")
    _assert_partitioned_events_migrated(conn)
    _assert_translated(conn, "shipments", "order_id", "order_uuid_id", parent="orders")
    _assert_translated(conn, "order_lines", "order_id", "order_uuid_id", parent="orders")


def _assert_partitioned_events_migrated(conn) -> None:
    """Every event, in whichever partition, has its uuid_id; every reference to one equals it
    (NULL where the reference is); the partitioned unique index is valid."""
    assert scalar(conn, "SELECT count(*) FROM events WHERE uuid_id IS NULL") == 0
    assert scalar(conn, "SELECT count(DISTINCT uuid_id) FROM events") == 130
    assert scalar(conn, "SELECT count(*) FROM events_0 WHERE uuid_id IS NOT NULL") > 0
    assert scalar(conn, "SELECT count(*) FROM events_1 WHERE uuid_id IS NOT NULL") > 0
    wrong = scalar(
        conn,
        "SELECT count(*) FROM event_refs r LEFT JOIN events e ON e.id = r.event_id "
        "WHERE r.event_uuid_id IS DISTINCT FROM e.uuid_id",
    )
    assert wrong == 0
    assert scalar(conn, "SELECT count(event_uuid_id) FROM event_refs") == 189
    assert scalar(
        conn,
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = 'events_uuid_id_key'::regclass "
        "AND i.indrelid = 'events'::regclass",
    )


def _reason(reasons: dict[str, str], start: str) -> str:
    found = [reason for name, reason in reasons.items() if name.startswith(start)]
    assert len(found) == 1, (start, reasons)
    return found[0]


def _assert_translated(
    conn, table: str, column: str, target: str, parent_column: str = "id", parent: str = "users"
) -> None:
    wrong = scalar(
        conn,
        f'SELECT count(*) FROM {table} c LEFT JOIN {parent} u ON u."{parent_column}" = c."{column}" '
        f'WHERE c."{target}" IS DISTINCT FROM u.uuid_id',
    )
    assert wrong == 0 and scalar(conn, f'SELECT count("{target}") FROM {table}') > 0


def _assert_batches_match(conn, run_id: str, table: str) -> None:
    """Batches over an integer or a composite key are cut in the key's own order: each planned
    row count is the rows it changed, and the stage's total is the table's row count."""
    stage = f"{table}:references"
    assert scalar(
        conn,
        "SELECT total_rows FROM uuid_migration.stages WHERE run_id = %s AND stage = %s",
        (run_id, stage),
    ) == scalar(conn, f"SELECT count(*) FROM {table}")
    batches = rows(
        conn,
        "SELECT batch_no, planned_rows, rows FROM uuid_migration.batches "
        "WHERE run_id = %s AND stage = %s ORDER BY batch_no",
        (run_id, stage),
    )
    assert len(batches) > 1 and all(planned == done for _, planned, done in batches), batches


def test_a_reference_declared_by_hand_to_a_unique_column_is_translated_through_it(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY, code text UNIQUE, nick text);"
            "CREATE TABLE posts (id text PRIMARY KEY, author text);"  # no constraint
            "INSERT INTO users SELECT 'u' || i, 'c' || (101 - i), 'n' FROM generate_series(1, 100) i;"
            "INSERT INTO posts SELECT 'p' || i, 'c' || i FROM generate_series(1, 120) i"
        )
    plan = tmp_path / "plan.toml"
    text = (
        '[[tables]]\nname = "users"\n[[tables]]\nname = "posts"\n'
        '[[relations]]\ntable = "posts"\ncolumn = "author"\nparent = "users"\n'
        'parent_column = "{}"\ndeclared = false\n'
    )
    plan.write_text(text.format("nick"))
    with pytest.raises(PlanError, match=r"users\.nick is not unique"):
        commands.run(settings, plan_file=str(plan), out=io.StringIO())
    assert scalar(conn, "SELECT to_regclass('uuid_migration.runs') IS NULL")  # nothing changed

    plan.write_text(text.format("code"))
    result = commands.run(settings, plan_file=str(plan), workers=2, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    _assert_translated(conn, "posts", "author", "author_uuid_id", parent_column="code")
    orphans = rows(conn, "SELECT row_id, error FROM uuid_migration.errors ORDER BY row_id")
    assert [r for r, _ in orphans] == [f"p{i}" for i in range(101, 121)]  # c101..c120: none
    assert all("no users row with code = " in e for _, e in orphans)


def test_orphans_of_a_references_stage_are_recorded_and_the_run_passes(conn, settings, tmp_path):
    """A table that is only translated (not migrated) and a deferred self-reference: their
    orphans keep a NULL translation, which no write touches, and still get their records."""
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY, boss text);"
            "CREATE TABLE logs (id integer PRIMARY KEY, who text);"  # no constraint
            "INSERT INTO users SELECT 'u' || i, 'u' || (i + 5) FROM generate_series(1, 100) i;"
            "INSERT INTO logs SELECT i, 'u' || i FROM generate_series(1, 130) i"
        )
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[tables]]\nname = "users"\n[[tables]]\nname = "logs"\nmigrate = false\n'
        '[[relations]]\ntable = "users"\ncolumn = "boss"\nparent = "users"\ndeclared = false\n'
        '[[relations]]\ntable = "logs"\ncolumn = "who"\nparent = "users"\ndeclared = false\n'
    )

    result = commands.run(settings, plan_file=str(plan), workers=2, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED, result
    recorded = rows(
        conn, "SELECT table_name, row_id, column_name FROM uuid_migration.errors ORDER BY 1, 2"
    )
    logs = sorted(str(i) for i in range(101, 131))
    bosses = sorted(f"u{i}" for i in range(96, 101))  # u101..u105 do not exist
    assert recorded == [("logs", r, "who") for r in logs] + [("users", r, "boss") for r in bosses]
    _assert_translated(conn, "logs", "who", "who_uuid_id")
    _assert_translated(conn, "users", "boss", "boss_uuid_id")


def test_a_junction_table_is_cut_over_its_composite_key_and_split_when_a_batch_times_out(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY);"
            "CREATE TABLE memberships (member text, team integer, PRIMARY KEY (member, team));"
            "INSERT INTO users SELECT 'u' || i FROM generate_series(1, 40) i;"
            "INSERT INTO memberships SELECT 'u' || i, t FROM generate_series(1, 45) i,"
            " generate_series(1, 4) t"  # u41..u45 are orphans
        )
        _slow_past_30_rows(cur, "memberships")
    fast = replace(settings, statement_timeout_ms=1500, min_split_rows=10, batch_size=60)

    result = _run_translating(fast, tmp_path, "memberships", "member")

    assert result.status == RunStatus.SUCCEEDED, result
    _assert_translated(conn, "memberships", "member", "member_uuid_id")
    splits = scalar(
        conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'split'"
    )
    assert splits > 0
    bounds = rows(conn, "SELECT upper_bound FROM uuid_migration.batches WHERE upper_bound IS NOT NULL")
    assert all(b.startswith('["u') for (b,) in bounds)  # (member, team) as a JSON array
    recorded = {r for (r,) in rows(conn, "SELECT row_id FROM uuid_migration.errors")}
    assert recorded == {f'["u{i}", "{t}"]' for i in range(41, 46) for t in range(1, 5)}
    assert status_command.status(fast)["validation"]["overallStatus"] == "passed"


def test_a_table_without_a_key_is_cut_over_its_blocks_and_split_when_a_batch_times_out(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE users (id text PRIMARY KEY);"
            "CREATE TABLE events (who text, pad text);"  # no key, about 14 rows a block
            "INSERT INTO users SELECT 'u' || i FROM generate_series(1, 40) i;"
            "INSERT INTO events SELECT 'u' || (1 + i % 45), repeat('x', 500)"
            " FROM generate_series(1, 600) i"  # u41..u45 are orphans
        )
        _slow_past_30_rows(cur, "events")
    fast = replace(settings, statement_timeout_ms=1500, min_split_rows=10, batch_size=120)

    result = _run_translating(fast, tmp_path, "events", "who")

    assert result.status == RunStatus.SUCCEEDED, result
    _assert_translated(conn, "events", "who", "who_uuid_id")
    assert scalar(conn, "SELECT count(*) FROM uuid_migration.batches WHERE status = 'split'") > 0
    orphans = scalar(conn, "SELECT count(*) FROM events WHERE who IN ('u41','u42','u43','u44','u45')")
    recorded = rows(conn, "SELECT row_id FROM uuid_migration.errors")
    assert len(recorded) == orphans and all(r.startswith("(") for (r,) in recorded)  # ctids
    assert status_command.status(fast)["validation"]["overallStatus"] == "passed"


def _run_translating(settings, tmp_path, table: str, column: str) -> commands.RunResult:
    """A hand plan: users migrated, `table` only translated through `column` (no constraint),
    run by two local workers."""
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[tables]]\nname = "users"\n[[tables]]\nname = "{table}"\nmigrate = false\n'
        f'[[relations]]\ntable = "{table}"\ncolumn = "{column}"\nparent = "users"\n'
        "declared = false\n"
    )
    return commands.run(
        settings, plan_file=str(plan), workers=2, out=io.StringIO(), allow_triggers=True
    )


def _slow_past_30_rows(cur, table: str) -> None:
    """A statement writing more than 30 rows of `table` sleeps past the timeout; 25 do not."""
    cur.execute(
        "CREATE FUNCTION too_much() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF (SELECT count(*) FROM changed) > 30 THEN PERFORM pg_sleep(60); END IF; "
        f"RETURN NULL; END $$; CREATE TRIGGER too_much AFTER UPDATE ON {table} "
        "REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION too_much(); "
        f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER too_much"  # fires on the batches too
    )
