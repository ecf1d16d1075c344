"""What on a real database would make the migration wrong or stuck, found before any change.

Each obstacle is a refusal (`run` stops before its first change, naming it; the baseline
report fails it) or only reported. They read the catalog as the tool's own role sees it:
user triggers that would fire on the tool's updates, row-level security that would hide rows
from it, publications that make every update fail, and privileges it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uuid_migrate import db
from uuid_migrate.identifiers import LEDGER_SCHEMA, regclass_text
from uuid_migrate.plan.model import MAPPING_TABLE, UUID_COLUMN, Plan
from uuid_migrate.schema.triggers import TRIGGER_NAMES


@dataclass(frozen=True)
class Obstacle:
    """One finding: the report check it belongs to, the table, the problem, and its level:
    a `refusal` (run stops before any change), a `warning`, or a `note` (what will happen)."""

    check: str
    table: str
    problem: str
    level: str = "refusal"

    @property
    def refusal(self) -> bool:
        return self.level == "refusal"


#: Triggers that fire when the session's replication role is `replica` / `origin`.
_FIRES = {True: ("A", "R"), False: ("O", "A")}
_UPDATE, _INSERT = 16, 4

_TRIGGERS = """
SELECT t.tgname, t.tgenabled, t.tgtype,
       ARRAY(SELECT a.attname FROM pg_attribute a
             WHERE a.attrelid = t.tgrelid AND a.attnum = ANY(t.tgattr::int2[]))
FROM pg_trigger t
WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgenabled <> 'D'
  AND t.tgrelid IN (SELECT relid FROM pg_partition_tree(to_regclass(%(t)s))
                    UNION SELECT to_regclass(%(t)s))
ORDER BY t.tgname
"""


def obstacles(cur: Any, plan: Plan, allow_triggers: bool = False) -> list[Obstacle]:
    """Every obstacle of the plan on this database, refusals first."""
    found = user_triggers(cur, plan, allow_triggers or plan.allow_user_triggers)
    found += row_security(cur, plan) + replica_identity(cur, plan) + privileges(cur, plan)
    return sorted(found, key=lambda o: not o.refusal)


def refusal(found: list[Obstacle]) -> str | None:
    """The one line `run` refuses with, naming every refusal; None when there is none."""
    refused = [o for o in found if o.refusal]
    if not refused:
        return None
    return "refusing to start: " + "; ".join(f"{o.table}: {o.problem}" for o in refused)


def user_triggers(cur: Any, plan: Plan, accepted: bool) -> list[Obstacle]:
    """The application's triggers on the tables the migration writes: silenced during
    batches where the role may set `session_replication_role`, else refused unless accepted."""
    silenced = db.can_set_replication_role(cur)
    found = []
    for name, relation, event, written in _written_tables(cur, plan):
        cur.execute(_TRIGGERS, {"t": relation})
        for tgname, enabled, tgtype, columns in cur.fetchall():
            if tgname in TRIGGER_NAMES:
                continue  # the tool's own, which leave its batches alone
            if not tgtype & event or (columns and not set(columns) & written):
                continue  # fires on other events, or on updates of other columns only
            fires = enabled in _FIRES[silenced]
            found.append(_trigger_obstacle(name, tgname, fires, silenced, accepted))
    return found


def _written_tables(cur: Any, plan: Plan) -> list[tuple[str, str, int, set[str]]]:
    """(name, relation, the event our writes fire, the columns they set) per table we write
    that exists; an id_mappings that exists already (the application's) takes our inserts."""
    out = []
    for table in plan.tables:
        written = {UUID_COLUMN} if table.migrate else set()
        written |= {r.uuid_column for r in plan.relations_of(table.name)}
        out.append((table.name, regclass_text(*plan.where(table.name)), _UPDATE, written))
    out.append((MAPPING_TABLE, regclass_text(plan.schema, MAPPING_TABLE), _INSERT, set()))
    present = []
    for entry in out:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (entry[1],))
        if cur.fetchone()[0]:
            present.append(entry)
    return present


def _trigger_obstacle(table: str, trigger: str, fires: bool, silenced: bool, accepted: bool) -> Obstacle:
    if not fires:
        return Obstacle("user_triggers", table, f"trigger {trigger}: silenced during batches", "note")
    why = (
        "is enabled ALWAYS or REPLICA, so it fires even with session_replication_role = replica"
        if silenced
        else "would fire on every row the migration writes: this role may not set "
        "session_replication_role (a superuser, or GRANT SET ON PARAMETER, may)"
    )
    if accepted:
        return Obstacle("user_triggers", table, f"trigger {trigger} {why} (accepted)", "warning")
    return Obstacle(
        "user_triggers", table,
        f"trigger {trigger} {why}; accept it with --allow-triggers "
        "(allow_user_triggers = true in a plan file)",
    )  # fmt: skip


