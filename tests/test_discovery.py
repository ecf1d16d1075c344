"""Discovery from the catalog on a schema unlike the demo, and its migration end to end."""

from __future__ import annotations

import io

import pytest

from producer import commands
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery, plan_file
from uuid_migrate.plan.model import Relation

from .helpers import assert_fully_migrated, assert_references_translated, scalar

pytestmark = pytest.mark.e2e

ODD_SCHEMA = """
CREATE TABLE "Org Units" (code varchar(20) PRIMARY KEY, title text);
CREATE TABLE employees (
    badge text PRIMARY KEY,
    unit_code varchar(20) REFERENCES "Org Units" (code),
    manager_id text REFERENCES employees (badge)
);
CREATE TABLE teams (slug char(8) PRIMARY KEY, lead text);
CREATE TABLE members (team char(8) PRIMARY KEY);
ALTER TABLE teams ADD CONSTRAINT teams_lead_fk FOREIGN KEY (lead) REFERENCES employees (badge);
ALTER TABLE employees ADD COLUMN team char(8) REFERENCES teams (slug);
CREATE TABLE audit (id bigint PRIMARY KEY, actor text REFERENCES employees (badge));
CREATE TABLE counters (n integer PRIMARY KEY);
"""


def fill(cur) -> None:
    cur.execute(
        "INSERT INTO \"Org Units\" SELECT 'u' || left(md5(i::text), 12), 'Unit ' || i "
        "FROM generate_series(1, 30) i"
    )
    cur.execute(
        "INSERT INTO employees (badge, unit_code) SELECT 'e' || md5(i::text), "
        "'u' || left(md5((1 + i % 30)::text), 12) FROM generate_series(1, 400) i"
    )
    cur.execute(
        "UPDATE employees e SET manager_id = m.badge FROM (SELECT badge, row_number() OVER "
        "(ORDER BY badge) AS r FROM employees) m WHERE m.r = 1 AND e.badge <> m.badge"
    )
    cur.execute(
        "INSERT INTO teams SELECT left(md5(i::text), 8), (SELECT min(badge) FROM employees) "
        "FROM generate_series(1, 12) i"
    )
    cur.execute("UPDATE employees SET team = (SELECT min(slug) FROM teams)")
    cur.execute(
        "INSERT INTO audit SELECT i, 'e' || md5((1 + i % 400)::text) FROM generate_series(1, 250) i"
    )


@pytest.fixture
def odd(conn):
    with conn.cursor() as cur:
        cur.execute(ODD_SCHEMA)
        fill(cur)
    return conn


def test_discovery_finds_string_keyed_tables_references_and_reference_only_children(odd):
    with odd.cursor() as cur:
        plan = discovery.discover(cur)

    migrated = {t.name: (t.key, t.key_type) for t in plan.tables if t.migrate}
    assert migrated == {
        "Org Units": ("code", "character varying(20)"),
        "employees": ("badge", "text"),
        "members": ("team", "character(8)"),
        "teams": ("slug", "character(8)"),
    }
    assert [(t.name, t.key) for t in plan.tables if not t.migrate] == [("audit", "id")]
    assert set(plan.relations) == {
        Relation("employees", "unit_code", "Org Units", "unit_code_uuid_id"),
        Relation("employees", "manager_id", "employees", "manager_uuid_id"),
        Relation("employees", "team", "teams", "team_uuid_id"),
        Relation("teams", "lead", "employees", "lead_uuid_id"),
        Relation("audit", "actor", "employees", "actor_uuid_id"),
    }
    assert plan_file.load_text(plan_file.dumps(plan)) == plan


def test_a_discovered_schema_with_self_reference_and_cycle_migrates(odd, settings):
    result = commands.run(settings, workers=2, out=io.StringIO())

    assert result.status == RunStatus.SUCCEEDED
    assert_fully_migrated(odd, "Org Units", key="code")
    assert_fully_migrated(odd, "employees", key="badge")
    assert_fully_migrated(odd, "teams", key="slug")
    assert_references_translated(
        odd, "employees", "unit_code", "Org Units", "unit_code_uuid_id", "code"
    )
    assert_references_translated(
        odd, "employees", "manager_id", "employees", "manager_uuid_id", "badge"
    )
    assert_references_translated(odd, "employees", "team", "teams", "team_uuid_id", "slug")
    assert_references_translated(odd, "teams", "lead", "employees", "lead_uuid_id", "badge")
    assert_references_translated(odd, "audit", "actor", "employees", "actor_uuid_id", "badge")
    assert scalar(odd, "SELECT count(manager_uuid_id) FROM employees") == 399
    assert (
        scalar(
            odd,
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'audit' AND column_name = 'uuid_id'",
        )
        == 0
    )
    assert (
        scalar(
            odd,
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'counters' AND column_name = 'uuid_id'",
        )
        == 0
    )
