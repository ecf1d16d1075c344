"""The final sweep writes exactly the rows that raced with the triggers: after a whole run,
rows the application wrote with the triggers away (no UUID, a translation nulled or stale)
in a key-range table, a composite-key table and a keyless table are fixed, and every other
row keeps its version (its xmin); a clean stage is swept without waiting on a row lock."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
from psycopg2 import sql

from producer import commands, validate_command
from uuid_migrate import db
from uuid_migrate.execution import sweep
from uuid_migrate.execution.attempt import plan_of_run
from uuid_migrate.ledger import runs
from uuid_migrate.ledger.states import RunStatus
from uuid_migrate.plan import discovery
from uuid_migrate.plan.cuts import RowSet, cut_of
from uuid_migrate.plan.stages import stages
from uuid_migrate.progression import final_validation

from .helpers import rows, scalar

#: A key that needs quoting in an array literal: a quote, a backslash, a comma, braces.
ODD = 'u"odd\\,{1}'
SCHEMA = """
CREATE TABLE users (id text PRIMARY KEY);
CREATE TABLE posts (id text PRIMARY KEY, user_id text REFERENCES users);
CREATE TABLE seats (user_id text REFERENCES users, slot integer, PRIMARY KEY (user_id, slot));
CREATE TABLE audit (actor text REFERENCES users, what text NOT NULL);
INSERT INTO users SELECT 'u' || i FROM generate_series(1, 300) i;
INSERT INTO posts SELECT 'p' || i, 'u' || (1 + i % 300) FROM generate_series(1, 900) i;
INSERT INTO seats SELECT 'u' || i, s FROM generate_series(1, 300) i, generate_series(1, 2) s;
INSERT INTO audit SELECT 'u' || (1 + i % 300), 'did ' || i FROM generate_series(1, 600) i;
"""
#: Written with every trigger away (the tool's and the foreign keys'), as a race leaves them.
RACED = f"""
SET session_replication_role = replica;
INSERT INTO users VALUES ('u_late'), ($odd${ODD}$odd$);
INSERT INTO posts VALUES ('p_late', $odd${ODD}$odd$);
UPDATE posts SET user_uuid_id = NULL WHERE id = 'p450';
UPDATE posts SET user_uuid_id = gen_random_uuid() WHERE id = 'p7';
UPDATE seats SET user_uuid_id = NULL WHERE (user_id, slot) = ('u150', 2);
INSERT INTO seats VALUES ('u_late', 1);
UPDATE audit SET actor_uuid_id = gen_random_uuid() WHERE what = 'did 300';
INSERT INTO audit VALUES ('u_late', 'late');
RESET session_replication_role;
"""
#: Each table's rows by a stable name (a keyless row's ctid changes when it is written).
NAMES = {
    "users": "id",
    "posts": "id",
    "seats": "user_id || '/' || slot",
    "audit": "what",
}
TOUCHED = {
    "users": {"u_late", ODD},
    "posts": {"p_late", "p450", "p7"},
    "seats": {"u150/2", "u_late/1"},
    "audit": {"did 300", "late"},
}


def test_a_row_set_names_exactly_its_rows_by_key_composite_key_or_ctid(conn):
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute("INSERT INTO users VALUES (%s)", (ODD,))
        plan = discovery.discover(cur)
    c = sql.Identifier("c")
    for table in ("users", "seats", "audit"):  # by key, composite key (text, integer), ctid
        cut = cut_of(plan.table(table))
        query = sql.SQL("SELECT {} FROM {} AS c").format(cut.row_id(c), plan.qualified(table))
        every = sorted(r[0] for r in rows(conn, query.as_string(conn)))
        picked = {every[0], every[len(every) // 2], every[-1]} | ({ODD} if table == "users" else set())
        scoped = query + sql.SQL(" WHERE {}").format(cut.condition(c, RowSet(tuple(picked))))
        assert {r[0] for r in rows(conn, scoped.as_string(conn))} == picked, table
        assert len(picked) >= 3


def _versions(conn) -> dict[str, dict[str, str]]:
    return {t: dict(rows(conn, f"SELECT {n}, xmin::text FROM {t}")) for t, n in NAMES.items()}


def _sweep_all(settings, batch_size: int) -> dict[str, int | None]:
    """Every stage's sweep in plan order, its chunks `batch_size` rows at most."""
    conn = db.connect(settings.database_url)
    try:
        with conn.cursor() as cur:
            run_id = runs.latest_run(cur)["run_id"]
            plan = replace(plan_of_run(cur, run_id)[0], batch_size=batch_size)
        conn.commit()
        return {s.name: sweep.sweep_stage(conn, plan, s, run_id) for s in stages(plan)}
    finally:
        conn.close()


