"""Migrating while the application writes: its rows are given their UUIDs, mappings and
translations by the tool's triggers, a batch gives way to the application's row locks, and
rollback and a later run handle the triggers.

Each test plays the application with its own connections and judges the result with its own
SQL, never with the tool's checks alone.
"""

from __future__ import annotations

import io
import random
import threading
import time
import uuid
from typing import Any

import pytest

from producer import commands, rollback_command, status_command, validate_command
from uuid_migrate import db
from uuid_migrate.ledger.states import RunStatus

from .helpers import CLINIC_TABLES, database_dump, rows, run_clinic, scalar

pytestmark = pytest.mark.e2e

#: (child, column, parent, translated column) of the clinic plan.
REFERENCES = (
    ("dashboards", "user_id", "users", "user_uuid_id"),
    ("providers", "clinic_id", "clinics", "clinic_uuid_id"),
)


def assert_in_step(conn: Any) -> None:
    """Every row has exactly one uuid_id, unique, and one mapping that agrees; every
    reference equals its parent's uuid_id (NULL only where no parent row exists)."""
    for table in CLINIC_TABLES:
        assert scalar(conn, f"SELECT count(*) FROM {table} WHERE uuid_id IS NULL") == 0, table
        assert scalar(
            conn, f"SELECT count(*) - count(DISTINCT uuid_id) FROM {table}"
        ) == 0, table
        disagree = scalar(
            conn,
            f"SELECT count(*) FROM {table} t WHERE (SELECT count(*) FROM id_mappings m "
            "WHERE m.table_name = %s AND m.old_id = t.id AND m.new_id = t.uuid_id) <> 1",
            (table,),
        )
        assert disagree == 0, table
    for child, column, parent, target in REFERENCES:
        stale = scalar(
            conn,
            f"SELECT count(*) FROM {child} c LEFT JOIN {parent} p ON p.id = c.{column} "
            f"WHERE c.{target} IS DISTINCT FROM p.uuid_id",
        )
        assert stale == 0, child