_ROW_SECURITY = """
SELECT c.relrowsecurity AND NOT r.rolsuper AND NOT r.rolbypassrls
       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c, pg_roles r WHERE c.oid = to_regclass(%s) AND r.rolname = current_user
"""


def row_security(cur: Any, plan: Plan) -> list[Obstacle]:
    """Tables whose row-level security applies to this role: it would hide rows from the
    migration (its sessions run with row_security = off, so they would fail instead)."""
    found = []
    for table in plan.tables:
        cur.execute(_ROW_SECURITY, (regclass_text(*plan.where(table.name)),))
        row = cur.fetchone()
        if row and row[0]:
            problem = (
                "row-level security applies to this role and would hide rows from the "
                "migration: run as the owner (without FORCE ROW LEVEL SECURITY), a role with "
                "BYPASSRLS, or a superuser"
            )
            found.append(Obstacle("row_security", table.name, problem))
    return found


_NO_REPLICA_IDENTITY = """
SELECT DISTINCT pt.pubname, c.relname
FROM (SELECT relid FROM pg_partition_tree(to_regclass(%(t)s)) UNION SELECT to_regclass(%(t)s)) tree
JOIN pg_class c ON c.oid = tree.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_publication_tables pt ON pt.schemaname = n.nspname AND pt.tablename = c.relname
JOIN pg_publication p ON p.pubname = pt.pubname
WHERE p.pubupdate AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (
      SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)))
ORDER BY 1, 2
"""


def replica_identity(cur: Any, plan: Plan) -> list[Obstacle]:
    """Tables in a publication that publishes updates, without a replica identity: every
    UPDATE of them fails, so every batch would."""
    found = []
    for table in plan.tables:
        cur.execute(_NO_REPLICA_IDENTITY, {"t": regclass_text(*plan.where(table.name))})
        for publication, relation in cur.fetchall():
            problem = (
                f"{relation} is in publication {publication}, which publishes updates, and has "
                "no replica identity, so every update of it fails: set REPLICA IDENTITY FULL "
                "(or USING INDEX), or leave it out of the publication"
            )
            found.append(Obstacle("replica_identity", table.name, problem))
    return found


def privileges(cur: Any, plan: Plan) -> list[Obstacle]:
    """What the role must be allowed: the ledger schema, id_mappings, and on each table to
    add columns and build indexes (its owner) and to read and update it."""
    found = [Obstacle("privileges", "*", p) for p in _ledger_and_mapping_privileges(cur, plan)]
    for table in plan.tables:
        name = regclass_text(*plan.where(table.name))
        cur.execute(
            "SELECT pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'SELECT, UPDATE') "
            "FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (name,),
        )
        row = cur.fetchone()
        if row and not row[0]:
            found.append(Obstacle("privileges", table.name, "this role does not own it, so it "
                                  "cannot add columns or build indexes on it"))  # fmt: skip
        elif row and not row[1]:
            found.append(Obstacle("privileges", table.name, "this role may not SELECT and UPDATE it"))
    return found


def _ledger_and_mapping_privileges(cur: Any, plan: Plan) -> list[str]:
    cur.execute(
        "SELECT CASE WHEN to_regnamespace(%s) IS NULL "
        "THEN has_database_privilege(current_database(), 'CREATE') "
        "ELSE has_schema_privilege(%s, 'USAGE, CREATE') END, "
        "CASE WHEN to_regclass(%s) IS NULL THEN has_schema_privilege(%s, 'USAGE, CREATE') "
        "ELSE has_table_privilege(%s, 'SELECT, INSERT, DELETE') END",
        (LEDGER_SCHEMA, LEDGER_SCHEMA, *[regclass_text(plan.schema, MAPPING_TABLE)], plan.schema,
         regclass_text(plan.schema, MAPPING_TABLE)),
    )  # fmt: skip
    ledger, mappings = cur.fetchone()
    problems = []
    if not ledger:
        problems.append(f"this role may not create the ledger schema {LEDGER_SCHEMA} or its tables")
    if not mappings:
        problems.append(f"this role may not create or write {plan.schema}.{MAPPING_TABLE}")
    return problems