@pytest.mark.e2e
def test_the_sweep_fixes_exactly_the_rows_that_raced_and_leaves_the_rest(conn, settings):
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    assert commands.run(settings, workers=2, out=io.StringIO()).status == RunStatus.SUCCEEDED
    with conn.cursor() as cur:
        cur.execute(RACED)
    assert validate_command.validate(settings)["overallStatus"] == "failed"
    before = _versions(conn)

    written = _sweep_all(settings, batch_size=2)  # several chunks where several rows raced

    assert written == {"users": 2, "posts": 3, "seats:references": 2, "audit:references": 2}
    after = _versions(conn)
    for table, names in TOUCHED.items():
        assert set(after[table]) == set(before[table]), table  # no row came or went
        changed = {n for n in before[table] if before[table][n] != after[table][n]}
        assert changed == names, table
    assert scalar(conn, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0
    assert scalar(
        conn,
        "SELECT count(*) FROM users u JOIN id_mappings m ON m.table_name = 'users' "
        "AND m.old_id = u.id AND m.new_id = u.uuid_id WHERE u.id IN ('u_late', %s)",
        (ODD,),
    ) == 2
    for child, column, target in (
        ("posts", "user_id", "user_uuid_id"),
        ("seats", "user_id", "user_uuid_id"),
        ("audit", "actor", "actor_uuid_id"),
    ):
        assert scalar(
            conn,
            f"SELECT count(*) FROM {child} c LEFT JOIN users p ON p.id = c.{column} "
            f"WHERE c.{target} IS DISTINCT FROM p.uuid_id",
        ) == 0, child
    assert validate_command.validate(settings)["overallStatus"] == "passed"

    # Clean now: every stage is swept by its one query, without taking or waiting on a row
    # lock (the application holds every post).
    holder = db.connect(settings.database_url)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT 1 FROM posts FOR UPDATE")
        started = time.monotonic()
        again = _sweep_all(settings, batch_size=2)
        took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert set(again.values()) == {0}, again
    assert took < 3.0, took  # a wait for the held rows would take 8 lock timeouts and backoffs
    assert _versions(conn) == after


@pytest.mark.e2e
def test_the_runs_validation_sweeps_what_its_scans_find_and_passes(conn, settings):
    """Stages nothing waits for are swept by the run's validation, which sweeps any table
    its scans find rows of the sweep's in: the report is built again after, and passes."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    assert commands.run(settings, workers=2, out=io.StringIO()).status == RunStatus.SUCCEEDED
    work = db.connect(settings.database_url)
    try:
        with work.cursor() as cur:
            run_id = runs.latest_run(cur)["run_id"]
            stage_map = plan_of_run(cur, run_id)[1]
        work.commit()
        assert {s.name: sweep.swept_at_close(s, stage_map) for s in stage_map.values()} == {
            "users": True, "posts": False, "seats:references": False, "audit:references": False,
        }  # fmt: skip
        plan = plan_of_run(work.cursor(), run_id)[0]
        work.rollback()

        def owed(*failed: tuple[str, str]) -> list[str]:
            checks = [{"name": n, "table": t, "status": "failed"} for n, t in failed]
            return [s.name for s in final_validation.unswept_stages(plan, stage_map, {"checks": checks})]

        # a parent swept makes its children's translations stale: they are swept after it
        assert owed(("rows_without_uuid", "users")) == list(stage_map)
        assert owed(("references_translated", "posts.user_id")) == ["posts"]
        assert owed(("orphans_recorded", "audit.actor"), ("uuid_unique", "users")) == ["audit:references"]
        with conn.cursor() as cur:
            cur.execute(RACED)
            cur.execute("UPDATE uuid_migration.runs SET status = 'validating', finished_at = NULL")
        before = _versions(conn)

        report = final_validation.finish_validation(work, run_id)
    finally:
        work.close()

    assert report["overallStatus"] == "passed", [c for c in report["checks"] if c["status"] == "failed"]
    after = _versions(conn)
    for table, names in TOUCHED.items():
        changed = {n for n in before[table] if before[table][n] != after[table][n]}
        assert changed == names, table
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.SUCCEEDED
    assert scalar(
        conn, "SELECT report->>'overallStatus' FROM uuid_migration.reports ORDER BY id DESC LIMIT 1"
    ) == "passed"  # fmt: skip
    assert scalar(conn, "SELECT count(*) FROM posts p LEFT JOIN users u ON u.id = p.user_id "
                  "WHERE p.uuid_id IS NULL OR p.user_uuid_id IS DISTINCT FROM u.uuid_id") == 0  # fmt: skip


@pytest.mark.e2e
def test_a_row_the_application_keeps_locked_through_the_validations_sweep_is_named(conn, settings):
    """The validation's sweep gives up on a row held through all its tries: the report is
    built again without it and names it, the run ends failed, nothing raises."""
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    assert commands.run(settings, workers=2, out=io.StringIO()).status == RunStatus.SUCCEEDED
    with conn.cursor() as cur:
        cur.execute(RACED)
        cur.execute("UPDATE uuid_migration.runs SET status = 'validating', finished_at = NULL")
    holder = db.connect(settings.database_url)
    work = db.connect(settings.database_url)
    try:
        with holder.cursor() as cur:  # the application holds one raced post
            cur.execute("SELECT 1 FROM posts WHERE id = 'p_late' FOR UPDATE")
        with work.cursor() as cur:
            run_id = runs.latest_run(cur)["run_id"]
        work.commit()
        report = final_validation.finish_validation(work, run_id, 20, sleep=lambda _: None)
    finally:
        holder.rollback()
        holder.close()
        work.close()

    failed = {(c["name"], c["table"]): c for c in report["checks"] if c["status"] == "failed"}
    assert set(failed) == {
        ("rows_without_uuid", "posts"), ("id_mappings_one_per_row", "posts"),
        ("references_translated", "posts.user_id"),
    }  # fmt: skip
    assert failed[("rows_without_uuid", "posts")]["sample"] == ["p_late"]
    # the held row's chunk was left whole: its other raced posts too
    assert failed[("references_translated", "posts.user_id")]["sample"] == ["p450", "p7", "p_late"]
    assert scalar(conn, "SELECT status FROM uuid_migration.runs") == RunStatus.FAILED
    assert scalar(conn, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 0  # swept