class Application:
    """Threads writing as an application does, each on its own connection: users inserted
    in every key range (md5 keys), dashboards inserted for them and moved to other users,
    providers moved between clinics, unreferenced users and some dashboards deleted, reads."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.counts = {"insert": 0, "update": 0, "delete": 0, "read": 0}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, args=(i,)) for i in range(threads)]

    def start(self) -> Application:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _count(self, kind: str) -> None:
        with self.lock:
            self.counts[kind] += 1

    def _work(self, n: int) -> None:
        rng = random.Random(n)
        try:
            conn = db.connect(self.url, autocommit=True)
        except Exception as exc:  # the test reports it
            self.errors.append(repr(exc))
            return
        users = [r[0] for r in rows(conn, "SELECT id FROM users ORDER BY id")]
        clinics = [r[0] for r in rows(conn, "SELECT id FROM clinics ORDER BY id")]
        dashboards = [r[0] for r in rows(conn, "SELECT id FROM dashboards ORDER BY id")][n::3]
        providers = [r[0] for r in rows(conn, "SELECT id FROM providers ORDER BY id")][n::3]
        lonely: list[str] = []
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    self._step(cur, rng, users, clinics, dashboards, providers, lonely)
        except Exception as exc:  # the test reports it
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def _step(self, cur: Any, rng: random.Random, users: list[str], clinics: list[str],
              dashboards: list[str], providers: list[str], lonely: list[str]) -> None:  # fmt: skip
        key = uuid.uuid4().hex
        action = rng.randrange(8)
        if action == 0:  # a user others may reference
            cur.execute("INSERT INTO users (id, email) VALUES (%s, 'app@example.com')", (f"usr_{key}",))
            users.append(f"usr_{key}")
            self._count("insert")
        elif action == 1:  # a dashboard of some user, old or new
            cur.execute(
                "INSERT INTO dashboards (id, user_id, title) VALUES (%s, %s, 'app')",
                (f"dsh_{key}", rng.choice(users)),
            )
            dashboards.append(f"dsh_{key}")
            self._count("insert")
        elif action == 2 and dashboards:  # moved to another user
            cur.execute(
                "UPDATE dashboards SET user_id = %s WHERE id = %s",
                (rng.choice(users), rng.choice(dashboards)),
            )
            self._count("update")
        elif action == 3 and providers:
            cur.execute(
                "UPDATE providers SET clinic_id = %s WHERE id = %s",
                (rng.choice(clinics), rng.choice(providers)),
            )
            self._count("update")
        elif action == 4:  # a user nobody references, deleted later
            cur.execute("INSERT INTO users (id, email) VALUES (%s, 'gone@example.com')", (f"usr_{key}",))
            lonely.append(f"usr_{key}")
            self._count("insert")
        elif action == 5 and lonely:
            cur.execute("DELETE FROM users WHERE id = %s", (lonely.pop(rng.randrange(len(lonely))),))
            self._count("delete")
        elif action == 6 and len(dashboards) > 10:
            cur.execute("DELETE FROM dashboards WHERE id = %s", (dashboards.pop(rng.randrange(len(dashboards))),))
            self._count("delete")
        else:
            cur.execute("SELECT count(*), max(title) FROM dashboards WHERE user_id IS NOT NULL")
            cur.fetchone()
            self._count("read")
        time.sleep(0.002)


def test_an_application_writing_through_a_whole_run_loses_nothing(clinic, settings):
    app = Application(settings.database_url).start()
    try:
        time.sleep(0.5)
        result = run_clinic(settings)
        during = dict(app.counts)
        report = validate_command.validate(settings)  # while it still writes
        time.sleep(1.0)
    finally:
        app.finish()

    assert app.errors == []
    assert result.status == RunStatus.SUCCEEDED, result.message
    assert report["overallStatus"] == "passed", [
        c for c in report["checks"] if c["status"] == "failed"
    ]
    assert during["insert"] > 50 and during["update"] > 20 and during["delete"] > 5, during
    assert_in_step(clinic)
    status = status_command.status(settings)
    assert sorted(status["triggers"]) == sorted(CLINIC_TABLES)  # they stay after the run
    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_a_batch_gives_way_to_an_application_holding_a_row(clinic, settings):
    """The application holds one dashboard for 4 s (lock timeout 500 ms): the batch over it
    gives way (split or tried again), and the application's other statements never wait
    behind a batch for long."""
    held = scalar(clinic, "SELECT max(id) FROM dashboards")
    others = [r[0] for r in rows(clinic, "SELECT id FROM dashboards WHERE id <> %s", (held,))]
    latencies: list[float] = []
    stop = threading.Event()
    errors: list[str] = []

    taken = threading.Event()

    def hold() -> None:
        conn = db.connect(settings.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM dashboards WHERE id = %s FOR UPDATE", (held,))
                taken.set()
                time.sleep(4.0)
            conn.commit()
        except Exception as exc:  # the test reports it
            errors.append(repr(exc))
        finally:
            conn.close()

    def measure() -> None:
        conn = db.connect(settings.database_url, autocommit=True)
        rng = random.Random(7)
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    started = time.monotonic()
                    cur.execute(
                        "UPDATE dashboards SET title = title || '' WHERE id = %s", (rng.choice(others),)
                    )
                    latencies.append(time.monotonic() - started)
        except Exception as exc:  # the test reports it
            errors.append(repr(exc))
        finally:
            conn.close()

    # Planned, its columns and triggers in place, and no worker yet: the row is held before
    # any batch can reach it; then workers resume the run.
    planned = commands.run(settings, plan_file="clinic", out=io.StringIO())
    assert planned.status == RunStatus.RUNNING
    threads = [threading.Thread(target=hold), threading.Thread(target=measure)]
    for thread in threads:
        thread.start()
    try:
        assert taken.wait(10)
        result = run_clinic(settings)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert errors == []
    assert result.status == RunStatus.SUCCEEDED, result.message
    gave_way = scalar(
        clinic,
        "SELECT count(*) FROM uuid_migration.transitions WHERE stage = 'dashboards' "
        "AND error LIKE %s",
        ("%lock timeout%",),
    )
    assert gave_way >= 1
    assert len(latencies) > 100
    assert max(latencies) < 2.0, sorted(latencies)[-5:]
    assert_in_step(clinic)


def test_rollback_after_a_run_removes_the_triggers_and_their_functions(clinic, settings):
    before = database_dump(clinic, settings.database_url)
    assert run_clinic(settings).status == RunStatus.SUCCEEDED
    assert scalar(clinic, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_uuid_migrate_%%'") == 8
    assert scalar(clinic, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'uuid_migrate_sync_%%'") == 4

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back" and outcome.report["overallStatus"] == "passed"
    assert scalar(clinic, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'zz_uuid_migrate_%%'") == 0
    assert scalar(clinic, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'uuid_migrate_sync_%%'") == 0
    assert database_dump(clinic, settings.database_url) == before
    assert status_command.status(settings)["triggers"] == []


def test_run_again_after_a_gap_without_triggers_catches_up(clinic, settings):
    first = run_clinic(settings)
    assert first.status == RunStatus.SUCCEEDED
    with clinic.cursor() as cur:  # the application writes with the triggers away
        for table in ("users", "dashboards"):
            cur.execute(f"DROP TRIGGER zz_uuid_migrate_insert ON {table}")
            cur.execute(f"DROP TRIGGER zz_uuid_migrate_update ON {table}")
        cur.execute("INSERT INTO users (id, email) SELECT 'usr_gap' || i, 'gap' FROM generate_series(1, 30) i")
        cur.execute(
            "INSERT INTO dashboards (id, user_id, title) "
            "SELECT 'dsh_gap' || i, 'usr_gap' || (1 + i % 30), 'gap' FROM generate_series(1, 60) i"
        )
        cur.execute(
            "UPDATE dashboards SET user_id = 'usr_gap1' WHERE id IN "
            "(SELECT id FROM dashboards WHERE user_id IS NOT NULL AND id NOT LIKE 'dsh_gap%' "
            "ORDER BY id LIMIT 25)"
        )
    assert scalar(clinic, "SELECT count(*) FROM users WHERE uuid_id IS NULL") == 30
    assert validate_command.validate(settings)["overallStatus"] == "failed"

    again = run_clinic(settings)

    assert again.status == RunStatus.SUCCEEDED, again.message
    assert again.run_id != first.run_id
    assert_in_step(clinic)
    assert sorted(status_command.status(settings)["triggers"]) == sorted(CLINIC_TABLES)
    assert validate_command.validate(settings)["overallStatus"] == "passed"


def test_rollback_removes_the_mappings_the_triggers_added_to_an_id_mappings_of_the_application(
    clinic, settings
):
    with clinic.cursor() as cur:
        cur.execute(
            "CREATE TABLE id_mappings (table_name text NOT NULL, old_id text NOT NULL, "
            "new_id uuid NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (table_name, old_id))"
        )
        cur.execute("INSERT INTO id_mappings (table_name, old_id, new_id) VALUES "
                    "('billing', 'inv-1', gen_random_uuid())")  # fmt: skip
    assert run_clinic(settings).status == RunStatus.SUCCEEDED
    with clinic.cursor() as cur:  # the application writes after the run, through the triggers
        cur.execute("INSERT INTO users (id, email) SELECT 'usr_late' || i, 'late' FROM generate_series(1, 20) i")
    assert scalar(clinic, "SELECT count(*) FROM id_mappings WHERE old_id LIKE 'usr_late%%'") == 20
    with clinic.cursor() as cur:  # what the database holds before the migration, but the rows
        cur.execute("CREATE TEMP TABLE late AS SELECT id, email, name, created_at FROM users "
                    "WHERE id LIKE 'usr_late%%'")  # fmt: skip

    outcome = rollback_command.rollback(settings, yes=True, out=io.StringIO())

    assert outcome.status == "rolled_back"
    assert rows(clinic, "SELECT table_name, old_id FROM id_mappings") == [("billing", "inv-1")]
    assert scalar(clinic, "SELECT count(*) FROM uuid_migration.added_mappings") == 0
